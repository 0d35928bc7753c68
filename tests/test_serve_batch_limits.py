"""The service's per-modality maximum batch (``ServeConfig.max_batch_for``, ``anybind serve --max-batch-for``) and
torch's threads per encoder call (``ServeConfig.torch_threads``, ``--torch-threads``): an encoder with its own limit
never gets more items in one batched call while the others keep ``max_batch``; the thread count holds in the worker
thread that encodes (a setting made in another thread does not reach a thread that already ran torch) and comes
back after; values no service could run with are refused in one line naming the flag and the field."""

from __future__ import annotations

import threading

import pytest
from media_helpers import ENC, served
from test_serve_batching import together

from anybind.encoders.device import cache_identity
from anybind.encoders.registry import get_encoder
from anybind.serve import ServeConfig
from anybind.serve.config import ServeConfigError
from anybind.serve.memcache import MemoryFeatureCache


def _sizes(log) -> list[int]:
    return [int(x) for x in log.read_text().split()]


def test_an_encoder_with_its_own_limit_gets_at_most_that_many_items_per_call(tmp_path, monkeypatch):
    """16 concurrent texts, max_batch 16 but 3 for this encoder: every call holds at most 3 (some share one), the
    vectors are those of encoding alone; without the limit the same load can share larger calls."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    enc = get_encoder("callable:helper_encoders:slow_text", cached=False)
    monkeypatch.setenv("ANYBIND_TEST_SLEEP", "0.05")
    texts = [f"query number {i}" for i in range(16)]
    cache = MemoryFeatureCache(None, batch_wait=0.2, max_batch=16, limits={cache_identity(enc): 3})
    assert cache.batcher.limit(cache_identity(enc)) == 3 and cache.batcher.limit("another encoder") == 16
    got, err = together(lambda t: cache.encode(enc, [t], progress=False)[0], texts)
    assert err == [None] * 16
    sizes = _sizes(log)
    assert sum(sizes) == 16 and max(sizes) <= 3 and max(sizes) > 1, sizes
    log.unlink()
    alone = MemoryFeatureCache(None).encode(enc, texts, progress=False)
    assert all((g == a).all() for g, a in zip(got, alone))
    log.unlink()
    free = MemoryFeatureCache(None, batch_wait=0.5, max_batch=16)
    together(lambda t: free.encode(enc, [t], progress=False), texts)
    assert max(_sizes(log)) > 3  # the limit, not the load, kept the calls small above


def test_a_limit_above_one_turns_batching_on_even_with_max_batch_one():
    assert MemoryFeatureCache(None, batch_wait=0.0, max_batch=1, limits={"x": 4}).batcher.limit("x") == 4
    assert MemoryFeatureCache(None, batch_wait=0.0, max_batch=1, limits={"x": 1}).batcher is None


def test_torch_threads_hold_in_the_worker_thread_that_encodes_and_come_back_after(tmp_path, monkeypatch):
    """A worker thread that already ran torch with 2 threads encodes with 1 under torch_threads=1 (setting it in
    the main thread would not reach it), and has 2 again after; without the setting it encodes with 2."""
    import torch

    log = tmp_path / "threads.log"
    monkeypatch.setenv("ANYBIND_TEST_THREAD_LOG", str(log))
    enc = get_encoder("callable:helper_encoders:threads_text", cached=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []

    def worker():
        torch.ones(64, 64) @ torch.ones(64, 64)  # this thread's torch is initialised at 2
        MemoryFeatureCache(None, batch_wait=0.0, torch_threads=1).encode(enc, ["a", "b"], progress=False)
        seen.append(torch.get_num_threads())
        MemoryFeatureCache(None, batch_wait=0.0).encode(enc, ["c"], progress=False)

    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert _sizes(log) == [1, 2] and seen == [2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_service_keys_each_modalitys_limit_by_its_encoder_and_uses_its_threads(tmp_path):
    """max_batch_for={"image": 2}: the batcher holds 2 for the image encoder's identity, max_batch for the text's;
    the service answers a search encoding with its torch_threads."""
    from anybind.serve import Service

    cfg = ServeConfig(max_batch=8, max_batch_for={"image": 2}, torch_threads=1)
    with served(tmp_path, config=cfg) as client:
        res = client.post("/search", json={"text": "stamp number 3", "k": 2})
        assert res.status_code == 200 and len(res.json()["hits"]) == 2, res.text
    svc = Service.load(tmp_path / "space", tmp_path / "index", cache=tmp_path / "cache", config=cfg)
    try:
        image, text = (cache_identity(get_encoder(ENC[m])) for m in ("image", "text"))
        assert svc.cache.batcher.limits == {image: 2} and svc.cache.batcher.limit(text) == 8
        assert svc.cache.torch_threads == 1
    finally:
        svc.close()


def test_a_modality_the_space_lacks_is_refused_when_the_service_starts(tmp_path):
    with pytest.raises(ServeConfigError) as err:
        with served(tmp_path, config=ServeConfig(max_batch_for={"imgae": 2})):
            pass
    msg = str(err.value)
    assert "--max-batch-for" in msg and "'imgae'" in msg and "image, text" in msg and "\n" not in msg


@pytest.mark.parametrize("kw", [
    {"torch_threads": 0}, {"torch_threads": 1.5}, {"torch_threads": True}, {"torch_threads": "2"},
    {"max_batch_for": {"image": 0}}, {"max_batch_for": {"image": True}}, {"max_batch_for": {"": 2}},
    {"max_batch_for": {"image": "4"}}, {"max_batch_for": [("image", 4)]},
])
def test_a_setting_no_service_could_run_with_is_refused_in_one_line(kw):
    field = next(iter(kw))
    with pytest.raises(ServeConfigError) as err:
        ServeConfig(**kw)
    msg = str(err.value)
    assert f"ServeConfig.{field}" in msg and f"--{field.replace('_', '-')}" in msg and "\n" not in msg


@pytest.mark.parametrize("args, named", [
    (["--max-batch-for", "image"], "--max-batch-for 'image': give MODALITY=N"),
    (["--max-batch-for", "image=0"], "--max-batch-for 'image=0': give MODALITY=N"),
    (["--max-batch-for", "image=x"], "--max-batch-for 'image=x': give MODALITY=N"),
    (["--max-batch-for", "image=\u00b2"], "--max-batch-for 'image=\u00b2': give MODALITY=N"),
    (["--max-batch-for", "image=2", "--max-batch-for", "image=4"], "--max-batch-for 'image' given twice"),
])
def test_the_cli_refuses_a_bad_max_batch_for_in_one_line_before_loading(tmp_path, args, named):
    from typer.testing import CliRunner

    from anybind.cli import app as cli

    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"), *args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert named in " ".join(r.output.split()), r.output


def test_two_leader_threads_whose_encoder_calls_overlap_each_get_their_own_count_back():
    """The image and the text encoder's leaders encode at once under torch_threads=1 (each thread's torch count is
    its own): A enters, B enters, A leaves, B leaves.  Before, A's exit set A to B's open count (1), so A's worker
    thread kept one thread for everything it ran after, and B's exit gave B the count read in A."""
    import torch

    from anybind.numerics import torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a():
        torch.ones(8, 8) @ torch.ones(8, 8)  # this thread's torch initialised at 2
        with torch_threads(1):
            a_in.set()
            b_in.wait(30)
            seen["a in"] = torch.get_num_threads()
        seen["a after"] = torch.get_num_threads()
        a_out.set()

    def b():
        torch.ones(8, 8) @ torch.ones(8, 8)
        a_in.wait(30)
        with torch_threads(1):
            b_in.set()
            a_out.wait(30)
            seen["b in"] = torch.get_num_threads()  # A left: B's block still runs on its count
        seen["b after"] = torch.get_num_threads()

    try:
        ts = [threading.Thread(target=f) for f in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        seen["main"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == {"a in": 1, "a after": 2, "b in": 1, "b after": 2, "main": 2}


def test_an_encoders_own_limit_also_sets_its_forward_passes_as_max_batch_would(tmp_path, monkeypatch):
    """One request of 12 texts (the batcher never splits a request): with max_batch 32, an encoder whose own limit
    is 4 runs passes as under --max-batch 4 (its batch_size, 4), not the 32-item passes max_batch 32 allows."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    monkeypatch.setenv("ANYBIND_TEST_SLEEP", "0")
    enc = get_encoder("callable:helper_encoders:slow_text", cached=False)
    texts = [f"text {i}" for i in range(12)]
    MemoryFeatureCache(None, batch_wait=0.0, max_batch=4).encode(enc, texts, progress=False)
    alone = _sizes(log)
    log.unlink()
    MemoryFeatureCache(None, batch_wait=0.0, max_batch=32, limits={cache_identity(enc): 4}).encode(
        enc, texts, progress=False)
    assert _sizes(log) == alone == [4, 4, 4]
    log.unlink()
    MemoryFeatureCache(None, batch_wait=0.0, max_batch=32, limits={"another encoder": 4}).encode(
        enc, texts, progress=False)
    assert _sizes(log) == [12]  # the others keep max_batch's passes

"""Dynamic batching of the service's encoder calls (anybind.serve.batching): concurrent requests for one
encoder share one call, get the same vectors as alone, and keep their errors to themselves."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from anybind.encoders.registry import get_encoder
from anybind.errors import DataError
from anybind.serve.batching import Batcher
from anybind.serve.memcache import MemoryFeatureCache


def together(fn, args):
    """fn(arg) in one thread per arg, started at once; (results, errors) in arg order."""
    gate = threading.Barrier(len(args))
    out: list = [None] * len(args)
    err: list = [None] * len(args)

    def one(i):
        gate.wait()
        try:
            out[i] = fn(args[i])
        except Exception as e:  # noqa: BLE001 - compared below
            err[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, err


def test_concurrent_texts_are_encoded_in_shared_calls(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    enc = get_encoder("callable:helper_encoders:hashed_text")
    texts = [f"query number {i}" for i in range(8)]
    cache = MemoryFeatureCache(None, batch_wait=0.5, max_batch=8)
    got, err = together(lambda t: cache.encode(enc, [t], progress=False)[0], texts)
    assert err == [None] * 8
    sizes = [int(x) for x in log.read_text().split()]
    assert sum(sizes) == 8 and max(sizes) > 1 and cache.batcher.calls < 8 and cache.batcher.asks == 8
    alone = MemoryFeatureCache(None).encode(enc, texts, progress=False)
    np.testing.assert_allclose(np.stack(got), alone, rtol=1e-6)


def test_a_corrupt_upload_fails_alone_in_its_batch(tmp_path):
    enc = get_encoder("callable:helper_encoders:image_stats")
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (9 + i, 10, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    paths.insert(2, bad)
    cache = MemoryFeatureCache(None, batch_wait=0.5, max_batch=6)
    got, err = together(lambda p: cache.encode(enc, [str(p)], progress=False)[0], paths)
    assert isinstance(err[2], DataError) and "bad.png" in str(err[2]) and got[2] is None
    assert [e for i, e in enumerate(err) if i != 2] == [None] * 5
    assert cache.batcher.calls < 6
    alone = MemoryFeatureCache(None).encode(enc, [str(p) for i, p in enumerate(paths) if i != 2], progress=False)
    np.testing.assert_allclose(np.stack([g for i, g in enumerate(got) if i != 2]), alone, rtol=1e-6)


def test_a_failing_combined_call_is_retried_per_request():
    calls = []

    def encode(keys, first):
        calls.append(sorted(keys))
        if "boom" in keys:
            raise RuntimeError("the encoder crashed on boom")
        return {k: "undecodable" for k in keys if k.startswith("bad")}

    b = Batcher(0.5, max_batch=4)
    got, err = together(lambda k: b.run("enc", [k], {k: k}, encode), ["a", "boom", "bad1", "c"])
    assert got[0] == {} and got[3] == {} and got[2] == {"bad1": "undecodable"}
    assert isinstance(err[1], RuntimeError) and err[0] is None and err[2] is None
    assert calls[0] == ["a", "bad1", "boom", "c"] and sorted(calls[1:]) == [["a"], ["bad1"], ["boom"], ["c"]]


def test_batching_is_off_by_default_and_a_lone_error_reaches_its_request():
    assert MemoryFeatureCache(None).batcher is None
    with pytest.raises(RuntimeError, match="alone"):
        Batcher(0.0).run("e", ["x"], {"x": 1}, lambda k, f: (_ for _ in ()).throw(RuntimeError("alone")))


def _blocked_first_call(b: Batcher, keys: list[str], fail: set[str] = frozenset()):
    """Run one ask per key through ``b``: the first call blocks until every other ask is queued, so the
    rest arrive while the encoder is busy.  Returns (the calls' key lists, results, errors) in key order."""
    calls: list[list[str]] = []
    entered, release = threading.Event(), threading.Event()

    def encode(ks, first):
        calls.append(list(ks))
        if len(calls) == 1:
            entered.set()
            release.wait()
        if fail & set(ks):
            raise RuntimeError(f"the encoder crashed on {sorted(fail & set(ks))}")
        return {}

    out: dict[str, object] = {}
    err: dict[str, BaseException] = {}

    def one(k):
        try:
            out[k] = b.run("enc", [k], {k: k}, encode)
        except Exception as e:  # noqa: BLE001 - compared by the caller
            err[k] = e

    first = threading.Thread(target=one, args=(keys[0],))
    first.start()
    entered.wait()
    rest = []
    for k in keys[1:]:  # started one by one: each is queued before the next starts (FIFO order is known)
        t = threading.Thread(target=one, args=(k,))
        t.start()
        rest.append(t)
        while b.queued("enc") < len(rest):
            threading.Event().wait(0.001)
    release.set()
    for t in [first, *rest]:
        t.join()
    return calls, out, err


def test_requests_queued_while_the_encoder_is_busy_share_its_next_call_without_any_wait():
    b = Batcher(0.0, max_batch=64)
    keys = [f"q{i}" for i in range(7)]
    calls, out, err = _blocked_first_call(b, keys)
    assert calls == [["q0"], keys[1:]]  # the lone first request did not wait; the 6 queued went together
    assert err == {} and out == {k: {} for k in keys}
    assert (b.calls, b.asks, b.largest) == (2, 7, 6) and b.queued("enc") == 0


def test_the_queue_is_taken_oldest_first_in_calls_of_at_most_max_batch_items():
    b = Batcher(0.0, max_batch=2)
    keys = [f"q{i}" for i in range(6)]
    calls, out, err = _blocked_first_call(b, keys)
    assert calls == [["q0"], ["q1", "q2"], ["q3", "q4"], ["q5"]]
    assert err == {} and sorted(out) == keys


def test_an_error_in_a_queued_batch_stays_with_its_request_and_the_next_batch_still_runs():
    b = Batcher(0.0, max_batch=3)
    keys = ["q0", "q1", "boom", "q3", "q4", "q5"]
    calls, out, err = _blocked_first_call(b, keys, fail={"boom"})
    assert list(err) == ["boom"] and "boom" in str(err["boom"])
    assert sorted(out) == sorted(set(keys) - {"boom"})
    # the batch holding boom failed whole, was retried request by request, then the last batch ran
    assert calls == [["q0"], ["q1", "boom", "q3"], ["q1"], ["boom"], ["q3"], ["q4", "q5"]]
    assert b.queued("enc") == 0


def test_a_lone_request_is_encoded_at_once_and_the_encoder_is_free_again():
    seen = []
    b = Batcher(0.0)
    for k in ("a", "b"):
        assert b.run("enc", [k], {k: 1}, lambda ks, f: seen.append(ks) or {}) == {}
    assert seen == [["a"], ["b"]] and (b.calls, b.largest) == (2, 1) and b.queued("enc") == 0


def test_max_batch_one_turns_batching_off():
    assert MemoryFeatureCache(None, batch_wait=0.0, max_batch=1).batcher is None
    assert MemoryFeatureCache(None, batch_wait=0.0, max_batch=2).batcher is not None


def test_a_batched_call_gives_the_encoder_larger_forward_passes_than_its_batch_size(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    enc = get_encoder("callable:helper_encoders:hashed_text", cached=False)  # its own: batch_size changed
    enc.batch_size = 4
    texts = [f"text {i}" for i in range(40)]
    got = MemoryFeatureCache(None, batch_wait=0.0, max_batch=64).encode(enc, texts, progress=False)
    assert [int(x) for x in log.read_text().split()] == [32, 8]  # min(32, max_batch) per pass, not 4
    log.unlink()
    alone = MemoryFeatureCache(None).encode(enc, texts, progress=False)
    assert [int(x) for x in log.read_text().split()] == [4] * 10  # batching off: the encoder's batch_size
    np.testing.assert_allclose(got, alone, rtol=1e-6)


def test_the_batching_defaults_are_the_service_defaults():
    """A MemoryFeatureCache or Batcher made without max_batch batches as ServeConfig's default does (both
    still said 64 after the service's default became 8), and so forwards at most that many items at a time."""
    from anybind.serve import ServeConfig

    cache = MemoryFeatureCache(None, batch_wait=0.0)
    assert cache.batcher.max_batch == Batcher().max_batch == ServeConfig().max_batch
    assert cache.min_forward_batch == min(32, ServeConfig().max_batch)

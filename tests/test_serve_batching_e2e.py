"""Dynamic batching in the running service (real encoders, real HTTP): concurrent text queries and uploads,
one of them corrupt, answered as a service without batching answers them; and the bench's load client."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anybind.bench import loadclient
from anybind.index import Index
from anybind.serve import ServeConfig, Service, create_app, serve_in_thread

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older starlette/httpx
    import httpx


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


def _jpeg(path: str, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _requests(data):
    """Uncached queries: reworded texts and JPEG re-encodings of stamps, and one corrupt JPEG."""
    recs = data["records"]
    texts = [f"{r.values['text']} (query {i})" for i, r in enumerate(recs[:10])]
    uploads = [(f"u{i}.jpg", _jpeg(r.values["image"], 70 + i)) for i, r in enumerate(recs[10:14])]
    uploads.insert(2, ("bad.jpg", b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x00" * 64 + b"broken"))
    return texts, uploads


def _answers(svc: Service, texts, uploads):
    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            jobs = [c.post("/search", json={"text": t, "k": 5}) for t in texts]
            jobs += [c.post("/search/upload", files={"files": (name, b)}, data={"k": "5"}) for name, b in uploads]
            return await asyncio.gather(*jobs)

    with serve_in_thread(create_app(service=svc)) as url:
        res = asyncio.run(run(url))
    return [(r.status_code, r.json()) for r in res]


def test_concurrent_requests_batched_answer_as_unbatched_and_a_corrupt_upload_fails_alone(data, shared_cache):
    texts, uploads = _requests(data)
    got = {}
    for mode, cfg in {"on": ServeConfig(concurrency=16, max_batch=64, batch_wait_ms=200),
                      "off": ServeConfig(concurrency=16, max_batch=1)}.items():
        svc = Service.load(data["space"], data["index"], cache=shared_cache, config=cfg)
        try:
            asks = svc.cache.batcher.asks if mode == "on" else 0  # the warm-up's
            got[mode] = _answers(svc, texts, uploads)
            if mode == "on":
                assert svc.cache.batcher.largest > 1 and svc.cache.batcher.asks - asks == len(texts) + len(uploads)
            else:
                assert svc.cache.batcher is None
        finally:
            svc.close()
    bad = len(texts) + 2
    for mode in ("on", "off"):
        status = [s for s, _ in got[mode]]
        assert status[bad] == 400 and "bad.jpg" in got[mode][bad][1]["detail"]
        assert status[:bad] + status[bad + 1:] == [200] * (len(status) - 1)
    for (s_on, on), (_, off) in zip(got["on"], got["off"]):
        if s_on == 200:
            assert [(h["id"], h["modality"]) for h in on["hits"]] == [(h["id"], h["modality"]) for h in off["hits"]]
            assert [h["score"] for h in on["hits"]] == pytest.approx([h["score"] for h in off["hits"]], abs=1e-4)


def _calls(svc: Service) -> tuple[int, int]:
    """Encoder calls made and items encoded so far (every encoder of ``svc``)."""
    st = list(svc.cache.encoder_stats.values())
    return sum(int(s["calls"]) for s in st), sum(int(s["items"]) for s in st)


@pytest.mark.parametrize("max_batch", [8, 1])
def test_a_request_of_several_images_is_one_encoder_call_and_answers_as_each_image_alone(data, shared_cache,
                                                                                         max_batch):
    """/embed/upload and /search/upload with four new images: one encoder call of four items per request (each
    image was its own call, one after another), batching on or off; the vectors are each image's alone, and the
    fused search ranks as the normalised mean of them (a raw-vector search)."""
    from fastapi.testclient import TestClient

    recs = data["records"][20:24]
    svc = Service.load(data["space"], data["index"], cache=shared_cache,
                       config=ServeConfig(concurrency=4, max_batch=max_batch))
    try:
        with TestClient(create_app(service=svc)) as c:
            def files(quality):
                return [("files", (f"m{i}.jpg", _jpeg(r.values["image"], quality + i))) for i, r in enumerate(recs)]

            c0 = _calls(svc)
            together = c.post("/embed/upload", files=files(61))
            c1 = _calls(svc)
            fused = c.post("/search/upload", files=files(71), data={"k": "5"})
            c2 = _calls(svc)
            assert together.status_code == fused.status_code == 200
            assert (c1[0] - c0[0], c1[1] - c0[1]) == (1, 4) and (c2[0] - c1[0], c2[1] - c1[1]) == (1, 4)
            alone = [c.post("/embed/upload", files=[f]).json()["items"][0] for f in files(61)]
            assert [i["name"] for i in together.json()["items"]] == [f"m{i}.jpg" for i in range(4)]
            for got, want in zip(together.json()["items"], alone):
                assert np.allclose(got["vector"], want["vector"], atol=1e-5)
            each = np.array([c.post("/embed/upload", files=[f]).json()["items"][0]["vector"] for f in files(71)])
            mean = each.mean(axis=0)
            by_vector = c.post("/search", json={"vector": (mean / np.linalg.norm(mean)).tolist(), "k": 5}).json()
            assert [h["id"] for h in fused.json()["hits"]] == [h["id"] for h in by_vector["hits"]]
            assert [h["score"] for h in fused.json()["hits"]] == pytest.approx(
                [h["score"] for h in by_vector["hits"]], abs=1e-4)
    finally:
        svc.close()


def test_the_load_client_in_its_own_process_counts_answers_and_errors(data, shared_cache, tmp_path):
    texts, uploads = _requests(data)
    rows = len(Index.open(data["index"]))
    svc = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig(concurrency=4))
    kinds = ["text"] * 3 + ["upload"] * 2
    blobs = [uploads[0][1], [uploads[1][1], uploads[3][1]]]  # one image (u0); an upload carrying two (u1, u3)
    try:
        with serve_in_thread(create_app(service=svc)) as url:
            for k, n_err in ((5, 0), (rows + 1, 6)):  # k over the rows: every answer is short, so all count
                job, out = tmp_path / "job.json", tmp_path / "out.json"
                job.write_text(loadclient.job_json(url, kinds, texts[:3], blobs, k, singles=["a frog, once"]))
                script = Path(loadclient.__file__)
                items = _calls(svc)[1]
                subprocess.run([sys.executable, str(script), str(job), str(out)], check=True, timeout=300)
                res = json.loads(out.read_text())
                assert _calls(svc)[1] - items == (3 + 3 + 1 if n_err == 0 else 0)  # texts, images, the single
                assert len(res["errors"]) == n_err and res["wall_s"] > 0
                assert (len(res["lat"]["text"]), len(res["lat"]["upload"])) == ((3, 2) if n_err == 0 else (0, 0))
                assert len(res["work_ms"]) == (5 if n_err == 0 else 0)  # the load's; the single query's apart
                assert len(res["single_ms"]) == (1 if n_err == 0 else 0)
    finally:
        svc.close()


def test_the_serve_load_baseline_runs_uploads_and_texts_in_process(data, shared_cache):
    """The bench's sequential baseline on a real service: text queries and image uploads, each answered once,
    the staged uploads removed (it unpacked Service.stage's four values as three, so every serve-load run with
    uploads died in its first baseline)."""
    from anybind.bench.tasks_serve import _sequential

    texts, uploads = _requests(data)
    svc = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig(concurrency=4))
    try:
        blobs = [[uploads[0][1], uploads[1][1]], [uploads[3][1]]]  # an upload of two images, one of one
        raw = _sequential(svc, ["text", "upload", "text", "upload"], texts[:2], blobs, 5)
        assert (len(raw["lat"]["text"]), len(raw["lat"]["upload"])) == (2, 2) and raw["errors"] == []
        assert (raw["calls"], raw["items"]) == (4, 5) and list(svc.tmp.iterdir()) == []
        assert raw["cpu_s"] > 0 and raw["client_cpu_s"] == 0  # it encoded five items, in this process
    finally:
        svc.close()


@pytest.mark.parametrize("opts, named", [
    ({"concurrency": "32,0"}, "concurrency='32,0'"),
    ({"max_batch": "8,0"}, "max_batch='8,0'"),
    ({"batch_wait_ms": "0,-2"}, "batch_wait_ms='0,-2'"),
    ({"max_batch": ","}, "max_batch=','"),
    ({"max_batch": "8,x"}, "max_batch='8,x'"),
    ({"concurrency": "1.5"}, "concurrency='1.5'"),
    ({"batch_wait_ms": "2ms"}, "batch_wait_ms='2ms'"),
    ({"batch_wait_ms": "0,nan"}, "batch_wait_ms='0,nan'"),
    ({"batch_wait_ms": "inf"}, "batch_wait_ms='inf'"),
    ({"images_per_request": "0"}, "images_per_request='0'"),
    ({"images_per_request": "-3"}, "images_per_request='-3'"),
    ({"images_per_request": "1.5"}, "images_per_request='1.5'"),
    ({"images_per_request": "x"}, "images_per_request='x'"),
    ({"images_per_request": ""}, "images_per_request=''"),
    ({"images_per_request": True}, "images_per_request=True"),
    ({"torch_threads": "0"}, "torch_threads='0'"),
    ({"torch_threads": "1.5"}, "torch_threads='1.5'"),
    ({"torch_threads": "x"}, "torch_threads='x'"),
    ({"service_threads": "-,0"}, "service_threads='-,0'"),
    ({"service_threads": "one"}, "service_threads='one'"),
    ({"service_threads": ","}, "service_threads=','"),
    ({"max_batch_for": "image"}, "max_batch_for='image'"),
    ({"max_batch_for": "-,image=0"}, "max_batch_for='-,image=0'"),
    ({"max_batch_for": "image=4/=2"}, "max_batch_for='image=4/=2'"),
    ({"max_batch_for": "image=4;text=2"}, "max_batch_for='image=4;text=2'"),
    ({"max_batch_for": "imgae=4"}, "max_batch_for='imgae=4' names 'imgae'"),
    ({"service_threads": "+-1"}, "service_threads='+-1'"),
    ({"max_batch_for": "image=\u00b2"}, "max_batch_for='image=\u00b2'"),
    ({"images_per_request": "--2"}, "images_per_request='--2'"),
    ({"max_batch_for": "image=4/image=8"}, "max_batch_for='image=4/image=8'"),
])
def test_the_serve_load_grid_refuses_a_bad_setting_before_building_anything(opts, named, tmp_path):
    """The bench's tuning grid (comma-separated values per knob): a value no service could run with (out of range,
    not a number, not finite) is refused in one line naming the option, before the corpus, space or index is built
    (a value int()/float() could not read came out as a ValueError traceback from `anybind bench`)."""
    from anybind.bench.tasks_serve import serve_load
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match="serve-load: ") as err:
        serve_load(tmp_path / "work", **opts)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "work").exists()


def _fake_serve_load(monkeypatch, walls, image=None, seen=None, cpus=None):
    """serve_load with its corpus, space, index, service and load replaced: each run's wall time is
    ``walls(mode, round)`` (mode: a ServeConfig's (batch_wait_ms, max_batch, concurrency), or 'sequential'); returns
    the runs made, in order, as (round, mode).  ``image``: the corpus' one image; ``seen``: a list each run's
    (service config or None, upload blobs) is appended to; ``cpus(mode, round)``: each run's CPU seconds (the
    server's; the client's is a tenth of it), and the torch threads in force are kept in the runs as a third item."""
    import types

    import anybind.bench.tasks_serve as ts
    import anybind.bench.tuxpaint as tux
    import anybind.serve as serve
    from anybind.index import Index
    from anybind.space import Space

    rec = types.SimpleNamespace(values={"text": "a cat.", "image": image}, has=lambda m: True)
    monkeypatch.setattr(tux, "load_tux", lambda work, mods, console: types.SimpleNamespace(split=lambda s: [rec]))
    monkeypatch.setattr(Space, "fit", classmethod(lambda cls, *a, **kw: object()))

    class FakeIndex(list):
        def counts(self):
            return {"text": 1}

    monkeypatch.setattr(Index, "build", classmethod(lambda cls, *a, **kw: FakeIndex([rec])))
    runs: list[tuple[int, object]] = []

    class FakeService:
        def __init__(self, space, index, cache=None, config=None):
            self.config = config

        def close(self):
            pass

    def raw(mode):
        import torch

        rnd = sum(1 for r in runs if r[1] == "sequential")
        runs.append((rnd, mode) if cpus is None else (rnd, mode, torch.get_num_threads()))
        cpu = {} if cpus is None else {"cpu_s": cpus(mode, rnd), "client_cpu_s": cpus(mode, rnd) / 10}
        return {"wall_s": walls(mode, rnd), "lat": {"text": [1.0], "upload": []}, "errors": [], "work_ms": [],
                "calls": 1, "items": 1, "enc_s": 0.0, **cpu}

    monkeypatch.setattr(serve, "Service", FakeService)
    def look(config, blobs):
        if seen is not None:
            seen.append((config, blobs))

    monkeypatch.setattr(ts, "_load_run", lambda svc, kinds, texts, blobs, *a, **kw: look(svc.config, blobs) or raw(
        (svc.config.batch_wait_ms, svc.config.max_batch, svc.config.concurrency)))
    monkeypatch.setattr(ts, "_sequential", lambda svc, kinds, texts, blobs, *a, **kw: look(None, blobs) or raw(
        "sequential"))
    return runs


def test_the_serve_load_grid_labels_each_cell_and_compares_it_with_its_own_rounds_baseline(monkeypatch, tmp_path):
    """Two rounds of a 2 x 2 grid beside batching off: each row is named after the settings its service ran with,
    its x_sequential/min and /max are its per-round ratios over that round's sequential baseline, the order
    rotates by round, and the notes say so (they said 'on, then off' whatever the order)."""
    from anybind.bench.tasks_serve import serve_load

    seq = {0: 10.0, 1: 40.0}  # the baseline's wall time per round: round 1 four times slower
    speed = {(0.0, 8, 32): (2.0, 1.0), (2.0, 8, 32): (1.5, 3.0), (0.0, 16, 32): (0.5, 0.8),
             (2.0, 16, 32): (1.0, 1.25), (0.0, 1, 32): (1.1, 0.9)}  # per cell: x over the baseline in rounds 0, 1
    runs = _fake_serve_load(monkeypatch, lambda m, r: seq[r] if m == "sequential" else seq[r] / speed[m][r])
    res = serve_load(tmp_path, requests=4, uploads=0, concurrency=32, batch_wait_ms="0,2", max_batch="8,16",
                     rounds=2)
    rows = {row["name"]: row for row in res.table}
    for (w, b, c), (x0, x1) in speed.items():
        name = "service, batching off" if b == 1 else f"service, batching on (max_batch {b}, wait {w:g} ms)"
        assert rows[name]["x_sequential/min"] == pytest.approx(min(x0, x1))
        assert rows[name]["x_sequential/max"] == pytest.approx(max(x0, x1))
        assert rows[name]["x_sequential"] == pytest.approx(sum(seq.values()) / (seq[0] / x0 + seq[1] / x1))
    order = [[m for r, m in runs if r == rnd] for rnd in (0, 1)]
    assert order[0][-1] == order[1][-1] == "sequential" and order[1][:-1] == order[0][1:-1] + order[0][:1]
    assert "batching on (4 settings) and batching off, in an order rotating by round, then" in res.notes[0]


def test_the_serve_load_grid_over_pools_names_the_pool_batching_off_ran_with(monkeypatch, tmp_path):
    """With several pools (concurrency=16,32) every row says its pool: batching off runs at the first one."""
    from anybind.bench.tasks_serve import serve_load

    runs = _fake_serve_load(monkeypatch, lambda m, r: 1.0)
    res = serve_load(tmp_path, requests=4, uploads=0, concurrency="16,32", max_batch=8)
    assert (0.0, 1, 16) in [m for _, m in runs] and (0.0, 1, 32) not in [m for _, m in runs]
    assert [row["name"] for row in res.table] == [
        "service, batching on (max_batch 8, wait 0 ms, 16 slots)", "service, batching on (max_batch 8, wait 0 ms, "
        "32 slots)", "service, batching off (16 slots)", "in-process sequential"]


def test_serve_load_images_per_request_sends_that_many_new_images_in_each_upload(monkeypatch, tmp_path):
    """images_per_request=3: every upload, to the service and to the baseline alike, carries three images whose
    bytes no other image has (so none is cached), and the service takes that many files in a request; 1 (the
    default) sends one image per upload."""
    from anybind.bench.tasks_serve import serve_load

    png = tmp_path / "stamp.png"
    Image.new("RGB", (40, 30), (200, 30, 90)).save(png)
    for per in (3, 1):
        seen: list = []
        _fake_serve_load(monkeypatch, lambda m, r: 1.0, image=str(png), seen=seen)
        res = serve_load(tmp_path / f"w{per}", requests=6, uploads=0.5, max_batch="8,64", images_per_request=per)
        assert len(seen) == 4 and {id(b) for _, b in seen} == {id(seen[0][1])}  # one load, every system
        blobs = seen[0][1]
        assert len(blobs) == 3 and all(len(b) == per for b in blobs)
        assert len({x for b in blobs for x in b}) == 3 * per
        assert all(Image.open(io.BytesIO(x)).size == (40, 30) for b in blobs for x in b)
        assert [c.max_files >= per for c, _ in seen if c is not None] == [True] * 3
        assert res.config["images_per_request"] == per and f"of {per} image(s) each" in res.notes[1]


def test_serve_load_torch_threads_hold_for_every_run_and_the_cpu_ratio_is_the_baselines_over_the_services(
        monkeypatch, tmp_path):
    """torch_threads=1: the service and the baseline both run with one torch thread, the process's setting comes
    back after; cpu_ms_per_request is each side's CPU over its requests (two rounds pooled), x_sequential_cpu the
    baseline's over the service's, whatever the wall times say."""
    import torch

    from anybind.bench.tasks_serve import serve_load

    before = torch.get_num_threads()
    cpu = {"sequential": (4.0, 8.0), (0.0, 8, 128): (1.0, 3.0), (0.0, 1, 128): (2.0, 2.0)}  # seconds, per round
    runs = _fake_serve_load(monkeypatch, lambda m, r: 1.0, cpus=lambda m, r: cpu[m][r])
    res = serve_load(tmp_path, requests=4, uploads=0, torch_threads="1", rounds=2)
    assert [t for _, _, t in runs] == [1] * 6 and torch.get_num_threads() == before
    rows = {row["name"]: row for row in res.table}
    on, off = rows["service, batching on (max_batch 8, wait 0 ms)"], rows["service, batching off"]
    seq = rows["in-process sequential"]
    assert seq["cpu_ms_per_request"] == pytest.approx(1000 * 12 / 8)
    assert on["cpu_ms_per_request"] == pytest.approx(1000 * 4 / 8) and on["x_sequential_cpu"] == pytest.approx(3.0)
    assert off["x_sequential_cpu"] == pytest.approx(3.0) and off["client/cpu_ms_per_request"] == pytest.approx(50)
    assert on["x_sequential"] == pytest.approx(1.0) and res.config["torch_threads"] == 1


def test_serve_load_grids_the_services_torch_threads_and_per_modality_batches_beside_mains_batching(
        monkeypatch, tmp_path):
    """service_threads=-,1 x max_batch_for=-,image=4/text=32: four batching-on cells, each service made with its
    own torch_threads and max_batch_for (main's batching is the '-' x '-' cell), batching off and the baseline
    without them; each row names its levers."""
    from anybind.bench.tasks_serve import serve_load

    seen: list = []
    _fake_serve_load(monkeypatch, lambda m, r: 1.0, seen=seen)
    res = serve_load(tmp_path, requests=4, uploads=0, service_threads="-,1", max_batch_for="-,image=4/text=32")
    made = [(c.torch_threads, c.max_batch_for, c.max_batch) for c, _ in seen if c is not None]
    per = {"image": 4, "text": 32}
    assert sorted(made, key=repr) == sorted([(None, {}, 8), (None, per, 8), (1, {}, 8), (1, per, 8), (None, {}, 1)],
                                            key=repr)
    assert [row["name"] for row in res.table] == [
        "service, batching on (max_batch 8, wait 0 ms)", "service, batching on (max_batch 8, wait 0 ms, image 4, "
        "text 32)", "service, batching on (max_batch 8, wait 0 ms, torch threads 1)", "service, batching on "
        "(max_batch 8, wait 0 ms, torch threads 1, image 4, text 32)", "service, batching off", "in-process sequential"]
    assert res.config["service_threads"] == [None, 1] and res.config["max_batch_for"] == [{}, per]

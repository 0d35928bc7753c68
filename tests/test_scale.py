"""Scale-out (anybind.scale): streaming training shards, Ray encoding / indexing / training.

The Ray tests share one local Ray (2 CPUs, no dashboard) started by a module fixture
and shut down after the module; they are few and small because a Ray Data execution
costs seconds of actor start-up on a 2-core machine (one actor where two add nothing
to what is checked).

Equivalence tolerance (documented in anybind.scale.train): on the synthetic corpus below
(600 records, noisy linear views of an 8-d latent), test R@1 of the in-memory trainer
varies by ~0.09 across seeds (0.28-0.37) and the streaming / Ray trainers land within
~0.03 of it for the same seed; the tests allow 0.10 on every recall.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder
from anybind.errors import DataError, EncoderError
from anybind.evaluate import evaluate
from anybind.scale.pairstream import PairStream
from anybind.scale.shard_write import write_synthetic_shards
from anybind.scale.stream import TrainingShards
from anybind.space import Space

STAMPS = Path("/usr/share/tuxpaint/stamps")
TOL = 0.10
FIT = dict(epochs=30, batch_size=64, dim=32, hidden=64, patience=100, seed=0)


# ----------------------------------------------------------------------------- data
def _synthetic_corpus(d: Path, n: int = 600, noise: float = 2.5, seed: int = 0):
    """Two 'sensors' seeing the same latent through different noisy linear maps (vectors: encoders)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    ids = [f"r{i:04d}" for i in range(n)]
    for name, dim in (("a", 24), ("b", 20)):
        X = z @ rng.normal(size=(8, dim)) + noise * rng.normal(size=(n, dim))
        np.savez(d / f"{name}.npz", ids=np.array(ids), vectors=X.astype(np.float32))
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    with open(d / "manifest.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": rid, "split": splits[i % 10], "a": True, "b": True, "labels": {"k": i % 3}}) + "\n")
    return d / "manifest.jsonl", {"a": f"vectors:{d}/a.npz", "b": f"vectors:{d}/b.npz"}


def _recalls(space, manifest, cache):
    r = evaluate(space, manifest, split="test", cache=cache)
    return {k: v for k, v in r.items() if k.endswith(("/R@1", "/R@10"))}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    manifest, encoders = _synthetic_corpus(d)
    cache = d / "cache"
    single = Space.fit(manifest, encoders=encoders, cache=cache, progress=False, **FIT)
    return {"dir": d, "manifest": manifest, "encoders": encoders, "cache": cache, "single": single,
            "recalls": _recalls(single, manifest, cache)}


@pytest.fixture(scope="module")
def tux_mini(tmp_path_factory):
    """60 real Tux Paint stamps: English caption + PNG (read straight from the Debian package)."""
    if not STAMPS.is_dir():
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    d = tmp_path_factory.mktemp("tuxmini")
    rows = []
    for txt in sorted(STAMPS.rglob("*.txt")):
        png = txt.with_suffix(".png")
        cap = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip() if txt.stat().st_size else ""
        if png.is_file() and cap:
            rows.append({"id": f"{txt.parent.name}/{txt.stem}", "text": cap, "image": str(png)})
        if len(rows) == 60:
            break
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "manifest.jsonl", rows


def _cache_contents(root: Path, spec: str) -> dict[str, np.ndarray]:
    fc = FeatureCache(root)
    enc = get_encoder(spec)
    idx = fc._load_index(enc.identity)
    return {k: fc._vector(p, r) for k, (p, r) in idx.items()}


# ----------------------------------------------------------------------------- streaming (no Ray)
def _row_ids(x: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in x]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bs=st.integers(1, 40), buffer=st.integers(1, 400), per_shard=st.integers(7, 150), world=st.integers(1, 3))
def test_pair_stream_passes_are_shuffled_partitions(tmp_path_factory, bs, buffer, per_shard, world):
    rows = 300
    shards = write_synthetic_shards(tmp_path_factory.mktemp("s"), rows, dims={"a": 4, "b": 3}, val_rows=20,
                                    rows_per_shard=per_shard, dtype="float32")
    assert shards.count("train", ("a", "b")) == 280 and shards.count("val", "rows") == 20
    seen_all: set[bytes] = set()
    for rank in range(world):
        s = PairStream(shards, "a", "b", batch_size=bs, shuffle_buffer=buffer, seed=3, rank=rank, world=world)
        assert s.buffer <= max(bs, buffer)  # bounded memory: buffer + one shard
        first_pass: list[bytes] = []
        while s.passes == 0:
            xa, xb = next(s)
            assert xa.shape == (bs, 4) and xb.shape == (bs, 3) and xa.dtype == np.float32
            if s.passes == 0:
                first_pass += _row_ids(xa)
        # one pass: every row of this worker at most once, all but a partial batch of them
        assert len(first_pass) == len(set(first_pass))
        assert s.rows - bs < len(first_pass) <= s.rows
        assert not (seen_all & set(first_pass))  # workers read disjoint rows
        seen_all |= set(first_pass)


def test_pair_stream_is_seeded_and_refuses_what_it_cannot_serve(tmp_path):
    shards = write_synthetic_shards(tmp_path / "s", 200, dims={"a": 4, "b": 4}, val_rows=0, rows_per_shard=50)
    a = [next(PairStream(shards, "a", "b", batch_size=16, seed=1))[0] for _ in range(1)]
    b = [next(PairStream(shards, "a", "b", batch_size=16, seed=1))[0] for _ in range(1)]
    c = [next(PairStream(shards, "a", "b", batch_size=16, seed=2))[0] for _ in range(1)]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert shards.meta["dtype"] == "float16" and a[0].dtype == np.float32
    with pytest.raises(DataError, match="fewer than its batch"):
        PairStream(shards, "a", "b", batch_size=500)
    with pytest.raises(DataError, match="no val record"):
        PairStream(shards, "a", "b", batch_size=4, split="val")
    with pytest.raises(DataError, match="not in the training shards"):
        PairStream(shards, "a", "c", batch_size=4)
    (tmp_path / "s" / "000001.safetensors").unlink()
    with pytest.raises(DataError, match="000001.safetensors is missing"):
        TrainingShards.open(tmp_path / "s")


def test_streaming_fit_matches_in_memory_fit(syn):
    from anybind.scale.sharded import fit_sharded

    space = fit_sharded(syn["manifest"], encoders=syn["encoders"], cache=syn["cache"], progress=False,
                        rows_per_shard=100, shuffle_buffer=1000, **FIT)
    tr = space.info["training"]
    shards = TrainingShards.open(tr["shards"])
    assert len(shards) == 6 and shards.count("train", ("a", "b")) == 360
    # the standardisation streamed over the shards is what the in-memory projector computed
    for m in ("a", "b"):
        assert np.allclose(space.projectors[m].mean, syn["single"].projectors[m].mean, atol=1e-5)
        assert np.allclose(space.projectors[m].scale, syn["single"].projectors[m].scale, rtol=1e-5)
    rec = _recalls(space, syn["manifest"], syn["cache"])
    for k, v in syn["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    assert min(rec.values()) > 0.1, rec  # it learnt (chance: R@1 1/120, R@10 1/12)
    # through the CLI: unchanged manifest + encoders reuse the training shards (default layout: one shard here)
    from anybind.cli import app

    out = syn["dir"] / "space-stream"
    args = ["fit", str(syn["manifest"]), "--stream", "--epochs", "2", "--cache", str(syn["cache"]), "--out", str(out)]
    for m, spec in syn["encoders"].items():
        args += ["-e", f"{m}={spec}"]
    for extra in ([], ["--overwrite"]):  # the second run replaces the space the first saved
        res = CliRunner().invoke(app, args + extra)
        assert res.exit_code == 0, res.output
    assert "trainer: streaming" in " ".join(res.output.split())
    assert len(list((Path(syn["cache"]) / "training").glob("*/shards.json"))) == 2  # 100-row and 4096-row layouts
    assert Space.load(out).info["training"]["epochs_run"] == 2
    with pytest.raises(DataError, match="multimodal"):
        fit_sharded(syn["manifest"], encoders=syn["encoders"], cache=syn["cache"], progress=False, loss="symile")


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from anybind.scale import init_ray

    ctl = tmp_path_factory.mktemp("scalectl")
    old = os.environ.get("ANYBIND_TEST_SCALE_DIR")
    os.environ["ANYBIND_TEST_SCALE_DIR"] = str(ctl)  # inherited by the Ray workers started below
    started = init_ray(num_cpus=2)
    yield ctl
    if started:
        ray.shutdown()
    if old is None:
        os.environ.pop("ANYBIND_TEST_SCALE_DIR", None)
    else:
        os.environ["ANYBIND_TEST_SCALE_DIR"] = old


def _calls(ctl: Path) -> int:
    log = ctl / "calls.log"
    return sum(int(x) for x in log.read_text().split()) if log.exists() else 0


def test_worker_stages_turn_unreadable_items_into_reported_rows(tux_mini, tmp_path):
    from anybind.scale.encode_ray import decode_batch, key_batch

    _, rows = tux_mini
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    items = np.array([rows[0]["image"], str(bad), str(tmp_path / "gone.png")], dtype=object)
    k = key_batch({"i": np.arange(3), "item": items}, "image:efficientnet-lite0")
    assert k["key"][0].startswith("f:") and k["key"][1].startswith("f:") and k["key"][2] == ""
    assert list(k["error"][:2]) == ["", ""] and "cannot read" in k["error"][2]
    d = decode_batch({"key": k["key"][:2], "item": items[:2]}, "image:efficientnet-lite0")
    assert d["error"][0] == "" and len(d["data"][0]) > 0
    assert "bad.png" in d["error"][1] and "corrupt" in d["error"][1] and d["data"][1] == b""


def test_ray_encode_matches_single_process_and_resumes_after_a_worker_failure(ray_local, tux_mini, tmp_path, monkeypatch):
    from anybind.cli import app
    from anybind.scale.encode import encode_items

    ctl = ray_local
    manifest, rows = tux_mini
    spec = "callable:scale_encoders:flaky_text"
    runner = CliRunner()
    texts = list(dict.fromkeys(r["text"] for r in rows))  # a few captions repeat: encoded once
    # single process, through the CLI
    res = runner.invoke(app, ["encode", str(manifest), "-e", f"text={spec}", "--cache", str(tmp_path / "local")])
    assert res.exit_code == 0, res.output
    assert f"{len(texts)} encoded" in " ".join(res.output.split())
    # Ray, first run: the encoder fails after 5 batches (of 4): committed shards stay
    (ctl / "calls.log").unlink()
    (ctl / "control.json").write_text(json.dumps({"fail_after": 5, "mode": "raise"}))
    with pytest.raises(EncoderError, match="simulated encoder failure.*rerun to encode the remaining"):
        encode_items(spec, texts, tmp_path / "ray", ray=True, shard_size=8, batch_size=4, concurrency=1, progress=False)
    committed = _cache_contents(tmp_path / "ray", spec)
    assert 0 < len(committed) < len(texts)
    assert len(committed) % 8 == 0 or len(committed) < 8 * 2  # whole shards only
    # rerun (through the CLI): only what is missing is encoded
    (ctl / "calls.log").unlink()
    res = runner.invoke(app, ["encode", str(manifest), "-e", spec, "-m", "text", "--ray", "--shard-size", "8",
                              "--batch-size", "4", "--concurrency", "1", "--cache", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    assert _calls(ctl) == len(texts) - len(committed)
    assert f"{len(committed)} already cached" in " ".join(res.output.split())
    local, ray_ = _cache_contents(tmp_path / "local", spec), _cache_contents(tmp_path / "ray", spec)
    assert set(local) == set(ray_) and len(local) == len(texts)
    for k in local:
        np.testing.assert_allclose(ray_[k], local[k], atol=1e-6)
    for k, v in committed.items():  # what the failed run committed was not rewritten
        assert np.array_equal(ray_[k], v)
    # files: content keys hashed by the workers, decoding in map tasks, the same vectors
    img = "callable:helper_encoders:image_stats"
    paths = [r["image"] for r in rows]
    FeatureCache(tmp_path / "local").encode(get_encoder(img), paths, progress=False)
    monkeypatch.setattr("anybind.scale.encode_ray.KEY_TASKS_FROM", 0)  # hash the files in Ray tasks, as for big corpora
    rep = encode_items(img, paths + [str(tmp_path / "missing.png")], tmp_path / "ray", ray=True, shard_size=16,
                       concurrency=2, progress=False)  # two actors committing shards side by side
    assert rep.encoded == len(set(paths)) and rep.shards >= 2
    assert len(rep.failed) == 1 and "missing.png" in rep.failed[0][0]
    local, ray_ = _cache_contents(tmp_path / "local", img), _cache_contents(tmp_path / "ray", img)
    assert set(local) == set(ray_)
    for k in local:
        np.testing.assert_allclose(ray_[k], local[k], atol=1e-6)


def test_ray_encode_leaves_out_rays_note_on_its_actor_pool(ray_local, tmp_path, capfd):
    """Ray's core writes a note to descriptor 2 on each actor pool (ray#53727): none of it reaches stderr."""
    from anybind.scale.encode import encode_items
    from anybind.scale.native_stderr import RAY_ACTOR_RESTART_NOTE

    texts = [f"a note-free caption {i}" for i in range(12)]
    rep = encode_items("callable:scale_encoders:flaky_text", texts, tmp_path / "c", ray=True, shard_size=4,
                       concurrency=1, progress=False)
    assert rep.encoded == 12
    assert RAY_ACTOR_RESTART_NOTE not in capfd.readouterr().err


def test_ray_index_has_the_same_rows(ray_local, syn, tmp_path):
    from anybind.index import Index
    from anybind.scale.encode_ray import ray_index_embedder

    space_dir = syn["single"].save(tmp_path / "space")
    space = Space.load(space_dir)
    plain = Index.build(space, syn["manifest"], tmp_path / "plain", cache=syn["cache"], ann=False)
    emb = ray_index_embedder(space_dir, space.identity(), syn["cache"], batch_size=100, concurrency=1)
    distributed = Index.build(space, syn["manifest"], tmp_path / "ray", cache=syn["cache"], ann=False,
                              chunk_size=256, embedder=emb)

    def table(ix):
        t = ix.table.to_arrow().to_pydict()
        order = sorted(range(len(t["id"])), key=lambda i: (t["modality"][i], t["id"][i]))
        return {c: [t[c][i] for i in order] for c in t}

    a, b = table(plain), table(distributed)
    assert len(a["id"]) == 1200
    for c in ("id", "modality", "source", "labels", "label_pairs", "key"):
        assert a[c] == b[c], c
    np.testing.assert_allclose(np.array(a["vector"]), np.array(b["vector"]), atol=1e-6)
    # and it stays incremental: nothing new to embed
    assert distributed.add(syn["manifest"], embedder=emb).total_embedded == 0


def test_ray_train_matches_single_process_training(ray_local, syn):
    from anybind.scale.sharded import fit_sharded

    space = fit_sharded(syn["manifest"], encoders=syn["encoders"], cache=syn["cache"], progress=False,
                        ray_workers=2, rows_per_shard=100, shuffle_buffer=1000, **FIT)
    tr = space.info["training"]
    assert tr["workers"] == 2 and tr["ray_workers"] == 2 and space.info["lineage"][-1]["trainer"] == "ray-train x2"
    rec = _recalls(space, syn["manifest"], syn["cache"])
    for k, v in syn["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    # the saved space works like any other
    assert space.embed("a", ["r0001"], cache=syn["cache"]).shape == (1, 32)
    shutil.rmtree(Path(tr["shards"]).parent / "_ray_runs", ignore_errors=True)


def test_ray_train_workers_start_from_the_drivers_ridge_start(ray_local, syn):
    """init='ridge' on Ray Train: the driver streams the ridge start once and every worker starts from it."""
    import torch

    from anybind.scale.sharded import fit_sharded

    kw = dict(encoders=syn["encoders"], cache=syn["cache"], progress=False, rows_per_shard=100, shuffle_buffer=1000,
              lock="a", init="ridge", epochs=0, hidden=64)
    ray_space = fit_sharded(syn["manifest"], ray_workers=2, **kw)
    local = fit_sharded(syn["manifest"], **kw)
    sd = ray_space.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in local.state_dict().items())
    assert ray_space.info["training"]["history"][0]["epoch"] == 0 and ray_space.info["training"]["best_epoch"] == 0
    assert ray_space.dim == 24 and ray_space.projectors["b"].linear.weight.abs().sum() > 0  # b regressed onto a
    # WiSE-FT and L2-SP through the shared loop's hooks on DDP workers: every worker mixes in step
    robust = fit_sharded(syn["manifest"], ray_workers=2, **{**kw, "epochs": 2, "wise": "auto", "l2sp": 1e-3,
                                                             "mixup": 0.5})  # m2-mix on every worker, one lambda
    rob = robust.info["training"]["robust"]
    assert rob["l2sp"] == 1e-3 and rob["mixup"] == 0.5 and rob["wise_alpha"] in [float(a) for a in rob["wise_val"]]
    assert rob["ridge"]["b"]["prior"] == "zero" and robust.info["lineage"][-1]["ridge_start"] == rob["ridge"]
    shutil.rmtree(Path(ray_space.info["training"]["shards"]).parent / "_ray_runs", ignore_errors=True)


# ----------------------------------------------------------------------------- pool=attn video (issue 17)
CLIP_FRAMES = 4


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """300 real H.264 clips where one frame of each matters (video_helpers.one_frame_corpus), frames encoded by
    ``rgb_stats``, pooled by an attention learnt with the projector; the in-memory fit of them."""
    pytest.importorskip("av")
    from video_helpers import one_frame_corpus

    d = tmp_path_factory.mktemp("clips")
    manifest, encoders = one_frame_corpus(d, n=300, frames=CLIP_FRAMES)
    encoders["video"] = f"video:frames(callable:video_helpers:rgb_stats)@fps=4,max={CLIP_FRAMES},pool=attn"
    cache = d / "cache"
    single = Space.fit(manifest, encoders=encoders, cache=cache, progress=False, **FIT)
    assert single.projectors["video"].cfg.frames == CLIP_FRAMES
    return {"dir": d, "manifest": manifest, "encoders": encoders, "cache": cache, "single": single,
            "recalls": _recalls(single, manifest, cache)}


def _attends_to_the_signal_frame(space, clips) -> float:
    """On the test clips: the share whose largest attention weight is on the two-coloured frame."""
    import torch

    recs = [json.loads(line) for line in clips["manifest"].read_text().splitlines()]
    paths = [str(clips["dir"] / r["video"]) for r in recs if r["split"] == "test"]
    X = FeatureCache(clips["cache"]).encode(get_encoder(clips["encoders"]["video"]), paths, progress=False)
    assert X.shape == (60, CLIP_FRAMES * 7)
    with torch.no_grad():
        w = space.projectors["video"].eval().attention(torch.from_numpy(X)).numpy()
    spread = X.reshape(len(X), CLIP_FRAMES, 7)[:, :, 3:6].mean(-1)  # rgb_stats' spread: the two-coloured frame
    return float(np.mean(np.argmax(w, 1) == np.argmax(spread, 1)))


def test_streaming_fit_learns_the_attention_pool_like_the_in_memory_fit(clips):
    from anybind.cli import app
    from anybind.scale.sharded import fit_sharded

    kw = dict(encoders=clips["encoders"], cache=clips["cache"], progress=False, rows_per_shard=100,
              shuffle_buffer=1000)
    space = fit_sharded(clips["manifest"], **kw, **FIT)
    single, pr = clips["single"].projectors["video"], space.projectors["video"]
    assert pr.cfg == single.cfg and pr.cfg.frames == CLIP_FRAMES and pr.cfg.in_dim == CLIP_FRAMES * 7
    # the standardisation streamed over the shards' valid frames is the in-memory one
    assert np.allclose(pr.mean, single.mean, atol=1e-6) and np.allclose(pr.scale, single.scale, rtol=1e-5)
    rec = _recalls(space, clips["manifest"], clips["cache"])
    for k, v in clips["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    assert rec["video->text/R@1"] > 0.15, rec  # it learnt (chance 1/60)
    assert _attends_to_the_signal_frame(space, clips) > 0.8
    assert _attends_to_the_signal_frame(clips["single"], clips) > 0.8
    # the ridge start (streamed normal equations) is the in-memory one; a frame-pooling modality cannot be locked
    ridge = dict(lock="text", init="ridge", epochs=0, hidden=64, seed=0)
    a = fit_sharded(clips["manifest"], **kw, **ridge)
    b = Space.fit(clips["manifest"], encoders=clips["encoders"], cache=clips["cache"], progress=False, **ridge)
    E = [s.embed("video", [str(clips["dir"] / "v0004.mp4"), str(clips["dir"] / "v0009.mp4")],
                 cache=clips["cache"]) for s in (a, b)]
    np.testing.assert_allclose(E[0], E[1], atol=1e-4)
    with pytest.raises(DataError, match="lock='video'.*pool=attn pools frames.*lock another modality"):
        fit_sharded(clips["manifest"], **kw, **{**ridge, "lock": "video"})
    # through the CLI
    out = clips["dir"] / "space-stream"
    args = ["fit", str(clips["manifest"]), "--stream", "--epochs", "2", "--cache", str(clips["cache"]),
            "--out", str(out)] + [x for m, s in clips["encoders"].items() for x in ("-e", f"{m}={s}")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert Space.load(out).projectors["video"].cfg.frames == CLIP_FRAMES


def test_ray_train_learns_the_attention_pool_within_tolerance(ray_local, clips):
    from anybind.scale.sharded import fit_sharded

    space = fit_sharded(clips["manifest"], encoders=clips["encoders"], cache=clips["cache"], progress=False,
                        ray_workers=2, rows_per_shard=100, shuffle_buffer=1000, **FIT)
    assert space.info["training"]["workers"] == 2 and space.projectors["video"].cfg.frames == CLIP_FRAMES
    rec = _recalls(space, clips["manifest"], clips["cache"])
    for k, v in clips["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    assert _attends_to_the_signal_frame(space, clips) > 0.8
    shutil.rmtree(Path(space.info["training"]["shards"]).parent / "_ray_runs", ignore_errors=True)


def test_streamed_frame_standardisation_skips_padded_frames(tmp_path):
    """Clips of 1 to 4 frames under max=4: the streaming trainer's per-frame standardisation is over the valid
    frames only (the padded ones excluded), the in-memory trainer's (Projector.fit_stats with the frame flag), and
    not the statistics over every frame slot."""
    pytest.importorskip("av")
    from video_helpers import write_clip

    from anybind.projectors import Projector, ProjectorConfig
    from anybind.scale.sharded import fit_sharded

    rng = np.random.default_rng(0)
    n, T, lengths = 30, CLIP_FRAMES, [1, 2, 3, 4, 1, 2]
    ids = [f"c{i:02d}" for i in range(n)]
    np.savez(tmp_path / "text.npz", ids=np.array(ids), vectors=rng.normal(size=(n, 8)).astype(np.float32))
    splits, recs = ["train"] * 3 + ["val", "test"], []
    for i, rid in enumerate(ids):
        frames = [np.full((32, 32, 3), rng.integers(30, 225, size=3), np.uint8) for _ in range(lengths[i % 6])]
        write_clip(tmp_path / f"{rid}.mp4", frames, rate=4)
        recs.append({"id": rid, "split": splits[i % 5], "video": f"{rid}.mp4", "text": True})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    spec = f"video:frames(callable:video_helpers:rgb_stats)@fps=4,max={T},pool=attn"
    encoders, cache = {"text": f"vectors:{tmp_path}/text.npz", "video": spec}, tmp_path / "cache"
    ridge = dict(lock="text", init="ridge", epochs=0, hidden=16, dim=8, seed=0)
    streamed = fit_sharded(manifest, encoders=encoders, cache=cache, progress=False, rows_per_shard=7, **ridge)
    single = Space.fit(manifest, encoders=encoders, cache=cache, progress=False, **ridge)
    # the training clips' features as the in-memory trainer reads them: T frames of 6 features + a validity flag
    train = [str(tmp_path / r["video"]) for r in recs if r["split"] == "train"]
    X = FeatureCache(cache).encode(get_encoder(spec), train, progress=False)
    seq = X.reshape(len(X), T, 7)
    valid = [lengths[i % 6] for i, r in enumerate(recs) if r["split"] == "train"]
    assert seq[..., -1].sum(1).tolist() == valid and sum(valid) < len(X) * T  # padded frames are there
    assert (seq[..., :-1][seq[..., -1] < 0.5] == 0).all()
    stats = Projector(ProjectorConfig(in_dim=T * 7, frames=T)).fit_stats(X)
    shards = TrainingShards.open(streamed.info["training"]["shards"])
    assert len(shards) > 1
    mean, scale, count = shards.standardisation("video", "train", frames=T)
    assert count == sum(valid)
    np.testing.assert_allclose(mean, stats.mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats.scale.numpy(), scale, atol=1e-6)  # one scale, stored per dimension
    for space in (streamed, single):  # both trainers keep those statistics
        np.testing.assert_allclose(space.projectors["video"].mean.numpy(), stats.mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(space.projectors["video"].scale.numpy(), stats.scale.numpy(), atol=1e-6)
    # every frame slot, padded ones included, gives other statistics: the test can tell
    every = seq[..., :-1].reshape(-1, 6).astype(np.float64)
    every_mean = every.mean(0)
    every_scale = np.sqrt(((every - every_mean) ** 2).sum(1).mean() / 6)
    assert np.abs(every_mean - mean).max() > 0.05 and abs(every_scale - scale) > 0.01

"""Scale-out without Ray (anybind.scale): the pair stream over training shards, and the streaming trainer against
the in-memory one (same standardisation, recalls within ``scale_helpers.TOL``; attention pooling; padded frames).
The Ray encoders, indexer and trainer are in test_scale_ray.py."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scale_helpers import CLIP_FRAMES, FIT, TOL, attends_to_the_signal_frame, recalls
from typer.testing import CliRunner

from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder
from anybind.errors import DataError
from anybind.scale.pairstream import PairStream
from anybind.scale.shard_write import write_synthetic_shards
from anybind.scale.stream import TrainingShards
from anybind.space import Space


# ----------------------------------------------------------------------------- streaming (no Ray)
def _row_ids(x: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in x]


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
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


@pytest.mark.parametrize("raw, why", [
    (b"\xff\xfe{}", "corrupt JSON"),
    (b"[1, 2]", "not an anybind training-shards folder"),
    (json.dumps({"format": "anybind.training-shards", "format_version": 99, "shards": []}).encode(),
     "saved by a newer anybind"),
    (json.dumps({"format": "anybind.training-shards", "format_version": "1", "shards": []}).encode(),
     "format_version is '1', expected an integer"),
])
def test_a_damaged_or_newer_shards_header_is_one_line(tmp_path, raw, why):
    """shards.json is read by the one versioned reader (anybind.artefact_meta): a newer format is refused, not read
    as this one; bytes that are not UTF-8 are a one-line error, not a UnicodeDecodeError."""
    write_synthetic_shards(tmp_path / "s", 20, dims={"a": 4, "b": 4}, val_rows=0, rows_per_shard=10)
    (tmp_path / "s" / "shards.json").write_bytes(raw)
    with pytest.raises(DataError, match=why) as e:
        TrainingShards.open(tmp_path / "s")
    assert str(tmp_path / "s") in str(e.value) and "\n" not in str(e.value)


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
    rec = recalls(space, syn["manifest"], syn["cache"])
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
    rec = recalls(space, clips["manifest"], clips["cache"])
    for k, v in clips["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    assert rec["video->text/R@1"] > 0.15, rec  # it learnt (chance 1/60)
    assert attends_to_the_signal_frame(space, clips) > 0.8
    assert attends_to_the_signal_frame(clips["single"], clips) > 0.8
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


def test_ray_train_names_the_shards_to_its_workers_as_the_shell_names_the_drivers_folder(tmp_path, monkeypatch):
    """Run from a folder reached through a link (``cd /shared/proj``, /shared a link to the driver's own mount of
    the storage), Ray Train's workers are handed the shards, and Ray Train its runs' folder, under the name the shell
    gives that folder ($PWD: the name nodes mounting the same storage share), as the workers' folder
    (``driver_folder``) and the federated clients' paths are, not under the driver's resolution of the link.  No Ray
    is started: the trainer is stopped where it is built."""
    pytest.importorskip("ray.train.torch")
    import contextlib

    import ray.train.torch

    import anybind.scale as scale
    from anybind.scale import ray_train
    from anybind.train import TrainConfig

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path / "link")
    monkeypatch.setenv("PWD", str(tmp_path / "link"))
    shards = write_synthetic_shards(Path("s"), 60, dims={"a": 4, "b": 3}, val_rows=10, rows_per_shard=30,
                                    dtype="float32")
    seen = {}

    class Built(Exception):
        pass

    def trainer(loop, *, train_loop_config, run_config, **kw):
        seen.update(shards=train_loop_config["shards"], storage=run_config.storage_path)
        raise Built

    monkeypatch.setattr(scale, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(ray_train, "worker_cpus", lambda workers, **kw: 1.0)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", trainer)
    with pytest.raises(Built):
        ray_train.fit_ray(shards, TrainConfig(epochs=1, batch_size=8), workers=1)
    assert seen == {"shards": str(tmp_path / "link" / "s"), "storage": str(tmp_path / "link" / "_ray_runs")}


def test_paths_handed_to_workers_name_the_folder_the_driver_reads_when_dotdot_follows_a_link(tmp_path, monkeypatch):
    """``..`` after a link is the link target's parent for the kernel (what the driver opens for ``--cache
    ../cache`` run from a folder reached through a link): the absolute path handed to Ray workers and torchrun
    ranks names that same folder, the link's name kept, not the lexical parent of the link (another folder)."""
    import os

    from anybind.data.files import absolute_as_given

    (tmp_path / "real" / "proj").mkdir(parents=True)
    (tmp_path / "real" / "cache").mkdir()
    (tmp_path / "proj").symlink_to(tmp_path / "real" / "proj")  # ~/proj -> /scratch/proj
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv("PWD", str(tmp_path / "proj"))
    for named in ("../cache", str(tmp_path / "proj" / ".." / "cache")):
        handed = absolute_as_given(named)
        assert os.path.isabs(handed) and handed.startswith(str(tmp_path / "proj")), handed  # the link's name
        assert os.path.samefile(handed, named), (named, handed)

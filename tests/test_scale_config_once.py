"""The streaming trainers check their config (:func:`anybind.scale.train.check_config`) once per run: the sharded
fit before it encodes, and neither the start, the trainer nor Ray's workers again; every entry called on its own
still refuses what the streaming trainer cannot do (issue 15)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from scale_helpers import synthetic_corpus

import anybind.scale.sharded as sharded
import anybind.scale.train as st
from anybind.errors import DataError
from anybind.scale.shard_write import write_synthetic_shards
from anybind.train import TrainConfig

SMALL = dict(epochs=1, batch_size=16, dim=4, hidden=8, seed=0)


@pytest.fixture
def checks(monkeypatch):
    """Every call of ``check_config``, through either module's name for it."""
    calls = []
    real = st.check_config

    def counted(cfg):
        calls.append(cfg.init)
        return real(cfg)

    monkeypatch.setattr(st, "check_config", counted)
    monkeypatch.setattr(sharded, "check_config", counted)
    return calls


def test_a_streaming_fit_checks_its_config_once(tmp_path, checks):
    manifest, encoders = synthetic_corpus(tmp_path / "c", n=120)
    space = sharded.fit_sharded(manifest, encoders=encoders, cache=tmp_path / "cache", progress=False, **SMALL)
    assert space.info["training"]["trainer"] == "streaming"
    assert len(checks) == 1  # 3 before: the fit's plan, the start, the trainer


def test_a_ray_fit_checks_its_config_once_on_the_driver(tmp_path, monkeypatch, checks):
    """No Ray is started: the trainer is stopped where it is built (what its workers are handed is all they get);
    the workers train with ``checked=True`` (:func:`anybind.scale.ray_train._ray_worker`)."""
    pytest.importorskip("ray.train.torch")
    import ray.train.torch

    import anybind.scale as scale
    from anybind.scale import ray_train

    class Built(Exception):
        pass

    def trainer(loop, **kw):
        raise Built

    monkeypatch.setattr(scale, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(ray_train, "worker_cpus", lambda workers, **kw: 1.0)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", trainer)
    manifest, encoders = synthetic_corpus(tmp_path / "c", n=120)
    with pytest.raises(Built):
        sharded.fit_sharded(manifest, encoders=encoders, cache=tmp_path / "cache", progress=False, ray_workers=1,
                            **SMALL)
    assert len(checks) == 1  # 2 before (the fit's plan, the start), then once more in every worker
    checks.clear()
    shards = write_synthetic_shards(tmp_path / "s", 60, dims={"a": 4, "b": 3}, val_rows=10, rows_per_shard=30,
                                    dtype="float32")
    with pytest.raises(Built):
        ray_train.fit_ray(shards, TrainConfig(**SMALL), workers=1)  # called on its own: it checks, once
    assert len(checks) == 1


@pytest.mark.parametrize("bad, says", [({"init": "procrustes"}, "needs every feature in memory"),
                                       ({"loss": "symile"}, "multimodal"), ({"center": True}, "inductive centring")])
def test_every_streaming_entry_on_its_own_still_refuses_a_config_it_cannot_train(tmp_path, bad, says):
    shards = write_synthetic_shards(Path(tmp_path / "s"), 60, dims={"a": 4, "b": 3}, val_rows=10,
                                    rows_per_shard=30, dtype="float32")
    cfg = TrainConfig(**{**SMALL, **bad})
    for entry in (lambda: st.fit_streaming(shards, cfg, progress=False), lambda: st.streaming_start(shards, cfg),
                  lambda: st.train_streaming(shards, cfg, progress=False)):
        with pytest.raises(DataError, match=says):
            entry()


def test_the_streaming_projectors_of_a_config_left_at_auto_are_the_plain_defaults(tmp_path):
    """``build_projectors`` with a ``TrainConfig()`` (its recipe fields AUTO) builds what the trainers build:
    nothing locked, the plain width (before: "lock=AUTO is not a modality of the shards")."""
    shards = write_synthetic_shards(Path(tmp_path / "s"), 60, dims={"a": 4, "b": 3}, val_rows=10,
                                    rows_per_shard=30, dtype="float32")
    stats = st.shard_stats(shards)
    for cfg in (TrainConfig(hidden=8), TrainConfig(hidden=8, dim=16)):
        got = st.build_projectors(shards, cfg, stats)
        want = st.build_projectors(shards, cfg.resolved(), stats)
        assert {m: p.cfg for m, p in got.items()} == {m: p.cfg for m, p in want.items()}
        assert {m: p.cfg.out_dim for m, p in got.items()} == dict.fromkeys("ab", cfg.resolved().dim)
        assert all(p.cfg.kind == "mlp" for p in got.values())

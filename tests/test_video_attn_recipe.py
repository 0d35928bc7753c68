"""The ``pool=attn`` video projector learns its attention with the recipe's training (issue 17).

With the recipe (text locked, ridge start, fine-tuning at lr 1e-4, WiSE-FT) the attention stayed uniform on the
Tux Paint clips: its scorer ``v . tanh(W z)`` starts at ``v = 0`` (the frames' mean), so only ``v`` gets a
gradient at first, and at the map's fine-tuning rate Adam moves it ~1e-4 a step.  The scorer now has its own
rate (``attn_lr``) and first trains alone on top of the frozen ridge start (``attn_epochs``), after which the
ridge map is re-solved for the frames the learnt pool picks.  Real H.264 clips where one frame of four carries
the content, a colour the frames' mean mixes with the distractors' (``video_helpers.one_frame_corpus`` with
``flat_signal``, frames read by ``rgb_stats``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anybind.cache import FeatureCache
from anybind.errors import DataError
from anybind.featureset import FeatureSet
from anybind.manifests import as_manifests
from anybind.train import TrainConfig, train_space

pytest.importorskip("av")

FRAMES = 4
RECIPE = dict(lock="text", init="ridge", wise="auto", lr=1e-4, hidden=64, batch_size=64, epochs=40, patience=10,
              seed=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from video_helpers import one_frame_corpus

    d = tmp_path_factory.mktemp("oneframe")
    manifest, specs = one_frame_corpus(d, n=200, frames=FRAMES, seed=1, flat_signal=True)
    specs["video"] = f"video:frames(callable:video_helpers:rgb_stats)@fps=4,max={FRAMES},pool=attn"
    mans = as_manifests(manifest, ["video", "text"], specs, True, False)
    fs = FeatureSet.from_manifests(mans, specs, FeatureCache(d / "cache"), progress=False)
    seq = fs.feats["video"].reshape(len(fs.records), FRAMES, 7)
    signal = np.argmin(seq[:, :, 3:6].mean(-1), 1)  # rgb_stats' spread: only the one-coloured frame has none
    return fs, signal, {"manifest": manifest, "encoders": specs, "cache": d / "cache"}


def _attention(space, fs, split):
    idx = fs.split_idx(split)
    with torch.no_grad():
        w = space.projectors["video"].eval().attention(torch.from_numpy(fs.get("video", idx))).numpy()
    entropy = -(w * np.log(np.clip(w, 1e-12, 1))).sum(1) / np.log(FRAMES)  # 1: uniform
    return w, idx, float(entropy.mean())


def _r1(space, fs, split):
    idx = fs.split_idx(split)
    q, g = space.project("video", fs.get("video", idx)), space.project("text", fs.get("text", idx))
    return float(np.mean(np.argmax(q @ g.T, 1) == np.arange(len(idx))))


def test_the_attention_gets_gradient_at_the_ridge_start_but_only_through_v(world):
    """Why the recipe's rate never moved it: at the start (v = 0) the gradient reaches v, not W."""
    fs, *_ = world
    start = train_space(fs, TrainConfig(**{**RECIPE, "epochs": 0}), progress=False)
    pr, text = start.projectors["video"].train(), start.projectors["text"]
    idx = fs.split_idx("train")[:64]
    a = F.normalize(pr(torch.from_numpy(fs.get("video", idx))), dim=-1)
    b = F.normalize(text(torch.from_numpy(fs.get("text", idx))), dim=-1)
    logits = 20 * a @ b.T
    target = torch.arange(len(idx))
    (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)).backward()
    assert not pr.attn_v.weight.any() and pr.attn_v.weight.grad.norm() > 1e-3
    assert not pr.attn.weight.grad.any()  # bilinear: W learns only once v has moved


def test_with_the_recipe_the_attention_finds_the_frame_that_carries_the_content(world):
    fs, signal, _ = world
    before = train_space(fs, TrainConfig(**RECIPE, attn_lr=RECIPE["lr"], attn_epochs=0), progress=False)
    after = train_space(fs, TrainConfig(**RECIPE), progress=False)  # the defaults: own rate, attention phase
    _, _, h_before = _attention(before, fs, "test")
    w, idx, h_after = _attention(after, fs, "test")
    assert h_before > 0.9, h_before  # at the fine-tuning rate it stays (nearly) the frames' mean
    assert h_after < 0.5, h_after  # not uniform any more
    assert np.mean(np.argmax(w, 1) == signal[idx]) > 0.9  # most weight on the frame that carries the content
    assert after.projectors["video"].attn_v.weight.norm() > 10 * before.projectors["video"].attn_v.weight.norm()
    phase = after.info["training"]["robust"]["attention_phase"]
    assert phase["best_epoch"] >= 1 and phase["val_after_ridge"] >= phase["best_val"]
    assert _r1(after, fs, "test") > _r1(before, fs, "test") + 0.1


def test_the_attention_phase_trains_the_scorer_alone_and_refuses_bad_epochs(world):
    fs, *_ = world
    cfg = {**RECIPE, "epochs": 1, "attn_epochs": 3, "wise": None}
    start = train_space(fs, TrainConfig(**{**cfg, "epochs": 0}), progress=False).projectors["video"]
    # stop right after the phase's ridge refit: one fine-tuning epoch of an MLP path started at zero
    sp = train_space(fs, TrainConfig(**cfg), progress=False)
    phase = sp.info["training"]["robust"]["attention_phase"]
    assert phase["epochs_run"] == 4 and phase["lr"] == TrainConfig().attn_lr  # epoch 0 (the start) + 3
    assert sp.projectors["video"].attn_v.weight.any() and not start.attn_v.weight.any()
    assert sp.info["training"]["robust"]["ridge"]["video"]["alpha"] is not None  # the map re-solved after it
    for bad in (-1, 1.5, True):
        with pytest.raises(DataError, match="attn_epochs must be a whole number >= 0"):
            train_space(fs, TrainConfig(**{**cfg, "attn_epochs": bad}), progress=False)
    # a random start trains the attention with the rest: no phase
    rnd = train_space(fs, TrainConfig(epochs=1, hidden=64, seed=0, attn_epochs=3), progress=False)
    assert "attention_phase" not in rnd.info["training"]["robust"]


def test_the_streaming_trainer_runs_the_attention_phase_too(world):
    from anybind.scale.sharded import fit_sharded

    fs, signal, files = world
    space = fit_sharded(files["manifest"], encoders=files["encoders"], cache=files["cache"], progress=False,
                        rows_per_shard=50, shuffle_buffer=1000, recipe="plain", **RECIPE)
    phase = space.info["training"]["robust"]["attention_phase"]
    assert phase["best_epoch"] >= 1 and phase["ridge"]["video"]["alpha"] is not None
    w, idx, h = _attention(space, fs, "test")
    assert h < 0.5, h
    assert np.mean(np.argmax(w, 1) == signal[idx]) > 0.9


def test_the_bench_summarises_the_attention_over_frames(world):
    import copy

    from anybind.bench.tasks_video import attention_stats
    from anybind.space import Space

    fs, signal, files = world
    idx = fs.split_idx("test")
    recs = []
    for i in idx:  # the bench's labels: where the signal frame is, and a motion
        r = copy.copy(fs.records[i])
        r.labels = {"signal_frame": int(signal[i]), "motion": ("pan", "fade")[i % 2]}
        recs.append(r)
    cache = FeatureCache(files["cache"])
    uniform = attention_stats(Space.from_features(fs, TrainConfig(**{**RECIPE, "epochs": 0}), progress=False),
                              recs, cache)
    assert uniform["entropy / log frames"] == pytest.approx(1.0, abs=1e-5)
    assert uniform["weight on signal"] == pytest.approx(1 / FRAMES, abs=1e-5)
    a = attention_stats(Space.from_features(fs, TrainConfig(**RECIPE), progress=False), recs, cache)
    assert a["entropy / log frames"] < 0.5 and a["argmax on signal"] > 0.9 and a["frames"] == FRAMES
    assert sum(a[f"weight at frame {t}"] for t in range(FRAMES)) == pytest.approx(1.0, abs=1e-5)
    assert {"pan: entropy / log frames", "fade: weight at frame 3"} <= set(a) and "zoom: weight at frame 0" not in a


def test_fit_takes_the_attention_options(world, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app
    from anybind.space import Space

    _, _, files = world
    out = tmp_path / "sp"
    args = ["fit", str(files["manifest"]), "--epochs", "2", "--attn-lr", "0.02", "--attn-epochs", "2", "--lock", "text",
            "--init", "ridge", "--cache", str(files["cache"]), "--out", str(out)]  # a small val: the attention
    # options given ask for fine-tuning (recipe auto kept the start and silently dropped the phase they set)
    res = CliRunner().invoke(app, args + [x for m, s in files["encoders"].items() for x in ("-e", f"{m}={s}")])
    assert res.exit_code == 0, res.output
    sp = Space.load(out)
    assert sp.config["attn_lr"] == 0.02 and sp.config["attn_epochs"] == 2
    phase = sp.info["training"]["robust"]["attention_phase"]
    assert phase["lr"] == 0.02 and phase["epochs_run"] <= 3
    chosen = sp.info["lineage"][-1]["recipe"]["chosen"]
    assert chosen.get("select_se") == 1.0 and "finetune" not in chosen and sp.config["finetune"] is True


def test_the_ridge_refit_after_the_phase_is_kept_only_when_val_does_not_fall():
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.attention import refit_after_attention

    def refit(prs):
        with torch.no_grad():
            prs["video"].linear.weight.add_(1.0)
        return {"video": {"alpha": 0.1}}

    for val, kept in ((0.4, False), (0.5, True), (0.6, True)):
        prs = {"video": Projector(ProjectorConfig(in_dim=4 * 7, out_dim=3, kind="linear", frames=4))}
        w0 = prs["video"].linear.weight.detach().clone()
        phase = {"best_val": 0.5}
        rec = refit_after_attention(prs, phase, lambda: refit(prs), lambda epoch: val)
        assert phase["val_after_ridge"] == val and phase["ridge_refit"].startswith("kept" if kept else "dropped")
        assert (rec is not None) == kept
        assert torch.equal(prs["video"].linear.weight, w0 + 1.0 if kept else w0)
    phase = {"best_val": 0.5}  # no val split: kept
    assert refit_after_attention(prs, phase, lambda: refit(prs), None) is not None and phase["val_after_ridge"] is None


def test_both_trainers_run_and_record_the_attention_phase_alike(world):
    """One shared phase (attention, then the ridge refit): the same record in memory and streaming, and the
    ridge start recorded is the one fine-tuning began from (the refit's when kept)."""
    from anybind.scale.sharded import fit_sharded

    fs, _, files = world
    cfg = {**RECIPE, "epochs": 1, "attn_epochs": 3, "wise": None}
    mem = train_space(fs, TrainConfig(**cfg), progress=False)
    streamed = fit_sharded(files["manifest"], encoders=files["encoders"], cache=files["cache"], progress=False,
                           recipe="plain", **cfg)
    phases = []
    for sp in (mem, streamed):
        rob = sp.info["training"]["robust"]
        phase = rob["attention_phase"]
        phases.append(phase)
        kept = phase["ridge_refit"] == "kept"
        assert (phase["ridge"] is not None) == kept
        if kept:
            assert rob["ridge"] == phase["ridge"]
    assert set(phases[0]) == set(phases[1])
    assert phases[0]["epochs_run"] == phases[1]["epochs_run"] == 4


def test_the_phase_is_deterministic_and_runs_without_a_val_split(world):
    import copy
    import dataclasses

    fs, *_ = world
    cfg = TrainConfig(**{**RECIPE, "epochs": 2, "attn_epochs": 3, "wise": None})
    a, b = (train_space(fs, cfg, progress=False) for _ in range(2))
    for m in a.projectors:
        sa, sb = a.projectors[m].state_dict(), b.projectors[m].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # no val records: every epoch of the phase runs, the refit is kept unscored
    noval = copy.copy(fs)
    noval.records = [dataclasses.replace(r, split="train") if r.split == "val" else r for r in fs.records]
    sp = train_space(noval, cfg, progress=False)
    phase = sp.info["training"]["robust"]["attention_phase"]
    assert phase["best_val"] is None and phase["val_after_ridge"] is None and phase["ridge_refit"] == "kept"
    assert phase["epochs_run"] == 3 and phase["best_epoch"] == 3 and phase["ridge"] is not None
    assert sp.projectors["video"].attn_v.weight.any()

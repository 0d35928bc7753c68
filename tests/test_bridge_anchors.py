"""The label bridge's class anchors in the ridge start (issue 16, session 25; anybind.bridge_start.bridge_anchors,
TrainConfig.bridge_anchors, recipe.ANCHOR_WEIGHT): real Tux Paint stamps, the real EfficientNet label bridge and
MiniLM."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from anybind import Space
from anybind.bridge_start import bridge_anchors
from anybind.cli import app
from anybind.errors import DataError
from anybind.recipe import ANCHOR_WEIGHT, resolve_recipe
from anybind.train import TrainConfig

KW = dict(modalities=["image", "text"], epochs=0, progress=False, seed=0, kernel_start=False)


@pytest.fixture(scope="module")
def tux(tux_subset):
    """60 real Tux Paint stamps, every fifth in val: 48 training pairs."""
    return tux_subset(60, 5, "anchors")


@pytest.fixture(scope="module")
def fits(tux, shared_cache):
    """The start alone (epochs 0, linear: no kernel branch) with the recipe's anchors, and with none."""
    return (Space.fit(tux, cache=shared_cache, **KW),
            Space.fit(tux, cache=shared_cache, bridge_anchors=0.0, **KW))


def class_readings(space, shared_cache, tux, m: str = "image"):
    """Each ImageNet class's bridge reading (an image read as that class with certainty, its base block at the
    training images' mean) against the 1000 class prompts, through the space: (R@1, mean cosine with its own prompt).
    ``tux``: a manifest, or the training items of modality ``m`` (the label-bridge image)."""
    pi = space.projectors[m]
    U, L, d = bridge_anchors(space.encoder(m).spec, space.encoder("text").spec, pi)
    items = [r.values[m] for r in tux.split("train")] if hasattr(tux, "split") else tux
    X = space.features(m, items, cache=shared_cache)
    norm = float(np.linalg.norm(X[:, d:], axis=1).mean())
    Xa = torch.cat([pi.mean[:d].float().expand(len(U), d), U * norm], 1).numpy()
    q = space.project(m, Xa)
    g = space.project("text", L.numpy())
    S = F.normalize(torch.from_numpy(q), dim=-1) @ F.normalize(torch.from_numpy(g), dim=-1).T
    return float((S.argmax(1) == torch.arange(len(U))).float().mean()), float(S.diagonal().mean())


def test_the_recipe_fits_the_anchors_and_records_them(fits):
    anchored, plain = fits
    rec = anchored.info["training"]["robust"]["ridge"]["image"]
    assert {k: rec["anchors"][k] for k in ("weight", "count")} == {"weight": ANCHOR_WEIGHT, "count": 1000}
    # 12 val pairs: the guard keeps the label bridge itself, so the anchors are not in the final start (said)
    assert rec["guard"]["kept"] == "start" and rec["anchors"]["in_start"] is False
    assert anchored.config["bridge_anchors"] == ANCHOR_WEIGHT
    assert "anchors" not in plain.info["training"]["robust"]["ridge"]["image"]
    assert plain.config["bridge_anchors"] == 0.0
    wa, wp = anchored.projectors["image"].linear.weight, plain.projectors["image"].linear.weight
    assert not torch.equal(wa, wp)  # the anchors moved the start


def test_anchors_keep_what_the_frozen_classifier_knew(tux, shared_cache, monkeypatch):
    """48 Tux Paint pairs at a weak shrinkage move the bridge block's map away from the classifier's own reading; the
    anchored start keeps each ImageNet class's reading nearer its prompt (and retrieves it at least as often)."""
    from anybind import ridge

    real = ridge.ridge_select
    monkeypatch.setattr(ridge, "ridge_select", lambda *a, **k: real(*a, **{**k, "alphas": (0.1,)}))
    kw = {**KW, "start_guard": False}
    anchored = Space.fit(tux, cache=shared_cache, **kw)
    plain = Space.fit(tux, cache=shared_cache, bridge_anchors=0.0, **kw)
    assert anchored.info["training"]["robust"]["ridge"]["image"]["alpha"] == 0.1
    assert anchored.info["training"]["robust"]["ridge"]["image"]["anchors"]["in_start"] is True  # the anchored ridge
    (r_a, cos_a), (r_p, cos_p) = class_readings(anchored, shared_cache, tux), class_readings(plain, shared_cache, tux)
    assert r_a >= r_p and cos_a > cos_p + 0.02, (r_a, cos_a, r_p, cos_p)


def test_the_anchored_start_is_saved_and_loaded_and_refits_from_its_config(fits, tmp_path, tux, shared_cache):
    anchored, _ = fits
    anchored.save(tmp_path / "sp")
    back = Space.load(tmp_path / "sp")
    assert back.config["bridge_anchors"] == ANCHOR_WEIGHT
    x = anchored.features("image", [tux.records[0].values["image"]], cache=shared_cache)
    assert torch.allclose(torch.from_numpy(back.project("image", x)), torch.from_numpy(anchored.project("image", x)))
    again = Space.fit(tux, cache=shared_cache, config=back.config, progress=False)
    assert torch.equal(again.projectors["image"].linear.weight, anchored.projectors["image"].linear.weight)


def test_the_recipe_sets_the_weight_only_with_the_bridge_prior_and_an_explicit_one_wins():
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {})
    assert chosen["ridge_prior"] == "bridge" and cfg["bridge_anchors"] == chosen["bridge_anchors"] == ANCHOR_WEIGHT
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {"bridge_anchors": 0.5})
    assert cfg["bridge_anchors"] == 0.5 and "bridge_anchors" not in chosen
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {"ridge_prior": "zero"})
    assert "bridge_anchors" not in cfg  # no bridge prior: the plain default, none
    assert TrainConfig().resolved().bridge_anchors == 0.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "3"])
def test_a_weight_that_is_not_a_non_negative_number_is_refused_in_one_line(tux, shared_cache, bad, never_encoded):
    with pytest.raises(DataError, match="bridge_anchors must be a non-negative number") as e:
        Space.fit(tux, cache=shared_cache, bridge_anchors=bad, **KW)
    assert "\n" not in str(e.value) and never_encoded == []


def test_anchors_without_the_bridge_prior_are_refused_not_ignored(tux, shared_cache, never_encoded):
    with pytest.raises(DataError, match="bridge_anchors=2.0 fits the label bridge's class anchors.*ridge_prior='zero'"):
        Space.fit(tux, cache=shared_cache, bridge_anchors=2.0, ridge_prior="zero", **KW)
    assert never_encoded == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_cli_flag_reaches_both_trainers(tux, shared_cache, tmp_path, stream):
    base = ["fit", str(tux.path), "--modalities", "image,text", "--epochs", "0", "--seed", "0", "--no-kernel-start",
            "--cache", str(shared_cache)] + (["--stream"] if stream else [])
    res = CliRunner().invoke(app, base + ["--bridge-anchors", "1.5", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    sp = Space.load(tmp_path / "a")
    assert {k: v for k, v in sp.info["training"]["robust"]["ridge"]["image"]["anchors"].items() if k != "in_start"} == {
        "weight": 1.5, "count": 1000}
    res = CliRunner().invoke(app, base + ["--bridge-anchors", "-1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--bridge-anchors" in res.output and not (tmp_path / "b").exists()


def test_streaming_and_in_memory_anchored_starts_agree(tux, shared_cache, tmp_path):
    """The anchors enter the normal equations summed over the shards' blocks: the streaming start is the same map."""
    mem = Space.fit(tux, cache=shared_cache, select_se=0.0, **KW)  # recipe auto's small-val rule is the in-memory fit's
    res = CliRunner().invoke(app, ["fit", str(tux.path), "--modalities", "image,text", "--epochs", "0", "--seed", "0",
                                   "--no-kernel-start", "--select-se", "0", "--stream", "--cache", str(shared_cache),
                                   "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    st = Space.load(tmp_path / "s")
    assert st.info["training"]["robust"]["ridge"]["image"]["anchors"]["weight"] == ANCHOR_WEIGHT
    a, b = mem.projectors["image"].linear.weight, st.projectors["image"].linear.weight
    assert not torch.equal(a, Space.fit(tux, cache=shared_cache, select_se=0.0, bridge_anchors=0.0, **KW)
                           .projectors["image"].linear.weight)  # the anchors matter in this start
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


def test_a_frame_pooling_projector_without_anchors_is_said_not_skipped(monkeypatch, caplog):
    """A clip of a label-bridge image encoder pooled by attention gets the bridge prior but no class anchors (its input
    is a frame sequence, not one feature row): recorded and logged under its name, never dropped in silence."""
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.robust import ridge_start
    from video_helpers import fake_bridge

    fake_bridge(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3, 17)).astype(np.float32)
    x[:, :, 16] = 1.0
    xv, xt = x.reshape(20, -1), rng.normal(size=(20, 6)).astype(np.float32)
    projectors = {"video": Projector(ProjectorConfig(in_dim=3 * 17, out_dim=6, frames=3, kind="linear")).fit_stats(xv),
                  "text": Projector(ProjectorConfig(in_dim=6, out_dim=6, kind="identity")).fit_stats(xt)}
    specs = {"video": "video:frames(image:fake+bridge)@fps=1,max=3,pool=attn", "text": "text:fake"}
    cfg = TrainConfig(lock="text", init="ridge", ridge_prior="bridge", bridge_anchors=ANCHOR_WEIGHT, start_guard=False,
                      kernel_start=False)
    with caplog.at_level("INFO", logger="anybind"):
        rec = ridge_start(projectors, cfg, specs, lambda m: [(xv, xt)], lambda m: None)
    assert rec["video"]["prior"] == "bridge"
    assert rec["video"]["anchors"] == {"weight": ANCHOR_WEIGHT, "count": 0, "note": "a frame-pooling projector",
                                       "in_start": False}
    assert any("'video'" in r.getMessage() and "no class anchors (a frame-pooling projector" in r.getMessage()
               for r in caplog.records)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans(), st.none(),
                 st.text(max_size=3)))
def test_the_fit_the_bind_and_the_cli_refuse_the_same_weights(w):
    """One check (``anchor_weight_problem``) behind ``TrainConfig``'s, ``BindConfig``'s and ``--bridge-anchors``':
    a weight one accepts, the others accept (None: the recipe's choice, for binding and the flag only)."""
    import typer

    from anybind.cli.fit_ridge import check_anchor_weight
    from anybind.progressive_fit import bind_config
    from anybind.robust import check_robust

    def refused(f) -> bool:
        try:
            f()
        except (DataError, typer.BadParameter) as e:
            assert "\n" not in str(e) and repr(w) in str(e)
            return True
        return False

    ok = w is not None and not isinstance(w, (bool, str)) and math.isfinite(w) and w >= 0
    if w is not None:  # TrainConfig's is a number: resolved before the check
        assert refused(lambda: check_robust(TrainConfig(bridge_anchors=w, ridge_prior="bridge", init="ridge"))) is not ok
    assert refused(lambda: bind_config({"bridge_anchors": w})) is not (ok or w is None)
    if not isinstance(w, (bool, str)):  # typer has parsed the flag into a float (or None) by then
        assert refused(lambda: check_anchor_weight(w)) is not (ok or w is None)

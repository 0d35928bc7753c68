"""Progressive binding's base-encoder gate (issue 16; anybind.base_gate): where the new encoder's label bridge is the
ridge start's prior, ``add_modality`` / ``replace_encoder`` gate a linear start's base-encoder correction as Space.fit
does (``base_gate``, recipe.BASE_GATE by default there; ``anybind bind --base-gate Q``).  Real Tux Paint stamps, the
real EfficientNet label bridge and MiniLM."""

import copy
import json
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError
from anybind.progressive_fit import bind_config
from anybind.recipe import BASE_GATE

from test_base_gate import assert_base_gated
from test_progressive_guard import BRIDGED, photo_pairs, text_locked_space

START = dict(anchors=["text"], epochs=0, seed=0, kernel_start=False, select_se=0)  # the linear start alone (no SE rule)
TINY = dict(anchors=["text"], epochs=4, patience=4, hidden=16, seed=0, kernel_start=False, select_se=0)


@pytest.fixture(scope="module")
def pairs(tux_dir, tmp_path_factory):
    """60 real Tux Paint stamps with their true captions, each image as ``image`` and ``photo``; every fifth in val
    (48 training pairs, 12 val)."""
    return photo_pairs(tux_dir, tmp_path_factory.mktemp("pgate"), 60)


@pytest.fixture(scope="module")
def base(pairs, shared_cache):
    return text_locked_space(pairs, shared_cache)


@pytest.fixture(scope="module")
def gated(base, pairs, shared_cache):
    """``photo`` bound through text at the linear start, the gate at its default."""
    return base.add_modality("photo", BRIDGED, str(pairs / "manifest.jsonl"), cache=shared_cache, **START)


def photos(space, pairs, cache, split: str) -> np.ndarray:
    rows = [json.loads(x) for x in (pairs / "manifest.jsonl").read_text().splitlines()]
    return space.features("photo", [r["photo"] for r in rows if r["split"] == split], cache=cache)


def test_the_bound_start_is_gated_and_recorded(gated, pairs, shared_cache):
    e = gated.info["lineage"][-1]
    rec = e["ridge_start"]["photo"]
    assert e["config"]["base_gate"] == BASE_GATE and rec["guard"]["kept"] == "ridge", rec  # a corrected start
    g = rec["gate"]
    assert g["q"] == BASE_GATE and g["support"] == 48 and g["refs"] == 12 and g["base_dim"] == 1280
    assert 0 <= g["val_gated"] <= 1 and g["val"] == pytest.approx(rec["guard"]["ridge_val"], abs=1e-6)
    pr = gated.projectors["photo"]
    assert pr.cfg.gate == 48 and pr.cfg.gate_base == 1280 and pr.cfg.gate_q == BASE_GATE
    assert_base_gated(pr, photos(gated, pairs, shared_cache, "train")[:5])


def test_off_the_start_is_the_ungated_one(base, gated, pairs, shared_cache):
    off = base.add_modality("photo", BRIDGED, str(pairs / "manifest.jsonl"), cache=shared_cache, base_gate=0, **START)
    assert "gate" not in off.info["lineage"][-1]["ridge_start"]["photo"] and off.projectors["photo"].cfg.gate == 0
    assert torch.equal(off.projectors["photo"].linear.weight, gated.projectors["photo"].linear.weight)
    with pytest.raises(AssertionError):  # no gate: the far input keeps the base-encoder correction
        assert_base_gated(off.projectors["photo"], photos(off, pairs, shared_cache, "train")[:5])


def test_the_gate_survives_fine_tuning_and_a_save_and_load(base, gated, pairs, shared_cache, tmp_path):
    data = str(pairs / "manifest.jsonl")
    tuned = base.add_modality("photo", BRIDGED, data, cache=shared_cache, **TINY)
    again = base.add_modality("photo", BRIDGED, data, cache=shared_cache, **TINY)
    pr, start = tuned.projectors["photo"], gated.projectors["photo"]
    assert pr.cfg.gate == start.cfg.gate and torch.equal(pr.gate_support, start.gate_support)
    assert torch.equal(pr.gate_ref, start.gate_ref)
    x = np.concatenate([photos(tuned, pairs, shared_cache, s) for s in ("train", "val")])
    far = x.copy()
    far[:, :1280] = np.random.default_rng(1).normal(size=(len(x), 1280)) * x[:, :1280].std(0) * 3 + x[:, :1280].mean(0)
    ungated = tuned.derived(tuned.encoders, {**tuned.projectors, "photo": copy.deepcopy(pr).set_gate(None)},
                            tuned.logit_scale, identities=tuned.identities, config=tuned.config, info=tuned.info)
    assert np.allclose(tuned.project("photo", x[:40]), ungated.project("photo", x[:40]), atol=1e-5)  # training: whole
    assert not np.allclose(tuned.project("photo", far), ungated.project("photo", far), atol=1e-3)  # far: faded
    assert tuned.info["lineage"][-1]["ridge_start"] == again.info["lineage"][-1]["ridge_start"]  # same seed, same
    assert all(torch.equal(v, again.projectors["photo"].state_dict()[k]) for k, v in pr.state_dict().items())
    tuned.save(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "space.json").read_text())["format_version"] == 6
    back = Space.load(tmp_path / "s")
    assert np.array_equal(back.project("photo", far), tuned.project("photo", far))
    assert np.array_equal(back.project("photo", x), tuned.project("photo", x))


def test_replace_encoder_is_gated_too_keeps_a_bound_gate_and_a_kept_kernel_says_why_none(base, gated, pairs,
                                                                                         shared_cache, caplog):
    data = str(pairs / "manifest.jsonl")
    rep = gated.replace_encoder("image", BRIDGED, data, cache=shared_cache, epochs=0, seed=0, kernel_start=False)
    rec = rep.info["lineage"][-1]["ridge_start"]["image"]
    assert rec["gate"]["support"] == 48 and rep.projectors["image"].cfg.gate == 48, rec
    x = photos(gated, pairs, shared_cache, "val")  # the gated photo projector, frozen through the replacement
    assert rep.projectors["photo"].cfg.gate == 48 and np.array_equal(rep.project("photo", x), gated.project("photo", x))
    with caplog.at_level(logging.INFO, logger="anybind"):
        kern = base.add_modality("photo", BRIDGED, data, cache=shared_cache, **{**START, "kernel_start": True})
    rec = kern.info["lineage"][-1]["ridge_start"]["photo"]
    if rec["kernel"]["kept"]:  # the gate's record agrees with what the start is, and the note is said in one line
        assert "kernel branch kept" in rec["gate"]["note"] and kern.projectors["photo"].cfg.gate == 0
        said = [r.getMessage() for r in caplog.records if "no base-encoder gate" in r.getMessage()]
        assert said == [f"start: 'photo': no base-encoder gate: {rec['gate']['note']}"]
    else:
        assert rec["gate"]["support"] == 48


def test_the_cli_flag_reaches_the_bound_start_and_a_bad_one_is_refused_before_any_work(base, pairs, shared_cache,
                                                                                       tmp_path):
    base.save(tmp_path / "base")
    args = ["bind", str(tmp_path / "base"), "--add", f"photo={BRIDGED}", "--data", str(pairs / "manifest.jsonl"),
            "--anchors", "text", "--no-kernel-start", "--epochs", "0", "--select-se", "0", "--cache", str(shared_cache)]
    res = CliRunner().invoke(app, [*args, "--base-gate", "0.3", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    sp = Space.load(tmp_path / "out")
    assert sp.projectors["photo"].cfg.gate_q == 0.3 and sp.info["lineage"][-1]["ridge_start"]["photo"]["gate"]["q"] == 0.3
    res = CliRunner().invoke(app, [*args, "--base-gate", "2", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--base-gate" in res.output and not (tmp_path / "bad").exists()


def test_a_gate_that_cannot_apply_is_refused_in_one_line(base, pairs, shared_cache):
    data = str(pairs / "manifest.jsonl")
    for kw, says in (({"base_gate": 0.5, "ridge_prior": "zero"}, "base_gate=0.5 gates .*ridge_prior='zero'"),
                     ({"base_gate": 0.5, "init": "random"}, "base_gate > 0 / .* are the ridge start's: use init='ridge'"),
                     ({"base_gate": True}, "BindConfig.base_gate must be a number in")):
        with pytest.raises(DataError, match=says) as e:
            base.add_modality("photo", BRIDGED, data, anchors=["text"], cache=shared_cache, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="base_gate > 0 / .*need a label bridge.*has none") as e:  # no bridge
        base.add_modality("photo", "image:efficientnet-lite0", data, anchors=["text"], cache=shared_cache,
                          base_gate=0.2)
    assert "\n" not in str(e.value)
    plain = base.add_modality("photo", "image:efficientnet-lite0", data, cache=shared_cache, **START)
    assert plain.info["lineage"][-1]["config"]["base_gate"] == 0.0 and plain.projectors["photo"].cfg.gate == 0


ODD_NUMBERS = (st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(), st.text(max_size=3),
               st.just(10 ** 400), st.none())


def check_bind_refusal(field: str, x, ok: bool, says: str) -> None:
    """``bind_config({field: x})`` refuses ``x`` in one line starting ``says`` unless ``ok``, else keeps None or a
    float (a numpy number recorded as a float)."""
    try:
        cfg = bind_config({field: x})
    except DataError as e:
        assert not ok and "\n" not in str(e) and str(e).startswith(says)
    else:
        assert ok and (getattr(cfg, field) is None or type(getattr(cfg, field)) is float)


def finite_plain(x) -> bool:
    """A finite number that is no bool, string or int too large for a float (None counts: left unset)."""
    return x is None or (not isinstance(x, (bool, str)) and not (type(x) is int and x > 10 ** 300) and math.isfinite(x))


@settings(max_examples=50, deadline=None)
@given(st.one_of(*ODD_NUMBERS, st.floats(0, 1).map(np.float32)))
def test_bind_config_refuses_the_gate_values_the_fit_refuses_in_one_line(q):
    check_bind_refusal("base_gate", q, finite_plain(q) and (q is None or 0 <= q <= 1),
                       "BindConfig.base_gate must be a number in [0, 1]")

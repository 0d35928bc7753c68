"""The base-encoder block's gate on a linear ridge start (issue 16, session 26; anybind.base_gate): real Tux Paint
stamps, the real EfficientNet label bridge and MiniLM."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import Space
from anybind.base_gate import ecdf_gate, gate_weights
from anybind.cli import app
from anybind.errors import DataError, SpaceError
from anybind.recipe import BASE_GATE, resolve_recipe
from anybind.train import TrainConfig

KW = dict(modalities=["image", "text"], epochs=0, progress=False, seed=0, kernel_start=False, select_se=0.0)


@pytest.fixture(scope="module")
def tux(tux_subset):
    """60 real Tux Paint stamps, every fifth in val: 48 training pairs."""
    return tux_subset(60, 5, "gate")


@pytest.fixture(scope="module")
def gated(tux, shared_cache):
    """The linear start alone (epochs 0, no kernel branch) with the recipe's gate."""
    return Space.fit(tux, cache=shared_cache, **KW)


def image_feats(space, tux, cache, split):
    return space.features("image", [r.values["image"] for r in tux.split(split) if r.has("image")], cache=cache)


def test_the_gate_is_recorded_with_its_own_val_scores(gated, tux):
    rec = gated.info["training"]["robust"]["ridge"]["image"]
    assert rec["prior"] == "bridge" and "guard" in rec and rec["guard"]["kept"] == "ridge", rec  # a corrected start
    g = rec["gate"]
    n_train = sum(1 for r in tux.split("train") if r.has("image") and r.has("text"))
    assert g["q"] == BASE_GATE and g["support"] == n_train and g["base_dim"] == 1280 and g["refs"] >= 2
    assert 0 <= g["val_gated"] <= 1 and 0 <= g["val"] <= 1
    pr = gated.projectors["image"]
    assert pr.cfg.gate == n_train and pr.cfg.gate_base == 1280 and pr.cfg.gate_q == BASE_GATE


def test_the_gate_fades_only_the_base_encoder_correction_and_only_far_from_the_training_images(gated, tux,
                                                                                              shared_cache):
    """A training image (its own nearest support row) gets the full map; an input far from every training image
    gets the map with its base-encoder columns dropped (the prior has none: the bridge block's correction kept)."""
    assert_base_gated(gated.projectors["image"], image_feats(gated, tux, shared_cache, "train")[:5])


def assert_base_gated(pr, x_train: np.ndarray) -> None:
    """``pr`` (a start: its MLP path zero) maps the training inputs ``x_train`` whole and the same inputs with base
    features pointing nowhere the training images point without its base-encoder columns (fails ungated)."""
    d = pr.cfg.gate_base or pr.cfg.in_dim - 1000  # ungated: the bridge block is the last 1000 features
    W = pr.linear.weight.detach()
    x_train = torch.from_numpy(x_train)
    n = len(x_train)
    with torch.no_grad():
        full = pr.linear(pr.standardized(x_train))
        assert torch.allclose(pr.uncentred(x_train), full, atol=1e-5)
        far = x_train.clone()
        rng = np.random.default_rng(0)  # base features pointing nowhere the training images point
        far[:, :d] = pr.mean[:d] + torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) * pr.scale[:d] * 3
        z = pr.standardized(far)
        no_base = z[:, d:] @ W[:, d:].T + pr.linear.bias
        assert torch.allclose(pr.uncentred(far), no_base, atol=1e-4)
        assert not torch.allclose(pr.linear(z), no_base, atol=1e-3)  # the base correction is not nothing here


def test_the_gated_space_saves_as_format_6_loads_the_same_and_an_older_format_is_refused(gated, tux, shared_cache,
                                                                                      tmp_path):
    gated.save(tmp_path / "sp")
    meta = json.loads((tmp_path / "sp" / "space.json").read_text())
    assert meta["format_version"] == 6 and meta["modalities"]["image"]["projector"]["gate_q"] == BASE_GATE
    back = Space.load(tmp_path / "sp")
    x = image_feats(gated, tux, shared_cache, "val")
    assert np.allclose(back.project("image", x), gated.project("image", x), atol=1e-6)
    assert back.identity() == gated.identity()
    meta["format_version"] = 5
    (tmp_path / "sp" / "space.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match=r"space\.json.*gate needs format_version 6") as e:
        Space.load(tmp_path / "sp")
    assert "\n" not in str(e.value)


def test_the_recipe_sets_the_gate_only_with_the_bridge_prior_and_an_explicit_one_wins():
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {})
    assert cfg["ridge_prior"] == "bridge" and cfg["base_gate"] == BASE_GATE and "base_gate" in chosen
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {"base_gate": 0.0})
    assert cfg["base_gate"] == 0.0 and "base_gate" not in chosen
    _, cfg, _ = resolve_recipe("auto", ["image", "text"], None, {"ridge_prior": "zero"})
    assert "base_gate" not in cfg
    assert TrainConfig().resolved().base_gate == 0.0


def test_off_the_start_is_the_ungated_one_and_a_kernel_or_the_kept_bridge_records_why_none(tux, shared_cache, gated):
    off = Space.fit(tux, cache=shared_cache, base_gate=0.0, **KW)
    assert "gate" not in off.info["training"]["robust"]["ridge"]["image"] and off.projectors["image"].cfg.gate == 0
    assert torch.equal(off.projectors["image"].linear.weight, gated.projectors["image"].linear.weight)
    kern = Space.fit(tux, cache=shared_cache, **{**KW, "kernel_start": True})
    rec = kern.info["training"]["robust"]["ridge"]["image"]
    if rec["kernel"]["kept"]:  # the gate's record agrees with what the start is
        assert "kernel branch kept" in rec["gate"]["note"] and kern.projectors["image"].cfg.gate == 0
    else:
        assert rec["gate"]["support"] > 0
    from anybind.base_gate import no_gate_note
    assert "label bridge kept" in no_gate_note(True, False, True, True, False)
    assert "no val pairs" in no_gate_note(True, False, False, False, False)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(), st.text(max_size=3),
                 st.just(10 ** 400), st.floats(0, 1).map(np.float32)))
def test_the_fit_and_the_cli_refuse_the_same_gate_values_in_one_line(q):
    import typer

    from anybind.cli.fit_ridge import check_base_gate
    from anybind.robust import check_robust

    def refused(f) -> bool:
        try:
            f()
        except (DataError, typer.BadParameter) as e:
            assert "\n" not in str(e)
            return True
        return False

    ok = not isinstance(q, (bool, str)) and not (type(q) is int and q > 10 ** 300) and math.isfinite(q) and 0 <= q <= 1
    assert refused(lambda: check_robust(TrainConfig(base_gate=q, ridge_prior="bridge", init="ridge"))) is not ok
    if not isinstance(q, (bool, str)):
        assert refused(lambda: check_base_gate(q)) is not ok


def test_a_gate_without_the_bridge_prior_is_refused_before_encoding(tux, shared_cache, never_encoded):
    with pytest.raises(DataError, match="base_gate=0.5 gates the base-encoder block.*ridge_prior='zero'"):
        Space.fit(tux, cache=shared_cache, base_gate=0.5, ridge_prior="zero", **KW)
    assert never_encoded == []


def test_streaming_and_in_memory_gated_starts_agree_and_the_cli_flag_reaches_them(tux, shared_cache, tmp_path):
    mem = Space.fit(tux, cache=shared_cache, base_gate=0.3, **KW)
    res = CliRunner().invoke(app, ["fit", str(tux.path), "--modalities", "image,text", "--epochs", "0", "--seed", "0",
                                   "--no-kernel-start", "--select-se", "0", "--base-gate", "0.3", "--stream",
                                   "--cache", str(shared_cache), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    st_ = Space.load(tmp_path / "s")
    a, b = mem.info["training"]["robust"]["ridge"]["image"]["gate"], st_.info["training"]["robust"]["ridge"]["image"]["gate"]
    assert a["q"] == b["q"] == 0.3 and a["support"] == b["support"] and a["refs"] == b["refs"]
    assert torch.allclose(mem.projectors["image"].gate_support, st_.projectors["image"].gate_support, atol=1e-5)
    x = image_feats(mem, tux, shared_cache, "val")
    assert (mem.project("image", x) * st_.project("image", x)).sum(1).min() > 0.999
    res = CliRunner().invoke(app, ["fit", str(tux.path), "--base-gate", "2", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--base-gate" in res.output and not (tmp_path / "b").exists()


def test_the_gate_reference_is_own_val_whatever_select_data_chooses_on(gated, tux, shared_cache):
    """``select_data`` replaces val for the choices (alpha, guard); the gate's reference stays the own val inputs'
    nearness (module doc, README): here the selection is the training records themselves, whose nearness is 1."""
    sel = Space.fit(tux, cache=shared_cache, select_data=tux.path, select_split="train", **KW)
    a, b = gated.projectors["image"], sel.projectors["image"]
    assert b.cfg.gate_refs == a.cfg.gate_refs == sum(1 for r in tux.split("val") if r.has("image") and r.has("text"))
    assert torch.allclose(b.gate_ref, a.gate_ref, atol=1e-6) and float(b.gate_ref.max()) < 0.999


def test_each_own_val_input_counts_itself_in_the_ecdf_whatever_the_thread_count(gated, tux, shared_cache):
    """The reference is built from the own val inputs' nearness itself: each of them sits on a step of the ECDF, so
    the k-th nearest of n gets ``F = k / n`` (it counts itself) with 1 thread and with 2 -- float rounding that
    differs with the thread count must not move it one rank (issue 16: the recorded gated val moved with it)."""
    pr = gated.projectors["image"]
    x = image_feats(gated, tux, shared_cache, "val")
    assert len(x) == pr.cfg.gate_refs and np.diff(pr.gate_ref.numpy()).min() > 1e-4  # distinct steps
    gs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            with torch.no_grad():
                zb = pr.standardized(torch.from_numpy(x))[:, :pr.cfg.gate_base]
                gs.append(gate_weights(zb, pr.gate_support, pr.gate_ref, pr.cfg.gate_q))
        finally:
            torch.set_num_threads(before)
    n = len(x)
    want = np.minimum(1.0, np.arange(1, n + 1) / (n * pr.cfg.gate_q))
    assert torch.equal(gs[0], gs[1]) and np.allclose(np.sort(gs[0].numpy()), want, atol=1e-6), (gs, want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-10 ** 4, 10 ** 4), min_size=1, max_size=40, unique=True), st.integers(-4, 4),
       st.sampled_from([0.1, 0.2, 0.5, 1.0]), st.data())
def test_a_nearness_within_a_few_ulps_of_a_reference_value_gets_the_same_gate(ref, ulps, q, data):
    """Rounding noise (a few float32 ulps, as another thread count or machine gives a 1280-d cosine) around a
    reference value does not change the gate: the ECDF counts a value within its tolerance as reached."""
    r = torch.sort(torch.tensor(ref, dtype=torch.float32) / 10 ** 4).values  # steps >= 1e-4 apart, in [-1, 1]
    i = data.draw(st.integers(0, len(r) - 1))
    exact = r[i : i + 1]
    noisy = exact.clone()
    for _ in range(abs(ulps)):
        noisy = torch.nextafter(noisy, torch.tensor([np.inf if ulps > 0 else -np.inf], dtype=torch.float32))
    g = ecdf_gate(noisy, r, q)
    assert torch.equal(g, ecdf_gate(exact, r, q)) and math.isclose(float(g), min(1.0, (i + 1) / (len(r) * q)), rel_tol=1e-6)

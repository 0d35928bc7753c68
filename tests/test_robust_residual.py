"""The label bridge as a residual branch (issue 16): ridge_prior="residual" starts at the bridge itself and
fine-tuning learns a zero-initialised residual on top; WiSE-FT's alpha scales that residual."""

import numpy as np
import pytest
import torch

from anybind.train import TrainConfig, train_space

from test_robust import _r1, bridged_features


def test_the_residual_start_is_the_bridge_and_wise_scales_the_residual(monkeypatch):
    fs = bridged_features(monkeypatch)
    cfg = dict(lock="text", init="ridge", hidden=16, ridge_prior="residual", lr=1e-3)
    start = train_space(fs, TrainConfig(epochs=0, **cfg), progress=False)
    rec = start.info["training"]["robust"]["ridge"]["image"]
    assert rec == {"alpha": None, "prior": "residual"}
    idx = fs.split_idx("test")
    X = fs.get("image", idx)
    Xb = X[:, 100:] - start.projectors["image"].mean.numpy()[100:]  # the centred bridge block
    e = start.project("image", X)
    cos = (e * Xb).sum(1) / np.linalg.norm(Xb, axis=1)
    assert cos.min() > 0.9999  # the start is the bridge exactly: a zero residual
    assert torch.count_nonzero(start.projectors["image"].linear.weight[:, :100]) == 0  # the base block unused
    # the ridge's own shrinkage (bridge prior, alpha chosen on val) starts elsewhere: more than the bridge
    ridge = train_space(fs, TrainConfig(epochs=0, **{**cfg, "ridge_prior": "bridge"}), progress=False)
    assert ridge.info["training"]["robust"]["ridge"]["image"]["alpha"] is not None
    assert not torch.equal(ridge.projectors["image"].linear.weight, start.projectors["image"].linear.weight)
    # fine-tuning learns a residual; WiSE-FT alpha a: the bridge + a * residual
    full = train_space(fs, TrainConfig(epochs=5, patience=5, wise=1.0, **cfg), progress=False)
    half = train_space(fs, TrainConfig(epochs=5, patience=5, wise=0.5, **cfg), progress=False)
    w0 = start.projectors["image"].linear.weight
    w1, wh = full.projectors["image"].linear.weight, half.projectors["image"].linear.weight
    assert (w1 - w0).abs().max() > 1e-4
    assert torch.allclose(wh, w0 + 0.5 * (w1 - w0), atol=1e-6)
    assert _r1(start, fs, "test") > 0.05  # the bridge alone already retrieves (20 train pairs; chance 1/320)


def test_the_residual_prior_needs_a_ridge_start(monkeypatch):
    from anybind.errors import DataError

    fs = bridged_features(monkeypatch)
    with pytest.raises(DataError, match="use init='ridge'"):
        train_space(fs, TrainConfig(lock="text", init="random", ridge_prior="residual", epochs=1), progress=False)


def test_residual_start_chosen_on_held_out_data_never_loses_to_the_bridge_there(monkeypatch):
    """Issue 16 (h150): with ``ridge_prior="residual"`` the WiSE-FT grid's alpha 0 *is* the label bridge, so a fit
    whose epoch and alpha are chosen on another domain's records (``select``, ``Space.fit(select_data=...)``) scores
    at least the bridge's score there: training cannot lose to the training-free start on the data the user holds out."""
    from anybind.train import val_score

    # 200 pairs teach the base block at home; the other domain maps its base block differently, its bridge alike
    fs = bridged_features(monkeypatch, n_train=200, bridge_noise=3.0)
    other = bridged_features(monkeypatch, n_train=200, bridge_noise=3.0, seed=1)
    cfg = dict(lock="text", init="ridge", hidden=16, ridge_prior="residual", lr=1e-3, epochs=8, patience=8, wise="auto")
    away = train_space(fs, TrainConfig(**cfg), progress=False, select=other)
    bridge = train_space(fs, TrainConfig(**{**cfg, "epochs": 0}), progress=False)
    idx, pairs = other.split_idx("val"), [("image", "text")]
    b = val_score(bridge.projectors, other, idx, pairs)
    rec = away.info["training"]["robust"]
    assert rec["wise_val"]["0.0"] == pytest.approx(b, abs=1e-9)  # the grid's start, scored on the other domain
    got = val_score(away.projectors, other, idx, pairs)
    assert got == pytest.approx(away.info["metrics"]["val/score"], abs=1e-9) == pytest.approx(max(rec["wise_val"].values()))
    assert got >= b - 1e-9
    home = train_space(fs, TrainConfig(**cfg), progress=False)  # chosen on its own val split instead
    own = fs.split_idx("val")
    assert val_score(home.projectors, fs, own, pairs) > val_score(bridge.projectors, fs, own, pairs) + 0.05
    assert val_score(home.projectors, other, idx, pairs) < b - 0.02  # what helps at home loses away ...
    assert home.info["training"]["robust"]["wise_alpha"] > rec["wise_alpha"]  # ... so away keeps more of the bridge

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

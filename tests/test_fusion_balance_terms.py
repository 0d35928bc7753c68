"""Balancing the modalities of a fusion model (OGM-GE, AGM) and the Shapley contributions they report: the
coefficients on hand-made losses, and training on data where one modality is nearly clean and the others noisy."""

import torch

from anybind import Space, load_manifest
from anybind.fusion import FusionClassifier, agm_coefficients, full_outputs, ogm_coefficients, shapley_values, subset_outputs
from test_fusion import FAST_SPACE, make_labelled


def test_ogm_coefficient_below_one_for_dominant_modality():
    ratios, coeffs = ogm_coefficients(torch.tensor([0.9, 0.3, 0.3]), alpha=0.5)
    assert coeffs[0] < 1 and coeffs[1] == 1 and coeffs[2] == 1
    assert ratios[0] > 1 > ratios[1]


def test_ogm_modulates_the_dominant_modality_in_training(tmp_path):
    m, specs = make_labelled(tmp_path, noise=(0.05, 2.5, 2.5))  # sa nearly clean, sb/sc very noisy
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST_SPACE)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="late", balance="ogm-ge", epochs=10, hidden=32)
    clf.fit(man, "cls", cache=tmp_path / "c")
    last = clf.history_[-1]
    assert last["ogm_coeff"]["sa"] < 1
    assert last["ogm_coeff"]["sa"] < min(last["ogm_coeff"]["sb"], last["ogm_coeff"]["sc"])
    assert last["contribution"]["sa"] >= last["contribution"]["sb"]


def test_agm_coefficients_slow_the_modality_pulling_ahead():
    # equal standing so far; now modality 0's mono-modal loss drops far below the others'
    ratio, coeff = agm_coefficients(torch.tensor([0.2, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]), alpha=0.5)
    assert coeff[0] < 1 < coeff[1] and torch.isclose(coeff[1], coeff[2])
    assert ratio[0] > 1 > ratio[1]
    # a modality that is usually ahead and stays as far ahead is left alone
    _, coeff = agm_coefficients(torch.tensor([0.2, 1.0]), torch.tensor([0.2, 1.0]), alpha=0.5)
    assert torch.allclose(coeff, torch.ones(2))
    # absent from the batch (NaN): coefficient 1, and with one valid modality nothing is modulated
    _, coeff = agm_coefficients(torch.tensor([0.2, float("nan"), 1.0]), torch.tensor([1.0, 1.0, 1.0]), alpha=0.5)
    assert coeff[1] == 1 and coeff[0] < 1
    _, coeff = agm_coefficients(torch.tensor([0.2, float("nan")]), torch.tensor([1.0, 1.0]), alpha=0.5)
    assert torch.equal(coeff, torch.ones(2))


def test_shapley_mono_outputs_match_the_definition_and_sum_to_the_fused_output():
    g = torch.Generator().manual_seed(0)
    n, M, K = 40, 3, 5
    x, W, inter = torch.randn(n, M, generator=g), torch.randn(M, K, generator=g), torch.randn(K, generator=g)

    def f(rows, sub):  # a non-additive set function of the present modalities
        return torch.tanh((x[rows] * sub.float()) @ W) + sub.all(1, keepdim=True).float() * inter

    mask = torch.rand((n, M), generator=g) < 0.6
    mask[~mask.any(1), 1] = True
    outs = subset_outputs(f, mask, K)
    phi = shapley_values(outs, mask)
    assert torch.allclose(phi.sum(1), full_outputs(outs, mask), atol=1e-5)
    assert torch.all(phi[~mask] == 0)
    r = int(torch.nonzero(mask.all(1))[0])  # a row with all three: check phi_0 by the definition
    one = lambda *mods: f(torch.tensor([r]), torch.tensor([[i in mods for i in range(M)]]))[0]  # noqa: E731
    want = (one(0) / 3 + (one(0, 1) - one(1)) / 6 + (one(0, 2) - one(2)) / 6 + (one(0, 1, 2) - one(1, 2)) / 3)
    assert torch.allclose(phi[r, 0], want, atol=1e-5)


def test_agm_training_reports_contributions_and_slows_the_dominant_modality(tmp_path):
    m, specs = make_labelled(tmp_path, noise=(0.05, 2.5, 2.5))  # sa nearly clean, sb/sc very noisy
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST_SPACE)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="concat", dropout=0.0, reconstruct=False, balance="agm",
                           epochs=12, hidden=32).fit(man, "cls", cache=tmp_path / "c")
    hist = clf.history_
    for ep in hist:
        assert set(ep["agm_coeff"]) == set(ep["shapley"]) == set(ep["agm_mono_loss"]) == {"sa", "sb", "sc"}
    # the clean modality carries the fused output (Shapley) and has the lowest mono-modal loss
    assert hist[-1]["shapley"]["sa"] > max(hist[-1]["shapley"]["sb"], hist[-1]["shapley"]["sc"])
    assert hist[-1]["agm_mono_loss"]["sa"] < min(hist[-1]["agm_mono_loss"]["sb"], hist[-1]["agm_mono_loss"]["sc"])
    # while it pulls ahead (early epochs) its gradient is scaled down, the others' up
    early = hist[0]["agm_coeff"]
    assert early["sa"] < 1 < min(early["sb"], early["sc"]), early
    assert clf.evaluate(man.split("test"), cache=tmp_path / "c")["sa+sb+sc"] > 0.8

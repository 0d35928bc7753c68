"""The ridge start scores each map on val once: the chosen alpha's score is ridge_select's, reused by the start guard
and as the kernel family's base (the numbers a fresh scoring gives); the prior is scaled onto the targets once, the
ridge's prior and the kernel family's ``W0`` alike; the kernel family is one helper
(:func:`anybind.ridge.kernel_or_linear`) for Space.fit's start and progressive binding's."""

import numpy as np
import pytest
import torch

from anybind import Space
from anybind.projectors import Projector, ProjectorConfig
from anybind.ridge import GUARD_ALPHAS, RIDGE_ALPHAS, kernel_or_linear
from anybind.ridge_kernel import KERNEL_ALPHAS, KERNEL_TAUS
from test_kernel_start import tux_small  # noqa: F401 -- the 60 real Tux Paint stamps, with their label bridge


def _spy_scaling(monkeypatch, module):
    """Each prior ``module`` scales (:func:`~anybind.ridge_kernel.scaled_prior`) and each ``W0`` its kernel family
    (``kernel_or_linear``) starts from, in call order."""
    scaled, kernel_w0 = [], []
    real_scale, real_kernel = module.scaled_prior, module.kernel_or_linear

    def kernel_or_linear(pr, alpha, W, W0, *a, **k):
        kernel_w0.append(W0)
        return real_kernel(pr, alpha, W, W0, *a, **k)

    monkeypatch.setattr(module, "scaled_prior", lambda *a: scaled.append(real_scale(*a)) or scaled[-1])
    monkeypatch.setattr(module, "kernel_or_linear", kernel_or_linear)
    return scaled, kernel_w0


def test_space_fit_scores_each_map_once_with_a_fresh_scorings_numbers(request, shared_cache, monkeypatch):
    import anybind.ridge as ridge

    man = request.getfixturevalue("tux_small")

    passes, starts, real_ranks, real_prior = [], [], ridge.query_ranks, ridge.prior_ridge

    def prior_ridge(G, R, n, score, **kw):
        alpha, W, g = real_prior(G, R, n, score, **kw)
        starts.append((score, W, dict(kw["scores"]), g, kw["W0"]))
        return alpha, W, g

    monkeypatch.setattr(ridge, "query_ranks", lambda *a, **k: passes.append(1) or real_ranks(*a, **k))
    monkeypatch.setattr(ridge, "prior_ridge", prior_ridge)
    scaled, kernel_w0 = _spy_scaling(monkeypatch, ridge)
    space = Space.fit(man, modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    rec = space.info["training"]["robust"]["ridge"]["image"]
    assert rec["prior"] == "bridge" and "guard" in rec and "grid" in rec["kernel"]  # the whole start ran
    [(score, W, scored, guard, W0)] = starts
    # the prior is scaled once: the ridge shrinks towards the very W0 the kernel family starts from
    assert len(scaled) == 1 and W0 is scaled[0] and len(kernel_w0) == 1 and kernel_w0[0] is W0
    monkeypatch.setattr(ridge, "query_ranks", real_ranks)
    assert scored["val"] == float(np.mean(score(W)))  # the kept linear start's score, as a fresh scoring gives it
    assert rec["kernel"]["base_val"] == round(scored["val"], 6)
    assert round(scored["val"], 6) == guard["ridge_val" if guard["kept"] == "ridge" else "start_val"]
    # each val pass is two query_ranks (both directions): the path, the prior, the kernel grid; nothing twice
    assert len(passes) // 2 == len(RIDGE_ALPHAS + GUARD_ALPHAS) + 1 + len(KERNEL_TAUS) * len(KERNEL_ALPHAS)


@pytest.mark.parametrize("frames, has_val, note", [(2, False, "no val pairs"), (2, True, "a frame-pooling projector"),
                                                   (0, False, "no val pairs")])
def test_the_kernel_family_says_why_it_was_not_tried_and_changes_nothing(frames, has_val, note):
    """One order for both callers: no val pairs first (progressive binding said the frame-pooling projector first)."""
    pr = Projector(ProjectorConfig(in_dim=2 * 5 if frames else 4, out_dim=3, kind="linear", frames=frames))
    W, W0 = torch.ones(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    never = lambda *a: pytest.fail("nothing is scored or read")  # noqa: E731
    alpha, got, rec = kernel_or_linear(pr, 0.3, W, W0, never, never, 0.5, has_val=has_val)
    assert alpha == 0.3 and got is W and rec == {"kept": False, "note": note} and pr.cfg.kernel == 0


def test_progressive_binding_scores_each_map_once_with_a_fresh_scorings_numbers(tux_dir, shared_cache,
                                                                               tmp_path_factory, monkeypatch):
    """The same through progressive binding (progressive_fit.ridge_start): a bridged image encoder added to a
    text-locked space on 60 real Tux Paint stamps (every fifth in val) -- the ridge path with the guard, the prior
    and the kernel grid each scored on val once, the chosen alpha's score reused by the guard and the kernel base."""
    from anybind import load_manifest, progressive_fit
    from test_progressive_guard import BRIDGED, photo_pairs

    data = photo_pairs(tux_dir, tmp_path_factory.mktemp("once"), 60) / "manifest.jsonl"
    base = Space.fit(load_manifest(data, modalities=["image", "text"]), modalities=["image", "text"],
                     encoders={"image": "image:efficientnet-lite0"}, lock="text", init="ridge", recipe="plain",
                     cache=shared_cache, progress=False, epochs=0, hidden=16, seed=0)
    passes, starts, inside = [], [], []
    real_score, real_prior, real_start = progressive_fit.val_score, progressive_fit.prior_ridge, \
        progressive_fit.ridge_start

    def prior_ridge(G, R, n, score, **kw):
        alpha, W, g = real_prior(G, R, n, score, **kw)
        starts.append((score, W, dict(kw["scores"]), g, kw["W0"]))
        return alpha, W, g

    def ridge_start(*a, **k):
        inside.append(1)
        try:
            return real_start(*a, **k)
        finally:
            inside.pop()

    def val_score(*a, **k):
        passes.append(bool(inside))
        return real_score(*a, **k)

    monkeypatch.setattr(progressive_fit, "val_score", val_score)
    monkeypatch.setattr(progressive_fit, "prior_ridge", prior_ridge)
    monkeypatch.setattr(progressive_fit, "ridge_start", ridge_start)
    scaled, kernel_w0 = _spy_scaling(monkeypatch, progressive_fit)
    sp = base.add_modality("photo", BRIDGED, str(data), anchors=["text"], cache=shared_cache, epochs=0, seed=0,
                           select_se=0)  # the scores as means (the small-val rule scores per item)
    rec = sp.info["lineage"][-1]["ridge_start"]["photo"]
    assert rec["prior"] == "bridge" and "guard" in rec and "grid" in rec["kernel"]  # the whole start ran
    [(score, W, scored, guard, W0)] = starts
    assert len(scaled) == 1 and W0 is scaled[0] and len(kernel_w0) == 1 and kernel_w0[0] is W0  # scaled once
    n_start = sum(passes)  # the val passes inside the start (one val_score each: both directions)
    monkeypatch.setattr(progressive_fit, "val_score", real_score)
    assert scored["val"] == score(W)  # the kept linear start's score, as a fresh scoring gives it
    assert rec["kernel"]["base_val"] == round(scored["val"], 6)
    assert round(scored["val"], 6) == guard["ridge_val" if guard["kept"] == "ridge" else "start_val"]
    # the path (with the guard's alphas), the prior, the kernel grid; nothing twice
    assert n_start == len(RIDGE_ALPHAS + GUARD_ALPHAS) + 1 + len(KERNEL_TAUS) * len(KERNEL_ALPHAS)


def test_an_exact_prior_start_refuses_the_kernel_family_in_one_line():
    """exact_prior starts at the scaled prior (no ridge, no val score to beat): the kernel family beside it is refused
    before anything is read."""
    from anybind.ridge import locked_ridge_start

    never = lambda *a: pytest.fail("nothing is read")  # noqa: E731
    with pytest.raises(ValueError, match="exact_prior starts at the scaled prior"):
        locked_ridge_start({"image": None, "text": None}, "text", never, never, exact_prior=True, kernel={})

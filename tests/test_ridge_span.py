"""The span lever of the ridge start (issue 16, ``TrainConfig.ridge_span``): every candidate of the start restricted to
the span of the training targets, ``W P + W0 (I - P)`` and kernel coefficients ``A P``, so the label-bridge prior's
output outside what the training text covers is kept; a no-op where the targets span the space."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, ridge, ridge_span
from anybind.errors import DataError
from anybind.projectors import Projector, ProjectorConfig


@pytest.fixture(scope="module")
def tux_small(tux_subset):
    """60 real Tux Paint stamps (image, text), every fifth in val: 48 training captions, far fewer than 384 dims."""
    return tux_subset(60, 5, "span")


@pytest.fixture(scope="module")
def feats(tux_small, shared_cache):
    """The real (image, text) features of the train and val records, as the fit encodes them."""
    from anybind.cache import FeatureCache
    from anybind.featureset import selection_set

    space = Space.fit(tux_small, modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    out = {}
    for split in ("train", "val"):
        fs = selection_set([tux_small], space.encoders, FeatureCache(shared_cache), split=split, progress=False)
        idx = fs.split_idx("val")  # selection_set relabels its records "val"
        out[split] = (fs.get("image", idx), fs.get("text", idx))
    return out


def _start(feats, lock, out_dim, *, span, block=None, seed=0, inside=None):
    """:func:`anybind.ridge.locked_ridge_start` on the real features: a linear image projector onto ``lock``'s
    output (``out_dim``), a seeded prior, the guard and the kernel family on; returns (projector, span record)."""
    (xi, xt), va = feats["train"], feats["val"]
    g = torch.Generator().manual_seed(seed)
    pr = Projector(ProjectorConfig(in_dim=xi.shape[1], out_dim=out_dim, kind="linear"))
    prior = torch.randn(xi.shape[1], out_dim, generator=g, dtype=torch.float64) / xi.shape[1] ** 0.5
    if inside is not None:  # a prior with no output outside the targets' span (I - inside)
        prior = prior - prior @ inside
    step = block or len(xi)
    blocks = [(xi[i:i + step], xt[i:i + step]) for i in range(0, len(xi), step)]
    rec: dict | None = {} if span else None
    ridge.locked_ridge_start({"image": pr, "text": lock}, "text", lambda m: blocks, lambda m: va,
                             prior=lambda m: prior, guard={}, kernel={}, seed=seed, span=rec)
    return pr, rec


def test_full_span_targets_leave_the_start_bit_identical(feats):
    """8-d targets (a seeded linear view of the real text features) over 48 training pairs span their space: the
    lever changes no bit of the linear map or the kernel branch."""
    lock = torch.nn.Linear(feats["train"][1].shape[1], 8, bias=False)
    torch.nn.init.normal_(lock.weight, generator=torch.Generator().manual_seed(1))
    off, _ = _start(feats, lock, 8, span=False)
    on, rec = _start(feats, lock, 8, span=True)
    assert rec == {"image": {"rank": 8, "dim": 8, "tol": ridge_span.SPAN_TOL}}
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), on.state_dict().values(), strict=True))


def test_a_prior_without_output_outside_the_span_leaves_the_start_bit_identical(feats):
    """384-d text targets of 48 captions (far from spanning) but a prior whose output lies inside their span: the
    restriction would change nothing but rounding, so it is not applied (bit for bit), and the record says why."""
    Q, rank = _out_of_span(feats)
    off, _ = _start(feats, torch.nn.Identity(), 384, span=False, inside=Q)
    on, rec = _start(feats, torch.nn.Identity(), 384, span=True, inside=Q)
    assert rec["image"]["rank"] == rank < 384 and rec["image"]["prior_out"] <= ridge_span.SPAN_TOL
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), on.state_dict().values(), strict=True))
    _, rec = _start(feats, torch.nn.Identity(), 384, span=True)  # a generic prior: most of it outside 48 dims
    assert rec["image"]["prior_out"] > 0.5


def _spy_prior(monkeypatch):
    seen = []
    real = ridge.scaled_prior

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(ridge, "scaled_prior", spy)
    return seen


def _out_of_span(feats):
    T = torch.from_numpy(feats["train"][1]).double()
    s, U = torch.linalg.eigh(T.T @ T)
    Uk = U[:, s > ridge_span.SPAN_TOL * s.max()]
    return torch.eye(len(s), dtype=torch.float64) - Uk @ Uk.T, Uk.shape[1]


def test_out_of_span_output_is_the_priors_and_only_with_the_lever(feats, monkeypatch):
    """384-d text targets of 48 training captions: with the lever the start's linear output outside their span is the
    scaled prior's exactly (to float32); without it the ridge shrinks it away (the kernel branch's: below)."""
    Q, rank = _out_of_span(feats)
    assert rank < 384
    seen = _spy_prior(monkeypatch)
    on, rec = _start(feats, torch.nn.Identity(), 384, span=True)
    assert rec["image"]["rank"] == rank
    W0 = seen[0]
    W = on.linear.weight.detach().double().T
    scale = float(W0.abs().max())
    assert float(((W - W0) @ Q).abs().max()) < 1e-5 * scale
    seen.clear()
    off, _ = _start(feats, torch.nn.Identity(), 384, span=False)
    Woff = off.linear.weight.detach().double().T
    if not torch.equal(Woff.float(), seen[0].float()):  # the guard kept the ridge: it moved the out-of-span output
        assert float(((Woff - seen[0]) @ Q).abs().max()) > 1e-3 * scale


@settings(max_examples=4, deadline=None)
@given(block=st.integers(1, 47))
def test_blocks_of_any_size_give_the_in_memory_start(feats, block):
    """The targets' Gram is summed over the blocks (the streaming trainer's shards): the same span, the same choice
    and the same map as one block, to summation order (the ridge solve amplifies the order's rounding on the small
    entries, so each tensor is compared by its relative Frobenius error, not entry by entry)."""
    whole, r1 = _start(feats, torch.nn.Identity(), 384, span=True)
    cut, r2 = _start(feats, torch.nn.Identity(), 384, span=True, block=block)
    assert r1 == r2 and whole.cfg.kernel == cut.cfg.kernel
    for (k, a), b in zip(whole.state_dict().items(), cut.state_dict().values(), strict=True):
        err = float((a.double() - b.double()).norm() / a.double().norm().clamp_min(1e-12))
        assert err < 1e-4, (k, err)


def test_span_on_a_fit_records_the_rank_and_needs_the_bridge_prior(tux_small, shared_cache):
    kw = {"modalities": ["image", "text"], "cache": shared_cache, "epochs": 0, "progress": False, "seed": 0}
    space = Space.fit(tux_small, ridge_span=True, **kw)
    rec = space.info["lineage"][-1]["ridge_start"]["image"]["span"]
    distinct = len({r.values["text"] for r in tux_small.split("train")})
    assert rec["dim"] == 384 and rec["rank"] <= distinct < 384
    with pytest.raises(DataError, match="ridge_span=True keeps the label bridge"):
        Space.fit(tux_small, ridge_span=True, ridge_prior="zero", **kw)
    with pytest.raises(DataError, match="ridge_span must be True or False"):
        Space.fit(tux_small, ridge_span=1, **kw)
    assert json.loads(json.dumps(rec)) == rec and rec["tol"] == ridge_span.SPAN_TOL  # plain values: saved with the space


def test_the_kernel_branch_adds_nothing_outside_the_span(feats):
    """The kernel family on a seeded prior's residual (real features, 48 training pairs, chosen on the val pairs):
    restricted, the chosen branch's coefficients have nothing outside the targets' span; unrestricted, they cancel
    the prior's output there (what the lever keeps)."""
    import math

    import torch.nn.functional as F

    from anybind.projectors import kernel_rows
    from anybind.ridge_kernel import kernel_start

    Q, _ = _out_of_span(feats)
    (xi, xt), (vi, vt) = feats["train"], feats["val"]
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(xi.shape[1], xt.shape[1], generator=g, dtype=torch.float64) / xi.shape[1] ** 0.5
    zv, tv = torch.from_numpy(vi), F.normalize(torch.from_numpy(vt).float(), dim=-1)

    def score(b):  # the val pairs' mean cosine with the prior plus that branch
        return float((F.normalize(zv.float() @ W0.float() + kernel_rows(zv, *b), dim=-1) * tv).sum(-1).mean())

    Z, T = torch.from_numpy(xi), torch.from_numpy(xt)
    on, rec = kernel_start(Z, T, W0, score, -math.inf, span=torch.eye(len(Q), dtype=torch.float64) - Q)
    off, _ = kernel_start(Z, T, W0, score, -math.inf)
    assert rec["kept"] and on is not None and off is not None
    scale = float(off[1].abs().max())
    assert float((on[1].double() @ Q).abs().max()) < 1e-5 * scale
    assert float((off[1].double() @ Q).abs().max()) > 1e-2 * scale

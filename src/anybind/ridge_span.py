"""The span lever of the ridge start (issue 16; split out of :mod:`anybind.ridge`): a modality with a prior restricts
every candidate map to the span of its training targets and keeps the prior's output outside it
(:func:`target_span`, :func:`span_noop`, :func:`span_restrict`; ``TrainConfig.span``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: the span lever's numerical rank: eigenvalues of ``T'T`` above this times the largest count (singular values of
#: ``T`` above 1e-3 of the largest); a rank-deficient ``T`` (fewer distinct targets than dimensions) has the rest at
#: float rounding (~1e-16 of the largest in float64), full-rank text targets far above it
SPAN_TOL = 1e-6


def target_span(TT: torch.Tensor, prior: torch.Tensor, G: torch.Tensor,
                tol: float = SPAN_TOL) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """``(P, record)``: the orthogonal projector onto the numerical range of ``T'T`` (``d x d``, the targets' Gram
    summed over the blocks), eigenvalues above ``tol`` times the largest, and its record (``rank``, ``dim``, and
    where the rank is short, ``prior_out``: the share of the ``prior``'s (``in x d``) squared output on the training
    inputs, ``||Z prior||^2`` with ``G = Z'Z``, outside that range).  ``P`` is None (no restriction,
    bit for bit) where the targets span the whole space, or where that share (as recorded, to 3 digits) is at most
    ``tol`` (:func:`span_noop`, which the start's log line reads off the record too): then the ridge
    path already keeps the prior's out-of-span output (``W Q = (G + lam I)^-1 lam W0 Q = W0 Q`` when ``G W0 Q = 0``)
    and the kernel's residual has none, so the restriction would change rounding only (the full Tux Paint, emoji and
    openclipart train sets span 381 of MiniLM's 384 dims, the other 3 holding no text)."""
    s, U = torch.linalg.eigh(TT.double())
    keep = s > tol * s.max().clamp_min(1e-300)
    rec: dict[str, Any] = {"rank": int(keep.sum()), "dim": len(s), "tol": tol}
    if rec["rank"] < len(s):
        W0, G = prior.double(), G.double()
        V = W0 @ U[:, ~keep]  # the prior's map into the out-of-span directions
        out = float((V * (G @ V)).sum() / (W0 * (G @ W0)).sum().clamp_min(1e-300))
        rec["prior_out"] = float(f"{out:.3g}")
    if span_noop(rec):
        return None, rec
    Uk = U[:, keep]
    return Uk @ Uk.T, rec


def span_noop(rec: Mapping[str, Any]) -> bool:
    """Whether :func:`target_span`'s record means no restriction: the targets span the space, or the prior's recorded
    out-of-span share is at most ``tol`` (one rule, read off the record by the start and its log line alike)."""
    return rec["rank"] == rec["dim"] or rec["prior_out"] <= rec["tol"]


def span_restrict(W: torch.Tensor, W0: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``W P + W0 (I - P)``: ``W``'s output inside the span ``P`` projects onto, the prior ``W0``'s outside it."""
    W, W0 = W.double(), W0.double()
    return W0 + (W - W0) @ P.double()

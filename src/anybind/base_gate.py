"""The base-encoder block's gate (issue 16, session 26): how much of a linear start's base-encoder correction an
input gets, by how near it is to the training inputs.

Under the label-bridge prior a projector reads ``base ++ bridge`` features and its ridge start is ``W = c W0 +
D_base + D_bridge`` (the prior has no base-encoder rows, so the base columns of ``W`` *are* ``D_base``).  Split on the
icons space, the bridge block's correction keeps other domains' text->image retrieval at the label bridge's level,
while the base-encoder correction -- what the training domain needs -- ranks other domains' pictures worse for a caption
(BENCHMARKS.md, transfer: the base-encoder block's gate).  The gate keeps that correction where the input is as near
the training inputs as the space's own val inputs are, and fades it out below:
``y = W z - (1 - g) z_base D_base``, ``g = min(1, F(nn) / q)``, ``nn`` the input's largest cosine with the training
inputs' (unit-normed, standardised) base blocks, ``F`` the ECDF of the same over the own val inputs, ``q`` the quantile
below which the fade starts (``TrainConfig.base_gate``).  An input at least as near as the nearest ``1 - q`` of own
val gets the full map.  ``F`` counts the reference values up to ``nn +`` :data:`ECDF_TOL`: each own val input's
``nn`` *is* a step of ``F`` (the reference is built from it), and float rounding that differs with the thread count
or the machine moves it a few ulps either side -- a strict count would then move it one rank (its ``g`` by
``1 / (n q)``, and the recorded gated val score with it); with the tolerance it always counts itself.  Buffers
``gate_support`` (training rows' unit base blocks, the kernel's support rule) and ``gate_ref`` (own val's sorted
``nn``, at most :data:`MAX_REFS` quantiles); space format 6.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: the most own-val reference values stored (more val inputs: that many evenly spaced quantiles of them)
MAX_REFS = 1024

#: the most inputs whose cosines with the support are held at once
GATE_ROWS = 1024

#: how far below a reference value a nearness still reaches it: above float32 rounding of a 1280-d cosine (about
#: 1e-7 to 1e-6), far below the gaps between own val inputs' nearness
ECDF_TOL = 1e-5


def nearest_cosine(zb: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Each row's largest cosine with the (unit-normed) ``support`` rows, in float32, chunked."""
    with torch.autocast(zb.device.type, enabled=False):
        zb = F.normalize(zb.float(), dim=-1)
        out = [(zb[i : i + GATE_ROWS] @ support.float().T).max(1).values for i in range(0, len(zb), GATE_ROWS)]
    return torch.cat(out) if out else zb.new_zeros(0)


def gate_weights(zb: torch.Tensor, support: torch.Tensor, ref: torch.Tensor, q: float) -> torch.Tensor:
    """``g`` per row of standardised base blocks ``zb``: ``min(1, F(nn) / q)`` (see the module doc)."""
    return ecdf_gate(nearest_cosine(zb, support), ref, q)


def ecdf_gate(nn: torch.Tensor, ref: torch.Tensor, q: float) -> torch.Tensor:
    """``min(1, F(nn) / q)``, ``F(x)`` the share of the sorted reference values ``ref`` at most ``x +``
    :data:`ECDF_TOL` (an own val input counts itself, whatever the rounding)."""
    x = nn.float().contiguous() + ECDF_TOL
    e = torch.searchsorted(ref.float().contiguous(), x, right=True).float() / max(len(ref), 1)
    return (e / q).clamp(max=1.0)


def reference(nn_val: torch.Tensor) -> torch.Tensor:
    """Own val's ``nn`` values sorted; above :data:`MAX_REFS`, that many evenly spaced quantiles of them."""
    v = torch.sort(nn_val.float()).values
    if len(v) > MAX_REFS:
        v = torch.quantile(v, torch.linspace(0, 1, MAX_REFS))
    return v


def check_gate(cfg: Any) -> str | None:
    """Why a projector config's gate cannot be built (None when it can, or when there is none)."""
    if not cfg.gate:
        return None if not (cfg.gate_base or cfg.gate_q or cfg.gate_refs) else "gate_base / gate_q / gate_refs without a gate"
    if cfg.gate < 1 or cfg.gate_refs < 1 or not 0 < cfg.gate_base < cfg.feat_dim:
        return (f"a base gate needs gate >= 1 support rows, gate_refs >= 1 and 0 < gate_base < the features' "
                f"{cfg.feat_dim}, got {cfg.gate}, {cfg.gate_refs} and {cfg.gate_base}")
    if not (math.isfinite(cfg.gate_q) and 0 < cfg.gate_q <= 1):
        return f"a base gate needs 0 < gate_q <= 1, got {cfg.gate_q}"
    if cfg.kind == "identity" or cfg.frames or cfg.kernel:
        return "a base gate needs a linear or mlp projector with no kernel branch that pools no frames"
    return None


def finite_number(x: Any) -> bool:
    """A finite int or float, numpy's included (a sweep's ``np.float32``), not a bool (nor ``np.bool_``); an int too
    large for a float is not one (it would overflow where it is used)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def gate_q_problem(q: Any) -> str | None:
    """What is wrong with ``TrainConfig.base_gate`` / ``--base-gate``, in words that follow its name; None when it
    is a number in [0, 1] (0: no gate; a bool is not one)."""
    if not finite_number(q) or not 0 <= q <= 1:
        return f"must be a number in [0, 1] (the own-val quantile below which the base-encoder correction fades), got {q!r}"
    return None


def gate_config_problem(q: Any, ridge_prior: str) -> str | None:
    """``TrainConfig.base_gate``'s one-line refusal (None: fine): a bad value, or a gate without the bridge prior."""
    if (problem := gate_q_problem(q)) is not None:
        return f"base_gate {problem}"
    if q > 0 and ridge_prior != "bridge":  # refused, not ignored: no base-encoder block to gate
        return (f"base_gate={q!r} gates the base-encoder block of a start under the label-bridge prior: use "
                f"ridge_prior='bridge' (got ridge_prior={ridge_prior!r})")
    return None


@torch.no_grad()
def fit_gate(pr: Any, support_z: torch.Tensor, val_z: torch.Tensor, d: int, q: float) -> dict[str, Any]:
    """Give projector ``pr`` (its linear map already set) the gate on its first ``d`` (base-encoder) features:
    ``support_z`` the training rows' standardised inputs (the support), ``val_z`` the own val inputs'; the record."""
    S = F.normalize(support_z[:, :d].float(), dim=-1)
    ref = reference(nearest_cosine(val_z[:, :d], S))
    pr.set_gate(S, ref, d, q)
    return {"q": float(q), "support": int(len(S)), "refs": int(len(ref)), "base_dim": int(d),
            "val_median_nn": round(float(ref[len(ref) // 2]), 6)}


def gated_map(z: torch.Tensor, W: torch.Tensor, support: torch.Tensor, ref: torch.Tensor, d: int,
              q: float) -> torch.Tensor:
    """``z W`` (``W``: in_dim x out_dim) with the base rows' share faded by the gate: what a gated linear start
    outputs (the ridge start scores it on val with this)."""
    return z @ W.float() - faded_share(z[:, :d], z[:, :d], W[:d].float().T, support, ref, q)


def faded_share(zb: torch.Tensor, xb: torch.Tensor, Wb: torch.Tensor, support: torch.Tensor, ref: torch.Tensor,
                q: float) -> torch.Tensor:
    """``(1 - g) xb Wb'``: the part of the base-encoder block's output the gate takes away (``zb``: the base blocks
    the gate reads, ``xb``: those the map reads -- after input dropout in training -- ``Wb``: out_dim x base width).
    What :meth:`anybind.projectors.Projector.uncentred` subtracts and :func:`gated_map` scores."""
    g = gate_weights(zb, support, ref, q)
    share = xb @ Wb.T
    return (1 - g)[:, None].to(share.dtype) * share


def own_val_z(pr: Any, pairs: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor | None:
    """The own val pairs' standardised inputs (``pairs``: their ``(inputs, lock features)``, None below 2 pairs): the
    gate's reference where the fit's choices are made on another set (``select_data``), or None."""
    return None if pairs is None else pr.standardized(torch.from_numpy(pairs[0]))


def base_width(prior: torch.Tensor | None) -> int | None:
    """The base-encoder block's width under a label-bridge prior (``in_dim`` x ``out_dim``: its leading all-zero rows,
    the bridge block's diagonal after them), or None (no prior, or none of that shape)."""
    if prior is None:
        return None
    zero = (prior.abs().sum(1) == 0).numpy()
    d = int(np.argmin(zero)) if not zero.all() else len(zero)
    return d if 0 < d < len(zero) and not zero[d:].any() else None


def gate_start(m: str, pr: Any, d: int | None, q: float, held: Any, val_z: torch.Tensor | None, start_kept: bool,
               W: torch.Tensor, val: float, score: Callable[[torch.Tensor, Any], np.ndarray]) -> dict[str, Any]:
    """The ridge start's gate step for modality ``m``'s projector (:func:`anybind.ridge.locked_ridge_start`): set it where
    it applies (:func:`no_gate_note` says why not: the record is then that note) and record it with the val score
    without it (``val``, already scored) and with it (``score(W, gate)``: per-pair scores, ``gate`` ``(support, ref,
    d, q)``)."""
    note = no_gate_note(d is not None, bool(pr.cfg.kernel), start_kept, val_z is not None, bool(pr.cfg.frames))
    if note is not None:
        log.info("start: %r: no base-encoder gate: %s", m, note)
        return {"q": float(q), "note": note}
    rec = fit_gate(pr, held.rows()[0], val_z, d, q)
    rec["val"] = round(float(val), 6)  # the start's own score, as the ridge path scored it
    rec["val_gated"] = round(float(np.mean(score(W, (pr.gate_support, pr.gate_ref, d, q)))), 6)
    return rec


def no_gate_note(prior: bool, kernel_kept: bool, start_kept: bool, has_val: bool, frames: bool) -> str | None:
    """Why a modality's start gets no gate (None: it does)."""
    if not prior:
        return "no label-bridge prior (no base-encoder block to gate)"
    if frames:
        return "a frame-pooling projector"
    if not has_val:
        return "no val pairs (no own-val reference)"
    if kernel_kept:
        return "a kernel branch kept (already local to the training inputs)"
    if start_kept:
        return "the label bridge kept (no base-encoder correction)"
    return None


__all__ = ["ECDF_TOL", "MAX_REFS", "base_width", "check_gate", "ecdf_gate", "faded_share", "finite_number",
           "fit_gate", "gate_config_problem", "gate_q_problem", "gate_start", "gate_weights", "gated_map",
           "nearest_cosine", "no_gate_note", "own_val_z", "reference"]

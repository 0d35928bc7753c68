"""Modality balancing: OGM / OGM-GE and AGM gradient modulation, and Shapley mono-modal outputs.

OGM-GE (Peng et al., CVPR 2022): a modality whose unimodal confidence exceeds the others' gets its
branch gradient scaled by ``1 - tanh(alpha * (ratio - 1))`` (+ Gaussian noise of the gradient's
own scale for GE).

AGM (Li et al., ICCV 2023, "Boosting Multi-modal Model Performance with Adaptive Gradient
Modulation"): the fused output is split into per-modality *mono-modal outputs* by the Shapley value
over modality subsets, each subset's output obtained by masking the others out of the fused model
(``phi_m = sum_S |S|!(p-|S|-1)!/p! (f(S+m) - f(S))``, ``f(empty) = 0`` so that
``sum_m phi_m = f(all)``: the task loss is unchanged).  Each modality's mono-modal loss ``s_m``
(cross-entropy, or the regression loss, of ``phi_m``) is compared with the others':
``ratio_m = exp(mean_{k != m} s_k - s_m)`` (> 1: ``m`` is ahead), and with the same ratio computed
from running averages of the losses (``optimal_m``); the gradient that flows back through
``phi_m`` is scaled by ``coeff_m = exp(alpha * min(optimal_m - ratio_m, 10))``: a modality pulling
ahead of its usual standing is slowed down, one falling behind is sped up.  With two modalities
this is the authors' ``exp(s_v - s_a)``; with more, the others' mean replaces the single rival.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OGM coefficients from per-modality confidence scores (M,): ratio to the others' mean.

    ``ratio_m = s_m / mean_{k != m} s_k``; a dominant modality (ratio > 1) gets
    ``1 - tanh(alpha * (ratio - 1))`` (< 1), the others 1.  Modalities with a NaN score
    (absent in the batch) keep coefficient 1 and ratio NaN.
    """
    M = len(scores)
    ratios = torch.full((M,), float("nan"))
    coeffs = torch.ones(M)
    valid = ~torch.isnan(scores)
    if int(valid.sum()) < 2:
        return ratios, coeffs
    for i in range(M):
        if not valid[i]:
            continue
        others = [scores[k] for k in range(M) if k != i and valid[k]]
        r = scores[i] / (torch.stack(others).mean() + 1e-8)
        ratios[i] = r
        if r > 1:
            coeffs[i] = 1 - torch.tanh(alpha * (r - 1))
    return ratios, coeffs


def _discrepancy(losses: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``exp(mean_{k != m, valid} l_k - l_m)`` per valid modality, NaN elsewhere."""
    out = torch.full_like(losses, float("nan"))
    idx = torch.nonzero(valid).flatten()
    for i in idx.tolist():
        others = [losses[k] for k in idx.tolist() if k != i]
        out[i] = torch.exp(torch.stack(others).mean() - losses[i])
    return out


def agm_coefficients(losses: torch.Tensor, running: torch.Tensor, alpha: float, cap: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """AGM ``(ratio, coeff)`` per modality from the batch's mono-modal losses (M,) (lower is better)
    and their running averages (M,).  NaN entries (a modality absent from the batch, or not seen
    yet) get ratio NaN and coefficient 1; fewer than two valid modalities: all coefficients 1."""
    losses, running = losses.float(), running.float()
    M = len(losses)
    valid = ~torch.isnan(losses) & ~torch.isnan(running)
    coeffs = torch.ones(M)
    if int(valid.sum()) < 2:
        return torch.full((M,), float("nan")), coeffs
    ratio = _discrepancy(losses, valid)
    optimal = _discrepancy(running, valid)
    coeffs[valid] = torch.exp(alpha * torch.clamp(optimal[valid] - ratio[valid], max=cap))
    return ratio, coeffs


class RunningMean:
    """Per-modality running mean of the mono-modal losses over every step so far (AGM's
    ``train_score``); a modality absent from a batch keeps its value."""

    def __init__(self, M: int):
        self.value = torch.full((M,), float("nan"))
        self.count = torch.zeros(M)

    def update(self, losses: torch.Tensor) -> None:
        ok = ~torch.isnan(losses)
        self.count[ok] += 1
        prev = torch.nan_to_num(self.value, nan=0.0)
        self.value[ok] = prev[ok] + (losses[ok] - prev[ok]) / self.count[ok]


def scale_grad(x: torch.Tensor, c: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by ``c``."""
    return c * x + (1.0 - c) * x.detach()


def subset_outputs(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mask: torch.Tensor, n_out: int) -> list[torch.Tensor]:
    """The model's outputs for every subset of modalities: ``out[s]`` (n, n_out) is ``forward``
    given exactly the modalities in bitmask ``s``, for each row holding all of them, and 0 for
    the other rows (which :func:`shapley_values` never reads; ``out[0]`` is all zeros).  One call
    ``forward(rows, submask)`` over every (subset, row) pair stacked, so a batch costs one pass."""
    n, M = mask.shape
    bits = torch.tensor([1 << i for i in range(M)])
    row_bits = (mask.long() * bits).sum(1)
    rows, subs, owner = [], [], []
    for s in range(1, 1 << M):
        idx = torch.nonzero((row_bits & s) == s).flatten()
        if len(idx):
            rows.append(idx)
            subs.append(((bits & s) > 0)[None, :].expand(len(idx), M))
            owner.append(torch.full((len(idx),), s))
    outs = [mask.new_zeros((n, n_out), dtype=torch.float32) for _ in range(1 << M)]
    if not rows:
        return outs
    r, o = torch.cat(rows), torch.cat(owner)
    y = forward(r, torch.cat(subs))
    for s in range(1, 1 << M):
        sel = o == s
        if sel.any():
            outs[s] = outs[s].index_put((r[sel],), y[sel])
    return outs


def full_outputs(outs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Each row's output given all of its modalities, from :func:`subset_outputs`."""
    M = mask.shape[1]
    row_bits = (mask.long() * torch.tensor([1 << i for i in range(M)])).sum(1)
    stacked = torch.stack(outs, 0)  # (2^M, n, n_out)
    return stacked[row_bits, torch.arange(len(row_bits))]


def shapley_values(outs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Per-row Shapley values (n, M, n_out) of each present modality from the subset outputs of
    :func:`subset_outputs`; an absent modality gets 0, and ``phi.sum(1)`` equals the output
    given all of a row's modalities (``outs[row_bits]``)."""
    n, M = mask.shape
    bits = torch.tensor([1 << i for i in range(M)])
    row_bits = (mask.long() * bits).sum(1)
    p = mask.sum(1)
    fact = [math.factorial(k) for k in range(M + 1)]
    phi = outs[0].new_zeros((n, M, outs[0].shape[1]))
    for m in range(M):
        has_m = mask[:, m]
        for s in range(1 << M):
            if s & (1 << m):
                continue
            k = bin(s).count("1")
            ok = has_m & ((s & ~row_bits) == 0) & (p > k)
            if not ok.any():
                continue
            w = torch.tensor([fact[k] * fact[int(pp) - k - 1] / fact[int(pp)] if pp > k else 0.0 for pp in range(M + 1)])[p]
            w = torch.where(ok, w, torch.zeros_like(w))
            phi[:, m] = phi[:, m] + w[:, None] * (outs[s | (1 << m)] - outs[s])
    return phi

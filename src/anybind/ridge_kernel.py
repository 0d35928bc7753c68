"""The ridge start's prior scaling and its kernel family (issue 16): kernel ridge on the label-bridge prior's residual.

:func:`anybind.ridge.locked_ridge_start` scales the prior onto the targets (:func:`scaled_prior`) and, with
``kernel=True`` and a prior, also tries :func:`kernel_start`: the linear map stays the scaled prior ``W0`` and a
kernel branch (:meth:`anybind.projectors.Projector.set_kernel`) learns what it misses on the training pairs,

    ``A = (K + alpha n I)^-1 (T - Z W0)``,  ``K_ij = exp((cos(z_i, z_j) - 1) / tau)``,

``Z`` the standardised training inputs (the support, unit-normed), ``T`` the locked targets, over the grid
:data:`KERNEL_TAUS` x :data:`KERNEL_ALPHAS` (``lam = alpha n``).  Every candidate is scored on the val pairs with the
ridge path's criterion, and the best is kept only where it beats the linear start chosen (the best of the ridge path
and, with the start guard, the prior itself): the start is the best of the three on val.  An input far from every
training input gets a kernel term near zero and falls back on the bridge prior.  Above :data:`MAX_SUPPORT` training
pairs a seeded subset of that many (the seed: ``TrainConfig.seed``) is the support and the pairs ``A`` is fitted on:
memory and time are ``MAX_SUPPORT^2``, not ``n^2``.  The subset (:func:`support_rows`, :class:`SupportSample`) is the
rows whose seeded hash of their row index is smallest, kept in row order: drawn in one pass over blocks of any size
(the streaming trainer's shards) with at most ``MAX_SUPPORT`` + one block in memory, the same rows for the same seed
and data however they are cut into blocks, and every row, in order, when there are at most ``MAX_SUPPORT``.

Measured by helper h191 on saved features (BENCHMARKS.md, section defaults-closed-form-levers): Tux Paint val t->i
0.476 -> 0.58-0.61 over tau 0.3-0.5, alpha 1e-6..3e-4 with emoji val and Fashion-MNIST held out no lower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .epochs import se_of
from .errors import DataError


#: the kernel temperatures tried (cosine kernel exp((cos - 1) / tau)), chosen on val
KERNEL_TAUS = (0.3, 0.5, 1.0)
#: the kernel ridge shrinkages tried (lam = alpha * n), chosen on val
KERNEL_ALPHAS = (1e-6, 1e-5, 1e-4)
#: the most training pairs the kernel branch is fitted on and keeps as its support (a seeded subset above it)
MAX_SUPPORT = 4096


def scaled_prior(G: torch.Tensor, R: torch.Tensor, prior: torch.Tensor, t_norm2: torch.Tensor | float) -> torch.Tensor:
    """``c * prior`` (float64) scaled onto the targets: ``c = <Z prior, T> / ||Z prior||^2 = tr(prior' R) / tr(prior' G
    prior)``; where that is not positive (pairs that disagree with the prior, shuffled ones): ``||T|| / ||Z prior||``,
    its direction, never its opposite, at the targets' norm; where that is not positive either (targets that do not
    vary: every training caption the same, centred to zero), 1: the prior in its own units (the locked encoder's),
    never a zero map, whose embeddings are all alike and whose val score is a tie-break."""
    W0 = prior.double()
    norm2 = (W0 * (G.double() @ W0)).sum().clamp_min(1e-12)
    c = float((W0 * R.double()).sum() / norm2)
    if not c > 0:
        c = float((torch.as_tensor(t_norm2, dtype=torch.float64) / norm2).sqrt())
    if not (c > 0 and math.isfinite(c)):
        c = 1.0
    return W0 * c


def finite_map(W: torch.Tensor, m: str, alpha: float | None, anchors: float) -> torch.Tensor:
    """A ridge start's map ``W`` in float32, refused in one line where it is not finite there (an overflow: a huge
    class-anchor weight ``anchors``, huge features) -- else saved as is, NaN or infinite weights."""
    Wf = W.float()
    if not torch.isfinite(Wf).all():
        raise DataError(f"init='ridge': {m!r}: the ridge start (alpha {alpha}) overflows float32: "
                        + (f"give a smaller bridge_anchors than {anchors:g}" if anchors else "check its features' scale"))
    return Wf


def support_rows(n_all: int, seed: int = 0) -> np.ndarray | None:
    """The training rows kept as the kernel's support: None (all of them) up to :data:`MAX_SUPPORT`, else a seeded
    sorted subset of that many (the seed: ``TrainConfig.seed``): the rows with the smallest :func:`row_keys`, the
    rows :class:`SupportSample` keeps when the same rows come in blocks."""
    if n_all <= MAX_SUPPORT:
        return None
    keys = row_keys(seed, np.arange(n_all))
    return np.sort(np.lexsort((np.arange(n_all), keys))[:MAX_SUPPORT])


def row_keys(seed: int, rows: np.ndarray) -> np.ndarray:
    """Each row index's seeded pseudo-random key (uint64, splitmix64 of ``seed`` and the index): a row's key depends
    on nothing but the seed and its index, so the smallest keys pick the same rows however the rows are blocked."""
    with np.errstate(over="ignore"):
        x = np.asarray(rows, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64((int(seed) + 1) % 2**64)
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mul)
        return x ^ (x >> np.uint64(31))


class SupportSample:
    """The kernel's support drawn in one pass over blocks of training pairs (:meth:`add` each block of ``Z``, ``T``
    rows in order; the streaming trainer's shards): the rows :func:`support_rows` keeps, in row order
    (:meth:`rows`), at most ``size`` (default :data:`MAX_SUPPORT`).  Memory: ``size`` rows plus the block being
    added, never every training pair."""

    def __init__(self, seed: int = 0, size: int | None = None):
        self.seed, self.size, self.seen = int(seed), MAX_SUPPORT if size is None else int(size), 0
        self.idx, self.keys = np.zeros(0, np.int64), np.zeros(0, np.uint64)
        self.Z: torch.Tensor | None = None
        self.T: torch.Tensor | None = None

    def add(self, Z: torch.Tensor, T: torch.Tensor) -> None:
        idx = np.arange(self.seen, self.seen + len(Z), dtype=np.int64)
        self.seen += len(Z)
        Z, T, keys = Z.detach(), T.detach(), row_keys(self.seed, idx)  # the held rows' keys are kept, not re-hashed
        if self.Z is not None:
            idx, keys = np.concatenate([self.idx, idx]), np.concatenate([self.keys, keys])
            Z, T = torch.cat([self.Z, Z]), torch.cat([self.T, T])
        if len(idx) > self.size:  # the smallest keys (ties: the lower row), then back in row order
            keep = np.sort(np.lexsort((idx, keys))[: self.size])
            idx, keys, Z, T = idx[keep], keys[keep], Z[torch.from_numpy(keep)], T[torch.from_numpy(keep)]
        self.idx, self.keys, self.Z, self.T = idx, keys, Z, T

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept ``(Z, T)`` rows, in row order."""
        if self.Z is None:
            raise ValueError("SupportSample: no rows were added")
        return self.Z, self.T


def kernel_grid(Z: torch.Tensor, T: torch.Tensor, W0: torch.Tensor) -> Iterator[tuple[float, float, torch.Tensor]]:
    """``(tau, alpha, A)`` over :data:`KERNEL_TAUS` x :data:`KERNEL_ALPHAS`: the kernel ridge coefficients
    ``A = (K_tau + alpha n I)^-1 (T - Z W0)`` (float64) on the support ``Z`` (n, d) with targets ``T``.

    One float64 Cholesky factorisation per (tau, alpha) (``K`` is a Gaussian kernel on the unit sphere, positive
    definite, and ``alpha n`` >= 1e-6 n bounds its condition number): nine of them cost far less than one symmetric
    eigendecomposition per tau (BENCHMARKS.md, kernel-start-cholesky).  A factorisation that fails (a kernel not
    positive definite to rounding) falls back on that eigendecomposition, its eigenvalues clamped at zero."""
    Z, T = Z.double(), T.double()
    n = len(Z)
    E = T - Z @ W0.double()  # what the prior misses on the training pairs
    S = F.normalize(Z, dim=-1)
    cos = S @ S.T
    for tau in KERNEL_TAUS:
        K = torch.exp((cos - 1) / tau)
        eig = None
        for alpha in KERNEL_ALPHAS:
            M = K.clone()
            M.diagonal().add_(alpha * n)
            L, info = torch.linalg.cholesky_ex(M)
            del M
            if int(info) == 0:
                A = torch.cholesky_solve(E, L)
            else:
                s, U = eig = eig or torch.linalg.eigh(K)
                A = U @ ((U.T @ E) / (s.clamp_min(0) + alpha * n).unsqueeze(1))
            del L
            yield tau, alpha, A


def kernel_start(Z: torch.Tensor, T: torch.Tensor, W0: torch.Tensor, score: Callable[[Any], float],
                 base_val: float, *, seed: int = 0, n_all: int | None = None, span: torch.Tensor | None = None,
                 se: float = 0.0) -> tuple[tuple[torch.Tensor, torch.Tensor, float] | None, dict[str, Any]]:
    """``(branch or None, record)``: the best kernel branch ``(support, coef, tau)`` (float32, support unit-normed) on
    top of the linear map ``W0`` when its val ``score`` beats ``base_val`` (the linear start's), else None.

    ``Z`` (n, d), ``T`` (n, out): the standardised training inputs and their targets; ``score(branch)``: the val
    criterion of ``W0`` plus that branch.  ``n_all``: the training pairs ``Z`` was already cut down from (by
    :func:`support_rows`; None: ``Z`` is every pair and is cut here).  ``span``: a projector (``out x out``) every
    candidate's coefficients are restricted to, ``A P`` (:func:`anybind.ridge_span.target_span`).  ``se`` > 0 (the
    standard-error rule, ``TrainConfig.select_se``): the best is kept only where it beats ``base_val`` by more than
    ``se`` standard errors of its items.  ``score`` may give per-item scores (their mean is the score) or one score.  The record: the grid's scores,
    the choice, the support's size."""
    if n_all is None:
        n_all = len(Z)
        keep = support_rows(n_all, seed)
        if keep is not None:
            Z, T = Z[torch.from_numpy(keep)], T[torch.from_numpy(keep)]
    n = len(Z)
    S32 = F.normalize(Z.double(), dim=-1).float()
    grid: dict[str, float] = {}
    best: tuple[float, tuple[torch.Tensor, torch.Tensor, float], float, float] | None = None
    best_se = 0.0
    for tau, alpha, A in kernel_grid(Z, T, W0):
        A = A if span is None else A @ span.double()
        branch = (S32, A.float(), float(tau))
        x = score(branch)
        v = float(np.mean(x))  # per-item scores: their mean is the score (one score: itself)
        grid[f"{tau:g}/{alpha:g}"] = round(v, 6)
        if not math.isnan(v) and (best is None or v > best[0]):
            best = (v, branch, tau, alpha)
            best_se = se_of(x) if se > 0 else 0.0
    rec: dict[str, Any] = {"base_val": round(base_val, 6), "grid": grid, "support": n, "pairs": n_all}
    if se > 0:
        rec.update(rule=f"{se:g}se", best_se=round(best_se, 6))
    if best is None or not best[0] > base_val + max(1e-9, se * best_se):  # a tie (to rounding) keeps the linear start
        rec["kept"] = False
        return None, rec
    rec.update(kept=True, tau=best[2], alpha=best[3], val=round(best[0], 6))
    return best[1], rec

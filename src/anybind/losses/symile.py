"""Symile (the multilinear inner product over >= 3 modalities), its tiled O(N^2) kernel, and the
paper's placeholders for missing modalities."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------
# Symile: the multilinear inner product over >= 3 modalities
# --------------------------------------------------------------------------------------
def mip(*embs: Tensor) -> Tensor:
    """Multilinear inner product of aligned rows: ``sum_k prod_m e_m[i, k]`` -> (n,)."""
    out = embs[0]
    for e in embs[1:]:
        out = out * e
    return out.sum(-1)


LOG2E = 1.0 / math.log(2.0)


class CubeMeanLSE(torch.autograd.Function):
    """Mean over all M axes and their N slices of the log-sum-exp of the full MIP tensor.

    With ``P`` the (N^(M-1), d) row-wise products of the first M-1 modalities
    and ``z`` the last one, ``T = s * P @ z.T`` viewed as an M-way (N, ..., N)
    tensor holds ``s * MIP(e_1[i_1], ..., e_M[i_M])`` for every combination;
    anchor m's cross-entropy denominators are ``lse[m, i] = log sum exp(T)``
    over every index but axis m = i.  Returns ``mean_{m, i} lse[m, i]`` (the
    Symile loss is that minus the mean positive score).

    ``T`` is never held whole: it is produced tile by tile (``rows`` rows of
    ``P`` at a time, sized to stay in the core's L2 cache), and each tile is
    consumed by GEMMs and reductions while it is still there.  Two passes:

    * forward: tile ``E = exp(T - shift)`` (one GEMM, one exp2), its row sums
      and column sums -- every anchor's partition function ``Z[m]``;
    * backward: with ``dL/dT = E * (r + w^T)`` known from ``Z`` (``r`` over
      rows, ``w`` over columns), the tile again, turned into its tile of
      ``dL/dT`` in place, and two d-column GEMMs that read it:
      ``(dL/dT) @ z`` and ``(dL/dT)^T @ sP`` -- all three gradients.

    On one core at N=256, d=16 this takes about half the time of the same
    GEMMs over a materialised 256^3 tensor (the tensor's 64 MiB no longer go
    to memory and back five times), and memory is O(tile + N^(M-1) d) instead
    of O(N^M).  The loop is over cache-sized tiles of the score tensor (32 at
    N=256), never over batch items or negatives one by one.

    ``shift`` is an upper bound of ``T`` (nothing overflows); if a whole slice
    underflows the result is ``inf`` and the caller takes the exact path.
    """

    @staticmethod
    def forward(ctx, P, z, s, shift, m_count, tile_rows):
        n = z.shape[0]
        M, rows = m_count, P.shape[0]
        # (T - shift) log2(e) = [log2(e) s P, 1] @ [z, -log2(e) shift]^T, one GEMM per tile; exp(T - shift)
        # is then exp2 of it, which torch computes ~2.7x faster than exp
        A = torch.cat([P * (s * LOG2E), torch.ones((rows, 1), dtype=P.dtype, device=P.device)], 1)
        Bs = torch.cat([z, torch.full((n, 1), -float(shift) * LOG2E, dtype=z.dtype, device=z.device)], 1)
        E = torch.empty((min(tile_rows, rows), n), dtype=P.dtype, device=P.device)
        row_sums = torch.empty(rows, dtype=P.dtype, device=P.device)
        col_sums = torch.zeros(n, dtype=P.dtype, device=P.device)
        for lo in range(0, rows, tile_rows):  # cache-sized tiles of the score tensor
            hi = min(rows, lo + tile_rows)
            Et = E[: hi - lo]
            torch.mm(A[lo:hi], Bs.t(), out=Et)
            torch.exp2(Et, out=Et)
            torch.sum(Et, 1, out=row_sums[lo:hi])
            col_sums += Et.sum(0)
        grid = row_sums.view((n,) * (M - 1))
        sums = []
        for m in range(M - 1):  # loop over modalities only
            axes = tuple(k for k in range(M - 1) if k != m)
            sums.append(grid.sum(axes) if axes else grid)
        sums.append(col_sums)
        Z = torch.stack(sums)  # (M, n)
        ctx.save_for_backward(z, s, A, Bs, Z)
        ctx.m_count, ctx.tile_rows = M, tile_rows
        return (Z.log().mean() + float(shift)).reshape(())

    @staticmethod
    def backward(ctx, go):
        z, s, A, Bs, Z = ctx.saved_tensors
        M, tile_rows = ctx.m_count, ctx.tile_rows
        n, d = z.shape
        rows = A.shape[0]
        sP = A[:, :d]  # log2(e) s P: the gradients below are divided by log2(e) at the end
        # dL/dT = go * E * (r[row] + w[col]); r[i_1..i_{M-1}] = sum_m 1 / (M n Z_m[i_m]), w = 1 / (M n Z_last)
        inv = 1.0 / (M * n * Z)
        r = inv[0]
        for m in range(1, M - 1):
            r = r[..., None] + inv[m].view((1,) * m + (n,))
        r = r.reshape(-1, 1)
        w = inv[M - 1].view(-1, 1)
        # per tile: E again, the tile of dL/dT = E * (r + w^T) built in cache, and two d-column GEMMs
        # reading it (measured: faster than reading E with 2d-column GEMMs for both terms, at every d)
        E = torch.empty((min(tile_rows, rows), n), dtype=z.dtype, device=z.device)
        W = torch.empty_like(E)
        Gz = torch.empty((rows, d), dtype=z.dtype, device=z.device)
        GtsP = torch.zeros((n, d), dtype=z.dtype, device=z.device)
        for lo in range(0, rows, tile_rows):
            hi = min(rows, lo + tile_rows)
            Et, Wt = E[: hi - lo], W[: hi - lo]
            torch.mm(A[lo:hi], Bs.t(), out=Et)
            torch.exp2(Et, out=Et)
            torch.add(r[lo:hi], w.t(), out=Wt)
            Et.mul_(Wt)
            torch.mm(Et, z, out=Gz[lo:hi])  # (dL/dT) @ z
            GtsP.addmm_(Et.t(), sP[lo:hi])  # (dL/dT)^T @ (log2(e) s P)
        Gz = Gz * go
        GtsP = GtsP * (go / LOG2E)
        ds = ((sP * Gz).sum() / (s * LOG2E)).reshape(s.shape)
        return Gz * s, GtsP, ds, None, None, None


class Symile(nn.Module):
    """Symile (Saporta et al. 2024, "Contrasting with Symile"): contrast M >= 3 modalities at once.

    The score of a tuple is the multilinear inner product (MIP)
    ``sum_k e_1[k] e_2[k] ... e_M[k]``.  Each modality in turn is the anchor;
    its positive is the full aligned tuple and its negatives are tuples whose
    other members are drawn from the batch:

    * ``negatives="n"`` (O(N)): one random permutation per other modality, so
      row i sees N-1 shuffled tuples (the paper's default).
    * ``negatives="n2"`` (O(N^2) for 3 modalities, N^(M-1) in general): every
      combination of the other modalities' batch items.  All M anchors read
      the same (N, ..., N) MIP tensor, produced in cache-sized tiles of
      ``tile_bytes`` and reduced along each axis while in cache; it is never
      held whole, so memory grows as N^(M-1) d, not N^M (``max_cube`` bounds
      the work: N^M scores, twice, per step).

    The loss is the mean over anchors of the cross-entropy, exactly as in the
    official ``symile`` package (``Symile(negative_sampling="n"|"n_squared")``,
    which takes ``exp(logit_scale)``): same values on the same inputs, and in
    "n" mode the same permutations when the torch RNG is in the same state.
    Nothing loops over batch items or negatives one by one.

    Missing modalities are handled by the trainer as in the paper: a missing
    item is represented by the projection of the mean training feature plus a
    learnt "missing" offset (see :class:`MissingPlaceholders`), so every row of
    every modality has an embedding.
    """

    multimodal = True

    def __init__(self, negatives: str = "n", max_cube: int = 2**30, tile_bytes: int = 1 << 21):
        super().__init__()
        if negatives in ("n_squared", "n^2", "nn"):
            negatives = "n2"
        if negatives not in ("n", "n2"):
            raise ValueError(f"Symile negatives must be 'n' (O(N)) or 'n2' (O(N^2)), got {negatives!r}")
        self.negatives = negatives
        self.max_cube = max_cube
        self.tile_bytes = tile_bytes

    # -- O(N) -------------------------------------------------------------
    def _loss_n(self, embs: Sequence[Tensor], s: Tensor, generator: torch.Generator | None) -> Tensor:
        M, n = len(embs), embs[0].shape[0]
        pos = s * mip(*embs)
        eye = torch.eye(n, dtype=torch.bool, device=embs[0].device)
        target = torch.arange(n, device=embs[0].device)
        losses = []
        for i in range(M):  # loop over the M modalities only
            shuffled = torch.ones_like(embs[i])
            for j in range(M):
                if j != i:
                    perm = torch.randperm(n, generator=generator, device=embs[j].device)
                    shuffled = shuffled * embs[j][perm]
            logits = torch.where(eye, pos.diag_embed(), s * embs[i] @ shuffled.t())
            losses.append(F.cross_entropy(logits, target))
        return torch.stack(losses).mean()

    # -- O(N^2) -----------------------------------------------------------
    def _loss_n2(self, embs: Sequence[Tensor], s: Tensor) -> Tensor:
        M, n, d = len(embs), embs[0].shape[0], embs[0].shape[1]
        cube = n**M
        if cube > self.max_cube:
            raise ValueError(
                f"Symile O(N^2) negatives over {M} modalities at batch {n} need {cube:,} scores "
                f"(> max_cube={self.max_cube:,}): lower the batch size or use negatives='n'"
            )
        # P[(i_1..i_{M-1})] = e_1[i_1] * ... * e_{M-1}[i_{M-1}]
        P = embs[0]
        for e in embs[1 : M - 1]:
            P = (P[:, None, :] * e[None, :, :]).reshape(-1, d)
        z = embs[M - 1]
        pos = s * mip(*embs)
        with torch.no_grad():
            bound = float(math.prod(float(e.norm(dim=1).max()) for e in embs))
            shift = float(s) * bound
        s_t = s if s.dim() == 0 else s.reshape(())
        tile_rows = max(1, int(self.tile_bytes) // (n * P.element_size()))
        mean_lse = CubeMeanLSE.apply(P, z, s_t, shift, M, tile_rows)
        if not torch.isfinite(mean_lse):  # a whole slice underflowed: exact per-slice shifts
            mean_lse = self._lse_exact(embs, s).mean()
        return mean_lse - pos.mean()

    @staticmethod
    def _lse_exact(embs: Sequence[Tensor], s: Tensor) -> Tensor:
        M = len(embs)
        letters = "abcdefghij"[:M]
        T = s * torch.einsum(",".join(f"{c}z" for c in letters) + "->" + letters, *embs)
        out = []
        for m in range(M):
            axes = [k for k in range(M) if k != m]
            out.append(torch.logsumexp(T.permute(m, *axes).reshape(T.shape[m], -1), dim=1))
        return torch.stack(out)

    def forward_multi(
        self, embs: Sequence[Tensor], logit_scale: Tensor, generator: torch.Generator | None = None, **context
    ) -> dict[str, Tensor]:
        if len(embs) < 2:
            raise ValueError(f"Symile needs at least 2 modalities, got {len(embs)}")
        n = embs[0].shape[0]
        if any(e.shape != embs[0].shape for e in embs):
            raise ValueError(f"Symile needs aligned batches of one shape, got {[tuple(e.shape) for e in embs]}")
        s = logit_scale.exp()
        if n < 2:
            return {"symile": s * 0.0}
        loss = self._loss_n(embs, s, generator) if self.negatives == "n" else self._loss_n2(embs, s)
        return {"symile": loss}

    def forward(self, *embs: Tensor, logit_scale: Tensor | None = None, **context) -> dict[str, Tensor]:
        """``symile(e1, e2, e3, logit_scale=ls)`` (or the pairwise form ``symile(a, b, ls)``, = CLIP)."""
        if logit_scale is None and len(embs) >= 3 and embs[-1].dim() == 0:
            *embs, logit_scale = embs
        if logit_scale is None:
            raise ValueError("Symile needs logit_scale")
        return self.forward_multi(list(embs), logit_scale, **context)


class MissingPlaceholders(nn.Module):
    """The paper's treatment of missing modalities, for feature-level projectors.

    Saporta et al. represent a missing item by the *mean* encoder
    representation of the observed training items, concatenated with a learnt
    "missing" embedding, before the projection head.  A linear head over
    ``[x ; e_missing]`` equals a head over ``x`` plus a learnt offset, so here a
    missing item's input is the projector's own training mean plus a learnt
    offset ``delta_m`` (in standardised units, initialised at 0 = the mean),
    and it goes through the modality's projector like any observed item.
    ``learn=False`` keeps the fixed mean placeholder.
    """

    def __init__(self, in_dims: Mapping[str, int], learn: bool = True):
        super().__init__()
        self.delta = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d), requires_grad=learn) for m, d in in_dims.items()}
        )

    def inputs(self, modality: str, projector: nn.Module, n: int) -> Tensor:
        """(n, in_dim) raw-feature-space inputs that stand for a missing item."""
        x = projector.mean + projector.scale * self.delta[modality]
        return x.unsqueeze(0).expand(n, -1)

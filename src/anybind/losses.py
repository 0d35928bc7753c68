"""Alignment objectives, as small modules on batch-first feature tensors.

Modelled on open_clip's ``loss.py``: each loss is an ``nn.Module`` whose
``forward`` takes already-projected (and L2-normalised) embeddings and
returns a dict of named loss terms; the trainer sums the terms.

Two calling conventions:

* **pairwise** losses: ``loss(a, b, logit_scale, feats=(xa, xb))`` on two
  aligned batches (``a[i]`` and ``b[i]`` come from the same record).  ``feats``
  are the frozen (standardised) encoder features of the same rows; only the
  intra-modal term reads them.
* **multimodal** losses (``multimodal = True``, Symile):
  ``loss.forward_multi([e_1, ..., e_M], logit_scale)`` on M aligned batches.

``logit_scale`` is always the *log* inverse temperature (the trainer's learnt
parameter, clamped to ``[0, log 100]``); losses exponentiate it, as in CLIP.

Objectives are combined with weights by :func:`build_loss`::

    build_loss("infonce+uniformity:0.1+intra:0.5")

returns a :class:`CombinedLoss` whose terms are the weighted terms of every
part.  Registered names: ``infonce`` (``clip``), ``siglip``, ``symile``
(O(N) negatives), ``symile-n2`` (O(N^2) negatives), ``uniformity``,
``alignment``, ``intra``, ``m2mix``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------
# pairwise objectives
# --------------------------------------------------------------------------------------
class InfoNCE(nn.Module):
    """Symmetric InfoNCE (CLIP loss) between two aligned batches.

    ``a[i]`` and ``b[i]`` are a positive pair; every ``b[j], j != i`` is a
    negative for ``a[i]`` and vice versa.  ``logit_scale`` is the log inverse
    temperature (exponentiated here, as in CLIP).  ``label_smoothing`` softens
    the one-hot targets, which helps on small, noisy caption sets.
    """

    multimodal = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        logits = logit_scale.exp() * a @ b.t()
        target = torch.arange(a.shape[0], device=a.device)
        loss = 0.5 * (
            F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            + F.cross_entropy(logits.t(), target, label_smoothing=self.label_smoothing)
        )
        return {"contrastive": loss}


class SigLIP(nn.Module):
    """Pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").

    Every (a_i, b_j) is an independent binary problem, positive iff ``i == j``::

        L = -1/N sum_ij log sigmoid(z_ij * (t * a_i.b_j + bias)),  z_ij = +1 if i == j else -1

    ``t = exp(logit_scale)`` is the trainer's learnt scale; ``bias`` is learnt
    here (initialised at ``bias_init``, -10 in the paper, so that the many
    negatives do not dominate the first steps).
    """

    multimodal = False

    def __init__(self, bias_init: float = -10.0):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(bias_init)))

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        logits = logit_scale.exp() * a @ b.t() + self.bias
        n = a.shape[0]
        signs = 2 * torch.eye(n, device=a.device, dtype=logits.dtype) - 1
        return {"sigmoid": -F.logsigmoid(signs * logits).sum() / n}


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola (2020): ``log E_{i<j} exp(-t ||x_i - x_j||^2)``; lower = more uniform on the sphere."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    sq = torch.pdist(x).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


class Uniformity(nn.Module):
    """Uniformity term (Wang & Isola 2020) added to a contrastive loss.

    With ``joint=True`` (default) it is computed on the *union* of both
    modalities' embeddings, as in Fahim et al. 2024 ("It's Not a Modality Gap:
    Characterizing and Addressing the Contrastive Gap"): spreading the union
    over the sphere is what pulls the two modality clouds into each other.
    ``joint=False`` averages the per-modality uniformities instead.
    """

    multimodal = False

    def __init__(self, t: float = 2.0, joint: bool = True):
        super().__init__()
        self.t, self.joint = t, joint

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        if self.joint:
            u = uniformity(torch.cat([a, b]), self.t)
        else:
            u = 0.5 * (uniformity(a, self.t) + uniformity(b, self.t))
        return {"uniformity": u}


class Alignment(nn.Module):
    """Alignment term (Wang & Isola 2020): ``E ||a_i - b_i||^alpha`` over positive pairs."""

    multimodal = False

    def __init__(self, alpha: float = 2.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        return {"alignment": (a - b).norm(dim=1).pow(self.alpha).mean()}


class IntraModal(nn.Module):
    """Keep each modality's own neighbourhoods (after Mistretta et al. 2025, "Cross the Gap").

    Contrastive training only constrains *cross*-modal similarities, so the
    intra-modal structure of the shared space can drift from what the frozen
    encoder knew.  This term matches, row by row, the neighbour distribution of
    every item among the other items of its batch, in the projected space and
    in the frozen feature space (cosine similarity of the standardised
    features)::

        L = mean_m mean_i KL( softmax_j(cos(x_i, x_j) / tau) || softmax_j(cos(e_i, e_j) / tau) ),  j != i

    It is zero exactly when the projection preserves every batch's similarity
    ranking-and-scale (e.g. a rotation of the normalised features), and needs
    ``feats=(xa, xb)`` from the trainer.
    """

    multimodal = False
    needs_features = True

    def __init__(self, tau: float = 0.1):
        super().__init__()
        self.tau = tau

    def _kl(self, e: Tensor, x: Tensor) -> Tensor:
        n = e.shape[0]
        if n < 3:
            return e.sum() * 0.0
        mask = torch.eye(n, dtype=torch.bool, device=e.device)
        xn = F.normalize(x.detach().to(e.dtype), dim=-1)
        target = (xn @ xn.t() / self.tau).masked_fill(mask, float("-inf")).log_softmax(-1)
        pred = (e @ e.t() / self.tau).masked_fill(mask, float("-inf")).log_softmax(-1)
        p = target.exp()
        kl = (p * (target - pred)).masked_fill(mask, 0.0).sum(-1)
        return kl.mean()

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, feats=None, **context) -> dict[str, Tensor]:
        if feats is None:
            raise ValueError("the intra-modal term needs the frozen features: call loss(a, b, scale, feats=(xa, xb))")
        xa, xb = feats
        return {"intra": 0.5 * (self._kl(a, xa) + self._kl(b, xb))}


def slerp(a: Tensor, b: Tensor, lam: Tensor | float) -> Tensor:
    """Geodesic interpolation on the unit sphere, row by row: ``lam=1`` gives ``a``, ``lam=0`` gives ``b``.

    (The convention of Oh et al.'s ``sph_inter``.)  Nearly identical rows fall
    back to the linear mix (renormalised), so the result never has NaNs.
    """
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device)
    cos = (a * b).sum(-1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    near = sin < 1e-4
    safe = torch.where(near, torch.ones_like(sin), sin)
    geo = (torch.sin(lam * theta) * a + torch.sin((1 - lam) * theta) * b) / safe
    lin = F.normalize(lam * a + (1 - lam) * b, dim=-1)
    return torch.where(near, lin, geo)


class M2Mix(nn.Module):
    """Geodesic multi-modal mixup hard negatives (Oh et al. 2023, "Geodesic Multi-Modal Mixup", m^2-mix).

    Each positive pair is mixed along the great circle between its two
    embeddings, ``m_j = slerp(a_j, b_j, lam)`` with ``lam ~ Beta(beta, beta)``
    (one draw per batch); the mixed points replace the off-diagonal negatives
    of a second InfoNCE::

        logits_a[i, j] = s * a_i.b_i  if i == j  else  s_m * a_i.m_j      (same for b)

    ``s = exp(logit_scale)``; ``s_m`` is ``mix_scale`` when set (the paper's
    ``m_tau``), else ``s``.  Use it beside plain InfoNCE: ``infonce+m2mix:0.5``.
    """

    multimodal = False

    def __init__(self, beta: float = 0.5, mix_scale: float | None = None):
        super().__init__()
        self.beta, self.mix_scale = beta, mix_scale

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        n = a.shape[0]
        s = logit_scale.exp()
        sm = s if self.mix_scale is None else torch.as_tensor(self.mix_scale, dtype=a.dtype)
        lam = torch.distributions.Beta(self.beta, self.beta).sample().to(a.dtype)
        m = slerp(a, b, lam)
        eye = torch.eye(n, dtype=torch.bool, device=a.device)
        pos = s * (a * b).sum(-1)
        la = torch.where(eye, pos.diag_embed(), sm * a @ m.t())
        lb = torch.where(eye, pos.diag_embed(), sm * b @ m.t())
        target = torch.arange(n, device=a.device)
        return {"m2mix": 0.5 * (F.cross_entropy(la, target) + F.cross_entropy(lb, target))}


# --------------------------------------------------------------------------------------
# Symile: the multilinear inner product over >= 3 modalities
# --------------------------------------------------------------------------------------
def mip(*embs: Tensor) -> Tensor:
    """Multilinear inner product of aligned rows: ``sum_k prod_m e_m[i, k]`` -> (n,)."""
    out = embs[0]
    for e in embs[1:]:
        out = out * e
    return out.sum(-1)


_LOG2E = 1.0 / math.log(2.0)


class _CubeMeanLSE(torch.autograd.Function):
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
      rows, ``w`` over columns), the tile again and two GEMMs that read it:
      ``E @ [z, w z]`` and ``E^T @ [r sP, sP]`` -- all three gradients.

    On one core at N=256, d=16 this takes ~2/3 of the time of the same GEMMs
    over a materialised 256^3 tensor (the tensor's 64 MiB no longer go to
    memory and back five times), and memory is O(tile + N^(M-1) d) instead of
    O(N^M).  The loop is over cache-sized tiles of the score tensor (32 at
    N=256), never over batch items or negatives one by one.

    ``shift`` is an upper bound of ``T`` (nothing overflows); if a whole slice
    underflows the result is ``inf`` and the caller takes the exact path.
    """

    @staticmethod
    def forward(ctx, P, z, s, shift, m_count, tile_rows):
        n, d = z.shape
        M, rows = m_count, P.shape[0]
        # (T - shift) log2(e) = [log2(e) s P, 1] @ [z, -log2(e) shift]^T, one GEMM per tile; exp(T - shift)
        # is then exp2 of it, which torch computes ~2.7x faster than exp
        A = torch.cat([P * (s * _LOG2E), torch.ones((rows, 1), dtype=P.dtype, device=P.device)], 1)
        Bs = torch.cat([z, torch.full((n, 1), -float(shift) * _LOG2E, dtype=z.dtype, device=z.device)], 1)
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
        right = torch.cat([z, w * z], 1)  # E @ [z, w z]
        left = torch.cat([r * sP, sP], 1)  # E^T @ [r sP, sP]
        E = torch.empty((min(tile_rows, rows), n), dtype=z.dtype, device=z.device)
        Er = torch.empty((rows, 2 * d), dtype=z.dtype, device=z.device)
        El = torch.zeros((n, 2 * d), dtype=z.dtype, device=z.device)
        for lo in range(0, rows, tile_rows):
            hi = min(rows, lo + tile_rows)
            Et = E[: hi - lo]
            torch.mm(A[lo:hi], Bs.t(), out=Et)
            torch.exp2(Et, out=Et)
            torch.mm(Et, right, out=Er[lo:hi])
            El.addmm_(Et.t(), left[lo:hi])
        Gz = torch.addcmul(Er[:, d:], r, Er[:, :d]) * go  # (dL/dT) @ z
        GtsP = torch.addcmul(El[:, :d], w, El[:, d:]) * (go / _LOG2E)  # (dL/dT)^T @ (s P)
        ds = ((sP * Gz).sum() / (s * _LOG2E)).reshape(s.shape)
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
        mean_lse = _CubeMeanLSE.apply(P, z, s_t, shift, M, tile_rows)
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


# --------------------------------------------------------------------------------------
# combining objectives
# --------------------------------------------------------------------------------------
class CombinedLoss(nn.Module):
    """A weighted sum of objectives; ``terms`` of every part are returned weighted.

    Pairwise parts in a multimodal call (Symile beside, say, ``intra``) are
    applied to every pair of modalities on the rows where both are observed.
    """

    def __init__(self, parts: Sequence[tuple[str, nn.Module, float]]):
        super().__init__()
        if not parts:
            raise ValueError("empty loss")
        self.names = [p[0] for p in parts]
        self.parts = nn.ModuleList([p[1] for p in parts])
        self.weights = [float(p[2]) for p in parts]
        self.multimodal = any(getattr(p, "multimodal", False) for p in self.parts)
        self.needs_features = any(getattr(p, "needs_features", False) for p in self.parts)

    def __repr__(self) -> str:
        return "CombinedLoss(" + " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights)) + ")"

    @staticmethod
    def _add(out: dict[str, Tensor], terms: Mapping[str, Tensor], w: float) -> None:
        for k, v in terms.items():
            key = k
            while key in out:
                key = key + "'"
            out[key] = w * v

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, **context) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for part, w in zip(self.parts, self.weights):
            if getattr(part, "multimodal", False):
                terms = part.forward_multi([a, b], logit_scale, **context)
            else:
                terms = part(a, b, logit_scale, **context)
            self._add(out, terms, w)
        return out

    def forward_multi(
        self,
        embs: Sequence[Tensor],
        logit_scale: Tensor,
        *,
        observed: Tensor | None = None,
        feats: Sequence[Tensor] | None = None,
        **context,
    ) -> dict[str, Tensor]:
        """``embs``: M aligned (N, d) batches (missing rows already hold placeholders);
        ``observed``: (N, M) bool, which rows are real; ``feats``: the frozen features, per modality."""
        out: dict[str, Tensor] = {}
        M = len(embs)
        for part, w in zip(self.parts, self.weights):
            if getattr(part, "multimodal", False):
                self._add(out, part.forward_multi(embs, logit_scale, **context), w)
                continue
            acc: dict[str, Tensor] = {}
            count = 0
            for i, j in itertools.combinations(range(M), 2):
                rows = slice(None)
                if observed is not None:
                    rows = (observed[:, i] & observed[:, j]).nonzero().squeeze(1)
                    if rows.numel() < 2:
                        continue
                kw = dict(context)
                if feats is not None:
                    kw["feats"] = (feats[i][rows], feats[j][rows])
                terms = part(embs[i][rows], embs[j][rows], logit_scale, **kw)
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v
                count += 1
            if count:
                self._add(out, {k: v / count for k, v in acc.items()}, w)
        return out


LOSSES: dict[str, type[nn.Module]] = {
    "infonce": InfoNCE,
    "clip": InfoNCE,
    "siglip": SigLIP,
    "symile": Symile,
    "symile-n2": Symile,
    "uniformity": Uniformity,
    "alignment": Alignment,
    "intra": IntraModal,
    "m2mix": M2Mix,
}
_PRESETS: dict[str, dict] = {"symile": {"negatives": "n"}, "symile-n2": {"negatives": "n2"}}


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"infonce+uniformity:0.1"`` -> ``[("infonce", 1.0), ("uniformity", 0.1)]``."""
    parts = []
    for raw in str(spec).split("+"):
        raw = raw.strip()
        if not raw:
            raise ValueError(f"empty term in loss spec {spec!r}")
        name, _, w = raw.partition(":")
        name = name.strip().lower()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} in {spec!r} (known: {', '.join(sorted(LOSSES))})")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"bad weight {w!r} for {name!r} in loss spec {spec!r} (want NAME:FLOAT)") from None
        if not math.isfinite(weight):
            raise ValueError(f"weight of {name!r} in {spec!r} must be finite")
        parts.append((name, weight))
    return parts


def _make(name: str, kwargs: Mapping) -> nn.Module:
    cls = LOSSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    kw = {k: v for k, v in kwargs.items() if k in accepted}
    kw.update(_PRESETS.get(name, {}))
    return cls(**kw)


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build an objective from a spec such as ``"infonce"`` or ``"infonce+uniformity:0.1+intra:0.5"``.

    ``kwargs`` go to every part that accepts them (``label_smoothing`` to
    InfoNCE, ``tau`` to the intra term, ...).  A single pairwise objective of
    weight 1 is returned as is; anything else as a :class:`CombinedLoss`.
    """
    parts = parse_loss_spec(name)
    if len(parts) == 1 and parts[0][1] == 1.0 and not getattr(LOSSES[parts[0][0]], "multimodal", False):
        return _make(parts[0][0], kwargs)
    return CombinedLoss([(n, _make(n, kwargs), w) for n, w in parts])


def is_multimodal(loss: nn.Module) -> bool:
    return bool(getattr(loss, "multimodal", False))

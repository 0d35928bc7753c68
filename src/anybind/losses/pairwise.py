"""Pairwise objectives on two aligned batches: InfoNCE (CLIP), SigLIP, uniformity, alignment,
the intra-modal term and m^2-mix (see :mod:`anybind.losses` for the calling convention)."""

from __future__ import annotations

import math

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

    (The convention of Oh et al.'s ``sph_inter``.)  Written in the tangent form
    ``cos((1 - lam) theta) a + sin((1 - lam) theta) u``, with ``u`` the unit direction from ``a`` towards
    ``b`` and ``theta = atan2(|b - (a.b) a|, a.b)``: accurate for every angle, identical and antipodal rows
    included (for an antipodal pair, whose great circle is not unique, ``u`` is a fixed direction
    orthogonal to ``a``), and never NaN, in value or gradient.
    """
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device)
    tiny = torch.finfo(a.dtype).eps
    cos = (a * b).sum(-1, keepdim=True)
    u = b - cos * a
    n = u.norm(dim=-1, keepdim=True)
    theta = torch.atan2(n, cos)
    # a fixed direction orthogonal to a (from the basis vector where a is smallest), for antipodal rows
    e = F.one_hot(a.abs().argmin(-1), a.shape[-1]).to(a.dtype)
    perp = F.normalize(e - (a * e).sum(-1, keepdim=True) * a, dim=-1)
    direction = torch.where(n > tiny, u / n.clamp_min(tiny), perp)
    return torch.cos((1 - lam) * theta) * a + torch.sin((1 - lam) * theta) * direction


class M2Mix(nn.Module):
    """Geodesic multi-modal mixup hard negatives (Oh et al. 2023, "Geodesic Multi-Modal Mixup", m^2-mix).

    Each positive pair is mixed along the great circle between its two
    embeddings, ``m_j = slerp(a_j, b_j, lam)`` with ``lam ~ Beta(beta, beta)``
    (one draw per batch); the mixed points replace the off-diagonal negatives
    of a second InfoNCE::

        logits_a[i, j] = s * a_i.b_i  if i == j  else  s_m * a_i.m_j      (same for b)

    ``s = exp(logit_scale)``; ``s_m`` is ``mix_scale`` when set (the paper's
    ``m_tau``), else ``s``.  Use it beside plain InfoNCE: ``infonce+m2mix:0.5``.  ``lam=`` fixes the
    mixing coefficient of a call (:class:`anybind.robust.GeodesicMixup` draws it from its own seeded stream).
    """

    multimodal = False

    def __init__(self, beta: float = 0.5, mix_scale: float | None = None):
        super().__init__()
        self.beta, self.mix_scale = beta, mix_scale

    def forward(self, a: Tensor, b: Tensor, logit_scale: Tensor, lam: float | None = None,
                **context) -> dict[str, Tensor]:
        n = a.shape[0]
        s = logit_scale.exp()
        sm = s if self.mix_scale is None else torch.as_tensor(self.mix_scale, dtype=a.dtype)
        if lam is None:
            lam = torch.distributions.Beta(self.beta, self.beta).sample().to(a.dtype)
        m = slerp(a, b, lam)
        eye = torch.eye(n, dtype=torch.bool, device=a.device)
        pos = s * (a * b).sum(-1)
        la = torch.where(eye, pos.diag_embed(), sm * a @ m.t())
        lb = torch.where(eye, pos.diag_embed(), sm * b @ m.t())
        target = torch.arange(n, device=a.device)
        return {"m2mix": 0.5 * (F.cross_entropy(la, target) + F.cross_entropy(lb, target))}

"""Mod-X's off-diagonal distillation for :mod:`anybind.update`: the KL divergence between the frozen old space's
and the trained space's similarity distributions over each batch (screened as Mod-X does), the optional
intra-modal and feature terms, and :class:`DistillBinder`, the projectors + pairwise loss + those terms that
:func:`~anybind.loop.fit_loop` trains."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .binders import standardised
from .projectors import Projector


@torch.no_grad()
def screen(logits: torch.Tensor) -> torch.Tensor:
    """Mod-X's screening: in each row whose largest entry is not on the diagonal, swap it with the diagonal."""
    s = logits.clone()
    i = torch.arange(len(s))
    j = s.argmax(1)
    bad = j != i
    ib, jb = i[bad], j[bad]
    diag, top = s[ib, ib].clone(), s[ib, jb].clone()
    s[ib, ib], s[ib, jb] = top, diag
    return s


def offdiag_distillation(new_a: torch.Tensor, new_b: torch.Tensor, old_a: torch.Tensor, old_b: torch.Tensor,
                         temperature: float, screening: bool = True) -> torch.Tensor:
    """KL(old || new) between the rows of softmax(similarity / temperature), a->b and b->a, averaged.

    ``new_*``: the trained space's unit embeddings of one batch of pairs; ``old_*``: the frozen
    space's of the same items (no gradient)."""
    s_new = new_a @ new_b.T / temperature
    with torch.no_grad():
        s_old = old_a @ old_b.T / temperature
    total = new_a.new_zeros(())
    for sn, so in ((s_new, s_old), (s_new.T, s_old.T)):
        so = screen(so) if screening else so
        total = total + F.kl_div(F.log_softmax(sn, 1), F.log_softmax(so, 1), log_target=True, reduction="batchmean")
    return total / 2


class DistillBinder(nn.Module):
    """Trainable projectors + the space's pairwise loss, plus ``weight`` x :func:`offdiag_distillation` against
    the frozen ``old`` projectors; ``forward({(a, b): (xa, xb), ...})``: the mean over pairs (what
    :func:`~anybind.loop.fit_loop` trains, like :class:`~anybind.binders.PairBinder`)."""

    def __init__(self, projectors: Mapping[str, Projector], old: Mapping[str, Projector], logit_scale: nn.Parameter,
                 loss_fn: nn.Module, *, weight: float, temperature: float, screening: bool, intra: float = 0.0,
                 feature: float = 0.0):
        super().__init__()
        self.intra, self.feature = intra, feature
        self.projectors = nn.ModuleDict(projectors)
        self.old = dict(old)  # a plain dict: not registered, so never put in train mode nor optimised
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn
        self.weight, self.temperature, self.screening = weight, temperature, screening
        self.needs_feats = bool(getattr(loss_fn, "needs_features", False))

    def forward(self, batch: Mapping[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = 0.0
        for (a, b), (xa, xb) in batch.items():
            pa, pb = self.projectors[a], self.projectors[b]
            ea, eb = F.normalize(pa(xa), dim=-1), F.normalize(pb(xb), dim=-1)
            kw = {"feats": (standardised(pa, xa), standardised(pb, xb))} if self.needs_feats else {}
            loss = sum(self.loss_fn(ea, eb, self.logit_scale, **kw).values())
            if self.weight > 0 or self.intra > 0 or self.feature > 0:
                with torch.no_grad():
                    oa, ob = F.normalize(self.old[a](xa), dim=-1), F.normalize(self.old[b](xb), dim=-1)
            if self.weight > 0:
                loss = loss + self.weight * offdiag_distillation(ea, eb, oa, ob, self.temperature, self.screening)
            if self.intra > 0:  # each modality's own similarity structure (the diagonal is each item itself)
                loss = loss + self.intra * (offdiag_distillation(ea, ea, oa, oa, self.temperature, False)
                                            + offdiag_distillation(eb, eb, ob, ob, self.temperature, False)) / 2
            if self.feature > 0:  # where each item lands (a locked, identity side adds nothing)
                loss = loss + self.feature * ((ea - oa).pow(2).sum(-1).mean() + (eb - ob).pow(2).sum(-1).mean())
            total = total + loss
        return total / len(batch)

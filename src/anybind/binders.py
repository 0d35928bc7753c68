"""The trainable parts of a fit as one module whose ``forward(batch)`` is one step's loss (what
:func:`anybind.loop.fit_loop` trains, and what DDP wraps on Ray Train).

* :class:`PairBinder`: pairwise objectives, a batch per modality pair (in-memory, streaming and Ray training);
* :class:`MultiBinder`: multimodal objectives (Symile), one batch of records with every modality, placeholders
  where one is missing (in-memory training);
* :class:`AnchorBinder`: one new projector against frozen target embeddings (progressive binding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .losses import MissingPlaceholders
from .projectors import Projector


def pair_terms(
    loss_fn,
    projectors: Mapping[str, Projector],
    a: str,
    b: str,
    xa: torch.Tensor,
    xb: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    noise: float = 0.0,
    needs_feats: bool = False,
    gather=None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch of (a, b) pairs: features -> projectors -> unit embeddings -> loss.

    ``gather`` (distributed training): a function concatenating a tensor over every worker,
    gradients flowing back to each worker's slice (open_clip's ``gather_with_grad``), so
    each worker computes the loss over the *global* batch and the averaged gradients equal
    the single-process ones.
    """
    xa, xb = xa.to(logit_scale.device), xb.to(logit_scale.device)  # the features live on the CPU
    if noise > 0:
        xa = xa + noise * projectors[a].scale * torch.randn_like(xa)
        xb = xb + noise * projectors[b].scale * torch.randn_like(xb)
    ea = F.normalize(projectors[a](xa), dim=-1)
    eb = F.normalize(projectors[b](xb), dim=-1)
    feats = (standardised(projectors[a], xa), standardised(projectors[b], xb)) if needs_feats else None
    if gather is not None:
        ea, eb = gather(ea), gather(eb)
        feats = (gather(feats[0]), gather(feats[1])) if feats is not None else None
    kw = {"feats": feats} if feats is not None else {}
    return loss_fn(ea, eb, logit_scale, **kw)


def standardised(projector: Projector, x: torch.Tensor) -> torch.Tensor:
    """The frozen features as the projector sees them (standardised), for terms that read them."""
    return projector.standardized(x).detach()


class PairBinder(nn.Module):
    """Projectors, temperature and a pairwise loss; ``forward({(a, b): (xa, xb), ...})``: the mean over pairs."""

    def __init__(self, projectors: Mapping[str, Projector], logit_scale: nn.Parameter, loss_fn: nn.Module, *,
                 noise: float = 0.0, gather: Callable | None = None):
        super().__init__()
        self.projectors = nn.ModuleDict(projectors)
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn
        self.noise = noise
        self.needs_feats = bool(getattr(loss_fn, "needs_features", False))
        self.gather = gather

    def forward(self, batch: Mapping[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = 0.0
        for (a, b), (xa, xb) in batch.items():
            terms = pair_terms(self.loss_fn, self.projectors, a, b, xa, xb, self.logit_scale,
                               noise=self.noise, needs_feats=self.needs_feats, gather=self.gather)
            total = total + sum(terms.values())
        return total / len(batch)


class MultiBinder(nn.Module):
    """Projectors, placeholders, temperature and a multimodal loss; ``forward(record indices)``: the loss of
    every modality of those records (``rows[m]``: record -> row of ``feats[m]``, -1 where missing)."""

    def __init__(self, projectors: Mapping[str, Projector], placeholders: MissingPlaceholders,
                 logit_scale: nn.Parameter, loss_fn: nn.Module, mods: Sequence[str],
                 feats: Mapping[str, torch.Tensor], rows: Mapping[str, np.ndarray], *, noise: float = 0.0):
        super().__init__()
        self.projectors = nn.ModuleDict(projectors)
        self.placeholders = placeholders
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn
        self.mods, self.feats, self.rows, self.noise = list(mods), feats, rows, noise
        self.needs_feats = bool(getattr(loss_fn, "needs_features", False))

    def forward(self, idx: np.ndarray) -> torch.Tensor:
        embs, observed, feats = [], [], []
        for m in self.mods:
            rows = torch.from_numpy(self.rows[m][idx])
            obs = rows >= 0
            pr = self.projectors[m]
            x = self.feats[m][rows.clamp_min(0)].to(self.logit_scale.device)
            obs = obs.to(x.device)
            if self.noise > 0:
                x = x + self.noise * pr.scale * torch.randn_like(x)
            x = torch.where(obs[:, None], x, self.placeholders.inputs(m, pr, len(idx)))
            embs.append(F.normalize(pr(x), dim=-1))
            observed.append(obs)
            feats.append(standardised(pr, x))
        kw = {"feats": feats} if self.needs_feats else {}
        terms = self.loss_fn.forward_multi(embs, self.logit_scale, observed=torch.stack(observed, 1), **kw)
        return sum(terms.values())


class AnchorBinder(nn.Module):
    """One projector, temperature and a pairwise loss against frozen targets; ``forward([(anchor, j), ...])``:
    the mean over anchors of the loss between ``projector(feats[rows[anchor][j]])`` and ``targets[anchor][j]``
    (``keys[anchor]``: the anchor's frozen input features, for terms that read features)."""

    def __init__(self, projector: Projector, logit_scale: nn.Parameter, loss_fn: nn.Module, feats: torch.Tensor,
                 rows: Mapping[str, np.ndarray], targets: Mapping[str, torch.Tensor],
                 keys: Mapping[str, torch.Tensor], *, noise: float = 0.0):
        super().__init__()
        self.projector = projector
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn
        self.feats, self.rows, self.targets, self.keys, self.noise = feats, rows, targets, keys, noise
        self.needs_feats = bool(getattr(loss_fn, "needs_features", False))

    def forward(self, batch: Sequence[tuple[str, np.ndarray]]) -> torch.Tensor:
        proj, total = self.projector, 0.0
        for a, j in batch:
            x = self.feats[self.rows[a][j]].to(self.logit_scale.device)
            if self.noise > 0:
                x = x + self.noise * proj.scale * torch.randn_like(x)
            e = F.normalize(proj(x), dim=-1)
            g = self.targets[a][j].to(x.device)  # frozen: no gradient reaches the bound space
            kw = {"feats": (standardised(proj, x), self.keys[a][j].to(x.device))} if self.needs_feats else {}
            total = total + sum(self.loss_fn(e, g, self.logit_scale, **kw).values())
        return total / len(batch)


@torch.no_grad()
def missing_embeddings(projectors: Mapping[str, Projector], placeholders: MissingPlaceholders,
                       mods) -> dict[str, np.ndarray]:
    """Unit embedding of a *missing* item of each modality (eval mode): the placeholder through its projector."""
    out = {}
    for m in mods:
        pr = projectors[m]
        was = pr.training
        pr.eval()
        out[m] = F.normalize(pr(placeholders.inputs(m, pr, 1)), dim=-1)[0].cpu().numpy().astype(np.float32)
        pr.train(was)
    return out


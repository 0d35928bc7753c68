"""CreamFL's three pieces (Yu et al. 2023, :mod:`anybind.federated_parties` runs them): the clients' regulariser
towards the global representations, the server's agreement-weighted ensemble of the clients' public embeddings,
and the server's distillation of that ensemble into the global projectors.

* :class:`CreamBinder` (client): its private loss plus, on the public pairs, an intra-modal term (its embedding of a
  public item towards the global embedding of that item, away from its own embedding by ``old``: its projectors at
  the round's start, ``intra="start"``, or, ``intra="moon"``, at the end of its previous round, MOON's negative
  (Li et al. 2021) and CreamFL's, kept on the client) and an
  inter-modal one (towards the global embedding of the paired item of each other modality, among all public
  items), temperature ``reg_temperature``, weight ``reg_weight``.
* :func:`ensemble` (server): each client's embedding of each item weighted by how well it retrieves the global
  embedding of the item's other modalities (softmax over clients of the contrastive log-probability).
* :class:`KDBinder` (server): InfoNCE on the public pairs plus ``kd_weight`` x the distillation term, ``kd``:
  ``"feature"`` (CreamFL's: the squared distance of each global embedding to the ensemble's), ``"relation"`` (the
  KL divergence from the ensemble's cross- and intra-modal similarity distributions over the batch to the global
  model's, temperature ``kd_temperature``: invariant to a rotation the ensemble and the global space differ by) or
  ``"both"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .binders import PairBinder
from .projectors import Projector

KD_KINDS = ("feature", "relation", "both")
#: the negative of the clients' intra-modal term: the client at the round's start, or at its previous round's end
INTRA_KINDS = ("start", "moon")


class CreamBinder(nn.Module):
    """Private pairs' loss plus CreamFL's regulariser on public pairs; ``forward((private batch, public idx))``."""

    def __init__(self, projectors: Mapping[str, Projector], old: Mapping[str, Projector], logit_scale: nn.Parameter,
                 loss_fn: nn.Module, public: Mapping[str, torch.Tensor], glob: Mapping[str, torch.Tensor], *,
                 weight: float, temperature: float, local: nn.Module | None = None):
        super().__init__()
        self.projectors = nn.ModuleDict(projectors)
        self.old = dict(old)  # frozen, not registered: the client's projectors at the round's start or previous end
        self.pairs = local if local is not None else PairBinder(projectors, logit_scale, loss_fn)  # the private loss
        self.public, self.glob = public, glob
        self.weight, self.temperature = weight, temperature

    def forward(self, batch) -> torch.Tensor:
        private, idx = batch
        loss = self.pairs(private)
        if self.weight > 0:
            loss = loss + self.weight * self.regulariser(torch.as_tensor(idx))
        return loss

    def regulariser(self, idx: torch.Tensor) -> torch.Tensor:
        t, total, n = self.temperature, 0.0, 0
        local = {m: F.normalize(p(self.public[m][idx]), dim=-1) for m, p in self.projectors.items()}
        for m, e in local.items():
            total = total + self.intra(m, e, idx)
            n += 1
            for o in self.glob:  # every other modality's global embeddings (a one-modality client's only tie)
                if o != m:
                    total = total + F.cross_entropy(e @ self.glob[o].T / t, idx)
                    n += 1
        return total / max(n, 1)

    def intra(self, m: str, e: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The intra-modal term of modality ``m`` (``e``: the client's unit embeddings of public rows ``idx``): the
        global embedding is the positive, ``old``'s the negative (MOON's contrastive loss; constant, log 2, with
        no gradient where ``old`` is the global model)."""
        with torch.no_grad():
            old = F.normalize(self.old[m](self.public[m][idx]), dim=-1)
        logits = torch.stack([(e * self.glob[m][idx]).sum(-1), (e * old).sum(-1)], 1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))


def ensemble(local: Mapping[str, Sequence[torch.Tensor]], glob: Mapping[str, torch.Tensor],
             temperature: float) -> dict[str, torch.Tensor]:
    """Per modality, the clients' public embeddings (``local[m]``: one ``(n_public, dim)`` per client that sent
    ``m``) averaged with per-item weights: the softmax over clients of how well each retrieves the global embedding
    of the item's other modalities (mean log-probability at ``temperature``); a modality nobody sent, or with no
    other modality, has no target."""
    targets = {}
    for m, vs in local.items():
        others = [o for o in glob if o != m]
        if not vs or not others:
            continue
        score = torch.stack([sum(torch.diagonal(F.log_softmax(v @ glob[o].T / temperature, 1)) for o in others)
                             / len(others) for v in vs])  # (clients, n_public)
        w = torch.softmax(score, 0)
        targets[m] = (w[..., None] * torch.stack(list(vs))).sum(0)
    return targets


class KDBinder(nn.Module):
    """The server's objective on the public pairs: InfoNCE plus ``weight`` x the distillation towards ``targets``
    (the clients' ensemble), ``kd`` one of :data:`KD_KINDS`; ``forward(idx)``: rows of ``public`` (the public
    pairs, and from ``n_real`` on mixes of them, which are distilled only)."""

    def __init__(self, projectors: Mapping[str, Projector], logit_scale: nn.Parameter, loss_fn: nn.Module,
                 public: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor] | None, weight: float,
                 kd: str = "feature", temperature: float = 0.1, n_real: int | None = None):
        super().__init__()
        if kd not in KD_KINDS:
            raise ValueError(f"kd must be one of {', '.join(KD_KINDS)}, got {kd!r}")
        self.projectors = nn.ModuleDict(projectors)
        self.logit_scale, self.loss_fn = logit_scale, loss_fn
        self.public, self.targets, self.weight = public, targets, weight
        self.kd, self.temperature = kd, temperature
        self.n_real = n_real  # rows from n_real on (mixes of public pairs) are distilled only, not contrasted

    def forward(self, idx: np.ndarray) -> torch.Tensor:
        i = torch.as_tensor(idx)
        mods = list(self.projectors)
        emb = {m: F.normalize(self.projectors[m](self.public[m][i]), dim=-1) for m in mods}
        real = i < self.n_real if self.n_real is not None else torch.ones(len(i), dtype=torch.bool)
        total = 0.0
        for a, b in itertools.combinations(mods, 2):
            total = total + sum(self.loss_fn(emb[a][real], emb[b][real], self.logit_scale).values())
        total = total / max(1, len(mods) * (len(mods) - 1) // 2)
        if self.targets is not None and self.weight > 0:
            total = total + self.weight * self.distillation(emb, i)
        return total

    def distillation(self, emb: Mapping[str, torch.Tensor], i: torch.Tensor) -> torch.Tensor:
        have = [m for m in emb if m in self.targets]
        loss = torch.zeros(())
        if self.kd in ("feature", "both"):
            for m in have:
                loss = loss + (emb[m] - self.targets[m][i]).pow(2).sum(-1).mean()
        if self.kd in ("relation", "both"):
            tgt = {m: F.normalize(self.targets[m][i], dim=-1) for m in have}
            terms = [(a, b) for a in have for b in have]  # cross-modal both ways, and intra-modal
            for a, b in terms:
                want = F.softmax(tgt[a] @ tgt[b].T / self.temperature, 1)
                got = F.log_softmax(emb[a] @ emb[b].T / self.temperature, 1)
                loss = loss + F.kl_div(got, want, reduction="batchmean") / max(1, len(terms)) * len(have)
        return loss


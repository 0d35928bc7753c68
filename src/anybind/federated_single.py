"""Federated clients that hold one modality (images with labels, texts with labels: CreamFL's uni-modal clients).

Such a client has no pairs to bind; it trains its one projector on its labels with a supervised
contrastive loss (Khosla et al. 2020) over two dropout views of each item: the positives of an
embedding are its other view and every item of the same label (a record without the label is a class
of its own).  Under CreamFL its inter-modal regulariser pulls its embedding of each public item
towards the global embedding of the item's *other* modalities, which is what ties its projector to
the shared space; under FedAvg its projector is averaged with those of the clients holding the same
modality.  It has no val pairs: it does not vote on the round kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .loop import IndexSampler
from .projectors import Projector


def label_codes(records, key: str) -> np.ndarray:
    """An integer class per record: its ``key`` label's, or (without one) a class of its own (negative)."""
    names: dict[str, int] = {}
    codes = np.empty(len(records), dtype=np.int64)
    for i, r in enumerate(records):
        v = r.labels.get(key)
        codes[i] = -1 - i if v is None else names.setdefault(str(v), len(names))
    return codes


class LabelBinder(nn.Module):
    """Supervised contrastive loss of each modality's batch over two dropout views; ``forward({m: (x, codes)})``."""

    def __init__(self, projectors: Mapping[str, Projector], logit_scale: nn.Parameter):
        super().__init__()
        self.projectors = nn.ModuleDict(projectors)
        self.logit_scale = logit_scale

    def forward(self, batch: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = 0.0
        for m, (x, y) in batch.items():
            p = self.projectors[m]
            z = F.normalize(torch.cat([p(x), p(x)]), dim=-1)  # two views: two dropout masks
            y2 = torch.cat([y, y])
            eye = torch.eye(len(z), dtype=torch.bool)
            logits = (z @ z.T * self.logit_scale.exp()).masked_fill(eye, float("-inf"))  # kept <= 100 by fit_loop
            pos = (y2[:, None] == y2[None]) & ~eye
            logp = F.log_softmax(logits, 1).masked_fill(~pos, 0.0)
            total = total - (logp.sum(1) / pos.sum(1)).mean()
        return total / max(1, len(batch))


def label_batches(fs, feats_t: Mapping[str, torch.Tensor], modalities: Sequence[str], codes: np.ndarray,
                  sampler: IndexSampler) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Endless batches for :class:`LabelBinder`: ``{m: (features, label codes)}`` of the records the sampler's key
    ``m`` draws (``codes``: :func:`label_codes` of ``fs.records``)."""
    while True:
        batch = {}
        for m in modalities:
            idx = sampler.next(m)
            batch[m] = (feats_t[m][fs.rows[m][idx]], torch.from_numpy(codes[idx]))
        yield batch

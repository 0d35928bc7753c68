"""Alignment objectives, as small modules on batch-first feature tensors.

Modelled on open_clip's ``loss.py``: each loss is an ``nn.Module`` whose
``forward`` takes already-projected (and L2-normalised) embeddings and
returns a dict of named loss terms; the trainer sums the terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCE(nn.Module):
    """Symmetric InfoNCE (CLIP loss) between two aligned batches.

    ``a[i]`` and ``b[i]`` are a positive pair; every ``b[j], j != i`` is a
    negative for ``a[i]`` and vice versa.  ``logit_scale`` is the log inverse
    temperature (exponentiated here, as in CLIP).  ``label_smoothing`` softens
    the one-hot targets, which helps on small, noisy caption sets.
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logit_scale.exp() * a @ b.t()
        target = torch.arange(a.shape[0], device=a.device)
        loss = 0.5 * (
            F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            + F.cross_entropy(logits.t(), target, label_smoothing=self.label_smoothing)
        )
        return {"contrastive": loss}


LOSSES: dict[str, type[nn.Module]] = {"infonce": InfoNCE, "clip": InfoNCE}


def build_loss(name: str, **kwargs) -> nn.Module:
    key = name.lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(sorted(LOSSES))})")
    return LOSSES[key](**kwargs)

"""Projectors: small trainable maps from a frozen encoder's features into the shared space.

Every projector standardises its input with statistics fitted on the training
features (stored as buffers, saved with the weights), then maps it to the
shared width.  ``kind="linear"`` is one affine map; ``kind="mlp"`` adds a
hidden layer with GELU and dropout on top of a linear skip path, so it can
only add to what a linear map does.  ``kind="identity"`` passes the encoder's
features through untouched: the modality is *locked* and its encoder's own
space becomes the shared space (LiT-style locking, and the frozen side of
progressive binding).

A *centred* projector (``center=True``, see :mod:`anybind.robust`) also stores its modality's
mean unit embedding over the training split and returns ``normalize(y) - center``: once
re-normalised by the caller, every item is measured from its modality's centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProjectorConfig:
    in_dim: int
    out_dim: int = 256
    kind: str = "mlp"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    standardize: bool = True
    center: bool = False  # inductive centring (space format 3): a stored mean embedding is subtracted

    def to_dict(self) -> dict:
        """The config as saved; ``center`` only when set, so an uncentred space reads as format 2."""
        d = asdict(self)
        if not self.center:
            d.pop("center")
        return d


class Projector(nn.Module):
    """Feature standardisation followed by a linear or MLP map (batch-first)."""

    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        if cfg.kind not in ("linear", "mlp", "identity"):
            raise ValueError(f"projector kind must be 'linear', 'mlp' or 'identity', got {cfg.kind!r}")
        if cfg.kind == "identity" and cfg.in_dim != cfg.out_dim:
            raise ValueError(f"an identity projector needs in_dim == out_dim, got {cfg.in_dim} and {cfg.out_dim}")
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.in_dim))
        self.register_buffer("scale", torch.ones(cfg.in_dim))
        self.in_drop = nn.Dropout(cfg.input_dropout)
        self.linear = nn.Linear(cfg.in_dim, cfg.out_dim)
        if cfg.kind == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(cfg.in_dim, cfg.hidden),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, cfg.out_dim),
            )
        else:
            self.mlp = None
        if cfg.center:
            self.register_buffer("center", torch.zeros(cfg.out_dim))

    @torch.no_grad()
    def fit_stats(self, feats: np.ndarray) -> "Projector":
        """Set the standardisation from training features (per-dim mean; one global scale)."""
        if self.cfg.standardize and len(feats) > 1:
            x = torch.as_tensor(feats, dtype=torch.float32)
            self.mean.copy_(x.mean(0))
            # one scale for all dims keeps the encoder's own relative weighting of dimensions
            std = (x - self.mean).pow(2).sum(1).mean().sqrt() / np.sqrt(x.shape[1])
            self.scale.fill_(float(std.clamp_min(1e-6)))
        return self

    @torch.no_grad()
    def set_center(self, center: np.ndarray | torch.Tensor) -> "Projector":
        """Centre this projector's output on ``center`` (the modality's mean unit embedding, ``(out_dim,)``)."""
        c = torch.as_tensor(np.asarray(center, dtype=np.float32)).reshape(-1)
        if c.shape[0] != self.cfg.out_dim or not torch.isfinite(c).all():
            raise ValueError(f"a centre must be {self.cfg.out_dim} finite numbers, got shape {tuple(c.shape)}")
        if not self.cfg.center:
            self.cfg = replace(self.cfg, center=True)
            self.register_buffer("center", torch.zeros(self.cfg.out_dim))
        self.center.copy_(c)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.uncentred(x)
        if self.cfg.center:  # the caller re-normalises: items are measured from the modality's centre
            y = F.normalize(y, dim=-1) - self.center
        return y

    def uncentred(self, x: torch.Tensor) -> torch.Tensor:
        """The map before any centring."""
        if self.cfg.kind == "identity":  # a locked modality: the encoder's own space, centred
            return x - self.mean
        x = (x - self.mean) / self.scale
        x = self.in_drop(x)
        y = self.linear(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return y


def project(projector: nn.Module, x: np.ndarray) -> torch.Tensor:
    """``projector(x)`` for a numpy batch, run where the projector is (a GPU while it trains there); the
    result on the CPU."""
    dev = next(iter(projector.buffers()), torch.empty(0)).device
    return projector(torch.from_numpy(x).to(dev)).cpu()

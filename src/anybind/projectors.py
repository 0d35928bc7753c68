"""Projectors: small trainable maps from a frozen encoder's features into the shared space.

Every projector standardises its input with statistics fitted on the training
features (stored as buffers, saved with the weights), then maps it to the
shared width.  ``kind="linear"`` is one affine map; ``kind="mlp"`` adds a
hidden layer with GELU and dropout on top of a linear skip path, so it can
only add to what a linear map does.  ``kind="identity"`` passes the encoder's
features through untouched: the modality is *locked* and its encoder's own
space becomes the shared space (LiT-style locking, and the frozen side of
progressive binding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
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

    def to_dict(self) -> dict:
        return asdict(self)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

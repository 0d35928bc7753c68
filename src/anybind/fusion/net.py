"""The fusion network: per-modality branches, one fusion kind, a head, the reconstruction decoder
and the unimodal probe heads.  Shared by :class:`FusionClassifier` and :class:`FusionRegressor`
(``n_out`` is the number of classes, or 1 for a regressor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("late", "concat", "gated", "attention")


class FusionNet(nn.Module):
    """Branches + fusion + head, the reconstruction decoder and the unimodal probe heads.

    * ``late``      mean of the present modalities' branch outputs -> linear head.
    * ``concat``    branch outputs concatenated; an absent modality contributes a learned
                    "missing" token, and the presence mask is an extra input.
    * ``gated``     a learned gate per modality, softmax over the present ones only.
    * ``attention`` a one-layer transformer encoder over modality tokens + a CLS token, with a
                    key padding mask hiding absent modalities; the head reads the CLS token.
    """

    def __init__(self, n_mod: int, dim: int, n_out: int, kind: str, hidden: int = 128, heads: int = 4):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown fusion kind {kind!r}: use one of {', '.join(KINDS)}")
        self.kind, self.n_mod, self.dim, self.hidden, self.n_out = kind, n_mod, dim, hidden, n_out
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) for _ in range(n_mod))
        self.missing = nn.Parameter(torch.zeros(n_mod, hidden))
        nn.init.normal_(self.missing, std=0.02)
        if kind == "concat":
            self.head = nn.Linear(n_mod * hidden + n_mod, n_out)
        else:
            self.head = nn.Linear(hidden, n_out)
        if kind == "gated":
            self.gates = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_mod))
        if kind == "attention":
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
            self.mod_emb = nn.Parameter(torch.zeros(1, n_mod, hidden))
            nn.init.normal_(self.cls, std=0.02)
            nn.init.normal_(self.mod_emb, std=0.02)
            layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.1, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden)
        # ActionMAE-style decoder: (masked embeddings, presence mask) -> every modality's embedding
        self.decoder = nn.Sequential(nn.Linear(n_mod * dim + n_mod, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, n_mod * dim))
        self.uni_heads = nn.ModuleList(nn.Linear(hidden, n_out) for _ in range(n_mod))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """(n, M, dim) -> (n, M, hidden)."""
        return torch.stack([b(x[:, i]) for i, b in enumerate(self.branches)], dim=1)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted unit embeddings (n, M, dim) of every modality from the present ones."""
        m = mask.float()
        inp = torch.cat([(x * m[..., None]).flatten(1), m], dim=1)
        return F.normalize(self.decoder(inp).view(len(x), self.n_mod, self.dim), dim=-1)

    def gate_weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = torch.cat([gate(h[:, i]) for i, gate in enumerate(self.gates)], dim=1)
        return torch.softmax(g.masked_fill(~mask, float("-inf")), dim=1)

    def fuse(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Outputs (n, n_out) from branch outputs (n, M, hidden) and the presence mask (n, M);
        every row needs at least one present modality."""
        m = mask.float()[..., None]
        if self.kind == "late":
            z = (h * m).sum(1) / m.sum(1).clamp_min(1)
            return self.head(z)
        if self.kind == "concat":
            tok = torch.where(mask[..., None], h, self.missing.expand_as(h))
            return self.head(torch.cat([tok.flatten(1), mask.float()], dim=1))
        if self.kind == "gated":
            w = self.gate_weights(h, mask)
            return self.head((w[..., None] * h).sum(1))
        tok = torch.where(mask[..., None], h, self.missing.expand_as(h)) + self.mod_emb
        seq = torch.cat([self.cls.expand(len(h), -1, -1), tok], dim=1)
        pad = torch.cat([torch.zeros(len(h), 1, dtype=torch.bool, device=h.device), ~mask], dim=1)
        out = self.encoder(seq, src_key_padding_mask=pad)
        return self.head(self.norm(out[:, 0]))

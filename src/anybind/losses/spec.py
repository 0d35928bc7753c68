"""Combining objectives: the weighted sum, the registry of names, and the ``"a+b:w"`` spec parser."""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .pairwise import Alignment, InfoNCE, IntraModal, M2Mix, SigLIP, Uniformity
from .symile import Symile

Tensor = torch.Tensor


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
PRESETS: dict[str, dict] = {"symile": {"negatives": "n"}, "symile-n2": {"negatives": "n2"}}


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


def make_term(name: str, kwargs: Mapping) -> nn.Module:
    cls = LOSSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    kw = {k: v for k, v in kwargs.items() if k in accepted}
    kw.update(PRESETS.get(name, {}))
    return cls(**kw)


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build an objective from a spec such as ``"infonce"`` or ``"infonce+uniformity:0.1+intra:0.5"``.

    ``kwargs`` go to every part that accepts them (``label_smoothing`` to
    InfoNCE, ``tau`` to the intra term, ...).  A single pairwise objective of
    weight 1 is returned as is; anything else as a :class:`CombinedLoss`.
    """
    parts = parse_loss_spec(name)
    if len(parts) == 1 and parts[0][1] == 1.0 and not getattr(LOSSES[parts[0][0]], "multimodal", False):
        return make_term(parts[0][0], kwargs)
    return CombinedLoss([(n, make_term(n, kwargs), w) for n, w in parts])


def is_multimodal(loss: nn.Module) -> bool:
    return bool(getattr(loss, "multimodal", False))

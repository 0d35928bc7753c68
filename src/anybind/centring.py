"""Inductive centring (``TrainConfig.center``, one of :mod:`anybind.robust`'s levers; split out of it, which
re-exports these): each modality's mean embedding over the training split is stored in its projector
(:meth:`~anybind.projectors.Projector.set_center`) and subtracted, then re-normalised, at embed time; :func:`centred`
does the same to any saved space."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .projectors import Projector
from .vocabulary import carry_vocabulary

if TYPE_CHECKING:
    from .data.manifest import Manifest, Record
    from .space_core import SpaceCore


@torch.no_grad()
def train_centers(projectors: Mapping[str, Projector],
                  feats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each modality's mean unit embedding of ``feats[m]`` (its training features), before any centring."""
    out = {}
    for m, X in feats.items():
        if not len(X):
            continue
        pr = projectors[m]
        pr.eval()
        blocks = (torch.from_numpy(np.ascontiguousarray(X[i:i + 4096], np.float32))
                  for i in range(0, len(X), 4096))
        E = [F.normalize(pr.uncentred(x), dim=-1) for x in blocks]
        out[m] = torch.cat(E).mean(0).numpy()
    return out


def center_projectors(projectors: Mapping[str, Projector],
                      feats: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Store in each projector the mean embedding of its modality's ``feats`` (the train split); returns each
    centre's norm (0: the embeddings spread evenly; near 1: one corner)."""
    norms = {}
    for m, c in train_centers(projectors, feats).items():
        projectors[m].set_center(c)
        norms[m] = round(float(np.linalg.norm(c)), 4)
    return norms


def centred(space: "SpaceCore", data: "Manifest | Sequence[Manifest] | Sequence[Record]", *,
            split: str | None = "train", cache=None) -> "SpaceCore":
    """A copy of ``space`` whose every modality is centred on its mean embedding over ``data`` (inductive:
    the records of ``split`` only, default ``train``; never the data the space is then scored on)."""
    from .cache import FeatureCache
    from .data.manifest import Manifest

    items = [data] if isinstance(data, Manifest) else list(data)
    recs = [r for it in items for r in (it.records if isinstance(it, Manifest) else [it])]
    recs = [r for r in recs if split is None or r.split == split]
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    projectors = {m: copy.deepcopy(p) for m, p in space.projectors.items()}
    feats = {}
    for m in space.modalities:
        have = [r.values[m] for r in recs if r.has(m)]
        if have:
            feats[m] = space.features(m, have, cache=fc)
    if not feats:
        raise DataError(f"centring: no {split or 'given'} record has any of the modalities "
                        f"{', '.join(space.modalities)}")
    norms = center_projectors(projectors, feats)
    info = copy.deepcopy(space.info)
    info.setdefault("lineage", []).append(
        {"event": "centre", "split": split, "records": len(recs), "center_norms": norms})
    out = space.derived(space.encoders, projectors, space.logit_scale, identities=space.identities,
                         config=copy.deepcopy(space.config), info=info, format_version=max(space.format_version, 2))
    return carry_vocabulary(space, out, cache=fc)  # the centred text modality embeds it again

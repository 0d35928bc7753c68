"""How a space scores: one rule, chosen by the space (:attr:`anybind.Space.scorer`), used wherever
anything is scored -- :meth:`Space.similarity`, :func:`anybind.evaluate.evaluate`, zero-shot,
:meth:`anybind.index.Index.search` / ``classify``, the CLI and the service.

* **cosine** (every space trained pairwise): ``score(q, c) = q . c`` of unit vectors.  Several query
  inputs are fused as the weighted mean of their unit vectors, renormalised.
* **mip** (a space trained with Symile, saved with learnt "missing" embeddings): the multilinear inner
  product ``MIP(q_1, ..., q_k, c, missing_m, ...) = (q_1 * ... * q_k * missing_m * ...) . c``, where
  every bound modality that is neither among the query's nor the candidate's stands in with its learnt
  missing embedding, as in training (see :mod:`anybind.multilinear`).  Several items of *one* modality
  are averaged (weighted) first; different modalities multiply -- "the audio that goes with this image
  and this text" is their product, not their mean.

Either way a query becomes one vector per candidate modality, ``score = query . candidate``: an
index searches with its direction and scales the scores back by its norm, so a ranking never
depends on the search structure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

COSINE, MIP = "cosine", "mip"


@dataclass(frozen=True)
class Scorer:
    """The space's scoring rule; ``missing`` (Symile's learnt missing embeddings) makes it MIP."""

    missing: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: Mapping) -> "Scorer":
        raw = info.get("missing_embeddings") or {}
        return cls({m: np.asarray(v, dtype=np.float32) for m, v in raw.items()})

    @property
    def kind(self) -> str:
        return MIP if self.missing else COSINE

    def stand_in(self, given: Iterable[str | None], target: str | None) -> np.ndarray | None:
        """The product of the missing embeddings of every modality neither ``given`` nor ``target``
        (``None``: nothing stands in -- a cosine space, or every modality present)."""
        present = set(given) | {target}
        w = None
        for m, e in self.missing.items():
            if m not in present:
                w = e.copy() if w is None else w * e
        return w

    def query(
        self,
        parts: Sequence[tuple[str | None, np.ndarray]],
        target: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> np.ndarray:
        """One query vector (d,) for candidates of modality ``target`` from ``(modality, unit vector)``
        parts (modality ``None``: a raw query vector, taken as it is).

        Cosine: the weighted sum of the parts (its direction is the query; ``target`` is not needed).
        MIP: per modality the weighted mean of its parts, the modalities multiplied, times
        :meth:`stand_in`, so that ``query . candidate`` is the space's score.  Not renormalised.
        """
        if not parts:
            raise ValueError("a query needs at least one part")
        if len(parts) == 1 and weights is None and self.kind == COSINE:  # the sum below, of one part (1 x v = v)
            return np.array(parts[0][1], np.float32).reshape(-1)
        W = np.ones(len(parts), np.float32) if weights is None else np.asarray(weights, np.float32)
        V = np.stack([np.asarray(v, np.float32) for _, v in parts])
        if self.kind == COSINE:
            return (W[:, None] * V).sum(0).astype(np.float32)
        out = np.ones(V.shape[1], np.float32)
        mods = list(dict.fromkeys(m for m, _ in parts))
        for m in mods:
            rows = [i for i, (pm, _) in enumerate(parts) if pm == m]
            out = out * (W[rows, None] * V[rows]).sum(0) / max(float(np.abs(W[rows]).sum()), 1e-12)
        w = self.stand_in(mods, target)
        return (out if w is None else out * w).astype(np.float32)

    def weigh(self, X: np.ndarray, modality: str, target: str) -> np.ndarray:
        """Rows of ``modality`` made into queries against ``target``: ``X * stand_in`` (MIP), ``X`` (cosine)."""
        w = self.stand_in([modality], target)
        return X if w is None else X * w

    def pair_scores(self, A: np.ndarray, mod_a: str, B: np.ndarray, mod_b: str) -> np.ndarray:
        """Scores (len(A), len(B)) between embeddings of two modalities."""
        return self.weigh(np.asarray(A, np.float32), mod_a, mod_b) @ np.asarray(B, np.float32).T

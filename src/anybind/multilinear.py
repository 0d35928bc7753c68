"""Scoring with the multilinear inner product (MIP), for spaces trained with Symile.

A Symile space scores a *tuple* of items, one per modality::

    MIP(a, b, c) = sum_k a[k] * b[k] * c[k]

so "which c goes with this a and this b" ranks candidates by ``(a * b) . c``.
A modality that is not given is represented by its learnt "missing"
embedding (saved in ``space.info["missing_embeddings"]``), as in training;
pairwise retrieval a -> b in a three-modality Symile space is therefore
``MIP(a, b, missing_c)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .metrics import KS, retrieval_from_embeddings
from .scoring import Scorer

if TYPE_CHECKING:
    from .space_core import SpaceCore


def mip_scores(candidates: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """(n_queries, n_candidates) MIPs: row i scores every candidate with the i-th item of each query modality.

    Each query array is (n_queries, d) or (d,) (one item shared by every query).
    Mirrors ``symile.MIPSimilarity`` (``candidates`` first).
    """
    C = np.asarray(candidates, dtype=np.float32)
    if not queries:
        raise ValueError("give at least one query modality")
    prod = np.ones(C.shape[1], dtype=np.float32)
    for q in queries:
        q = np.asarray(q, dtype=np.float32)
        if q.shape[-1] != C.shape[1]:
            raise ValueError(f"query of width {q.shape[-1]} against candidates of width {C.shape[1]}")
        prod = prod * q
    return np.atleast_2d(prod) @ C.T


def mip_predict(candidates: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the best candidate for each query tuple (zero-shot classification with MIP)."""
    return mip_scores(candidates, queries).argmax(1)


def missing_embeddings(space: "SpaceCore") -> dict[str, np.ndarray]:
    """The learnt "missing" embedding of each modality of a Symile space ({} for other spaces)."""
    return dict(space.scorer.missing)


def mip_retrieval_from_embeddings(
    embs: Mapping[str, tuple],
    missing: Mapping[str, np.ndarray],
    pairs: Iterable[tuple[str, str]] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Like :func:`anybind.evaluate.retrieval_from_embeddings`, scored by ``MIP(query, item, missing...)``.

    Every modality in ``missing`` other than the pair's two stands in with its
    missing embedding; same keys (``"a->b/R@1"``...) as the cosine version.
    """
    return retrieval_from_embeddings(embs, pairs, ks, scorer=Scorer(dict(missing)))

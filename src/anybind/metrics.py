"""Retrieval metrics over embeddings: pure functions of arrays, returning flat dicts.

``{"R@1": 0.41, "R@5": ..., "MdR": 3.0, "n": 187}`` per direction; :func:`retrieval_from_embeddings` prefixes each
key with ``"<query>-><gallery>/"``.  Relevance is explicit: ``queries[i]`` should find ``gallery[i]``, and items
with identical *content* (content keys or frozen input features, never the embeddings being scored) are
interchangeable.  Used by training (early stopping), alignment, evaluation and the benches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .scoring import Scorer

KS = (1, 5, 10)


class Embedded(NamedTuple):
    """Embeddings of one modality of some records: ``ids[i]``'s vector is ``vectors[i]``; ``keys[i]`` is its
    content key (equal keys = identical content, interchangeable in retrieval), or ``None`` when unknown."""

    ids: Sequence[str]
    vectors: np.ndarray
    keys: Sequence[Any] | np.ndarray | None = None


def as_embedded(x: "Embedded | tuple") -> Embedded:
    """An :class:`Embedded` from itself or a plain ``(ids, vectors[, keys])`` tuple."""
    return x if isinstance(x, Embedded) else Embedded(*x)


def _duplicate_groups(X: np.ndarray) -> np.ndarray:
    """Group index of each row; identical rows (identical content) share a group."""
    return np.unique(np.ascontiguousarray(X), axis=0, return_inverse=True)[1].reshape(-1)


def ranks_of_diagonal(sim: np.ndarray, relevant: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the best relevant item of each row (default: ``sim[i, i]`` alone).

    Ties with irrelevant items count against the query (pessimistic), so a
    collapsed space scores like chance or worse, never well; so does a NaN among a row's
    scores (a non-finite map): its query ranks last, never first.
    """
    n = sim.shape[0]
    if relevant is None:
        relevant = np.eye(n, dtype=bool)
    best = np.where(relevant, sim, -np.inf).max(1, keepdims=True)
    ranks = 1 + ((sim >= best) & ~relevant).sum(1)
    return np.where(np.isnan(sim).any(1), 1 + (~relevant).sum(1), ranks)


def content_groups(keys: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Group index per item from content keys (strings) or from frozen *input* feature rows."""
    if isinstance(keys, np.ndarray) and keys.ndim == 2:
        return _duplicate_groups(keys)
    return np.unique(np.asarray([str(k) for k in keys]), return_inverse=True)[1].reshape(-1)


def pair_recalls(
    queries: np.ndarray,
    gallery: np.ndarray,
    ks: Sequence[int] = KS,
    *,
    query_keys: Sequence[Any] | np.ndarray | None = None,
    gallery_keys: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """Recall@K and median rank when ``queries[i]`` should retrieve ``gallery[i]``.

    Items with identical *content* are interchangeable: when several queries
    are identical (two stamps captioned "A flower.") any of their partners is
    a correct answer, and likewise identical gallery items.  Content identity
    comes from ``*_keys`` (content keys, or the frozen input features) -- never
    from the embeddings being scored, so a collapsed space cannot profit.
    """
    return sim_recalls(queries @ gallery.T, ks, query_keys=query_keys, gallery_keys=gallery_keys)


def paired_rows(embs: Mapping[str, "Embedded | tuple"], pairs: Iterable[tuple[str, str]] | None = None):
    """For each modality pair (default: all), the rows of ``embs[a]`` and ``embs[b]`` of the records having both.

    Yields ``(a, b, rows_a, rows_b)``; pairs with fewer than 2 common records are skipped.
    """
    mods = sorted(embs)
    for a, b in list(pairs) if pairs is not None else list(itertools.combinations(mods, 2)):
        pos_b = {i: k for k, i in enumerate(as_embedded(embs[b]).ids)}
        common = [(k, pos_b[i]) for k, i in enumerate(as_embedded(embs[a]).ids) if i in pos_b]
        if len(common) < 2:
            continue
        ia, ib = (np.asarray(x) for x in zip(*common))
        yield a, b, ia, ib


def retrieval_from_embeddings(
    embs: Mapping[str, "Embedded | tuple"],
    pairs: Iterable[tuple[str, str]] | None = None,
    ks: Sequence[int] = KS,
    *,
    rerank: str | None = None,
    banks: Mapping[str, np.ndarray] | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    scorer: "Scorer | None" = None,
) -> dict[str, float]:
    """Retrieval metrics for every ordered modality pair.

    ``scorer``: the space's scoring rule (:attr:`anybind.Space.scorer`); default cosine.  In a Symile
    space each query row is weighted by the missing embeddings of the modalities not in the pair.

    ``embs[m] = Embedded(ids, X, keys)`` (or a plain ``(ids, X[, keys])`` tuple); for pair (a, b) the evaluation set is the ids that
    have both, and each a-query must find its own record's b-item among all of them.

    ``rerank`` (``"csls"``, ``"qbnorm"``, ``"invgc"``, see :mod:`anybind.rerank`)
    re-scores each direction with a hubness correction; ``banks[m]`` are the
    bank embeddings of modality ``m`` (e.g. the training split's), used as the
    query bank when ``m`` is the query side and as the gallery bank when it is
    the gallery side.  Without a bank for a modality, its evaluation items
    themselves are the bank.
    """
    out: dict[str, float] = {}
    embs = {m: as_embedded(e) for m, e in embs.items()}
    for a, b, ia, ib in paired_rows(embs, pairs):
        for (q, qi), (g, gi), name in (((a, ia), (b, ib), f"{a}->{b}"), ((b, ib), (a, ia), f"{b}->{a}")):
            Q = embs[q].vectors[qi] if scorer is None else scorer.weigh(embs[q].vectors[qi], q, g)
            G = embs[g].vectors[gi]
            keys = {
                "query_keys": None if embs[q].keys is None else [embs[q].keys[i] for i in qi],
                "gallery_keys": None if embs[g].keys is None else [embs[g].keys[i] for i in gi],
            }
            if rerank is None:
                res = pair_recalls(Q, G, ks, **keys)
            else:
                from .rerank import apply_rerank

                qb = (banks or {}).get(q, Q)
                gb = (banks or {}).get(g, G)
                res = sim_recalls(
                    apply_rerank(rerank, Q, G, query_bank=qb, gallery_bank=gb, params=rerank_params), ks, **keys
                )
            for k, v in res.items():
                out[f"{name}/{k}"] = v
    return out


def sim_recalls(
    sim: np.ndarray,
    ks: Sequence[int] = KS,
    *,
    query_keys: Sequence[Any] | np.ndarray | None = None,
    gallery_keys: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """Like :func:`pair_recalls` on a ready (possibly re-scored) similarity matrix."""
    r = query_ranks(sim, query_keys=query_keys, gallery_keys=gallery_keys)
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["MdR"] = float(np.median(r))
    out["n"] = int(len(r))
    return out


def query_ranks(
    sim: np.ndarray,
    *,
    query_keys: Sequence[Any] | np.ndarray | None = None,
    gallery_keys: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """1-based rank of each query's best relevant gallery item (row ``i`` should find column ``i``; identical
    content, from the keys, is interchangeable as in :func:`pair_recalls`): per-query, for bootstrap intervals."""
    sim = np.asarray(sim)
    relevant = np.eye(len(sim), dtype=bool)
    if query_keys is not None:
        qg = content_groups(query_keys)
        relevant |= qg[:, None] == qg[None, :]
    if gallery_keys is not None:
        gg = content_groups(gallery_keys)
        relevant |= gg[:, None] == gg[None, :]
    return ranks_of_diagonal(sim, relevant)


def chance_metrics(res: dict[str, float]) -> dict[str, float]:
    """Expected retrieval metrics of a random ranking with the same gallery sizes."""
    out = {}
    for k, v in res.items():
        if k.endswith("/n"):
            d, n = k[:-2], int(v)
            for kk in KS:
                out[f"{d}/R@{kk}"] = min(kk, n) / n
            out[f"{d}/MdR"] = (n + 1) / 2
            out[f"{d}/n"] = n
    return out


def mean_and_lower_bound(values: Sequence[float] | np.ndarray, z: float = 2.0) -> tuple[float, float]:
    """The mean of per-query values (a recall@k each) and its lower bound: the mean less ``z`` standard errors of
    it, the margin a setting chosen on tuning queries needs (a mean just at a target leaves about even odds that
    other queries fall below it).  One value: no margin."""
    r = np.asarray(values, dtype=np.float64)
    se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0
    return float(r.mean()), float(r.mean()) - z * se

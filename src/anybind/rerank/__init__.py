"""Hubness corrections applied at query time.

In a high-dimensional shared space a few gallery items ("hubs") are the
nearest neighbour of many queries whatever those queries are about, and
cross-modal retrieval suffers from it.  The corrections below re-score a
query x gallery similarity matrix using *banks*: embeddings of typical
queries (a query bank, e.g. the training captions) and of typical gallery
items (a gallery bank, e.g. the training images).  None of them trains
anything; all are plain numpy on similarity matrices or embeddings:

* :func:`csls` -- Cross-domain Similarity Local Scaling (Conneau et al. 2018,
  "Word Translation Without Parallel Data"):
  ``2 cos(q, g) - r_G(q) - r_Q(g)``, where ``r_G(q)`` is the mean similarity of
  ``q`` to its ``k`` nearest gallery items and ``r_Q(g)`` the mean similarity of
  ``g`` to its ``k`` nearest bank queries.
* :func:`qb_norm` -- Querybank Normalisation with the Dynamic Inverted
  Softmax (Bogolin et al. 2022, "Cross Modal Retrieval with Querybank
  Normalisation"): a query whose raw top-1 is a gallery item that some bank
  query also ranks first gets its row replaced by
  ``exp(beta s(q, g)) / sum_b exp(beta s(b, g))``; other rows are kept.
* :func:`invgc` -- Inverse Graph Convolution with LocalAdj (Wang et al. 2023,
  "Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query and
  Gallery Banks"): every gallery embedding is pushed *away* from its nearest
  neighbours in the gallery bank and in the query bank,
  ``g' = g - r * mean_{top-k neighbours b} s(g, b) b`` (once per bank, the two
  results renormalised and averaged), and queries are scored against ``g'``.

:func:`hubness` measures the problem: the skewness of the k-occurrence
distribution (how many queries have each gallery item in their top-k).
:func:`apply_rerank` dispatches by name and is what ``Index.search(rerank=...)``
and ``anybind eval --rerank ...`` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DataError
from .common import SELF_TOL, f32, mean_topk, without_self
from .invgc import invgc, invgc_gallery

__all__ = [
    "DEFAULTS",
    "RERANKERS",
    "SELF_TOL",
    "activation_set",
    "apply_rerank",
    "check_method",
    "csls",
    "hubness",
    "invgc",
    "invgc_gallery",
    "k_occurrence",
    "params_for",
    "qb_norm",
]

RERANKERS = ("csls", "qbnorm", "invgc")

#: defaults: the papers' settings (CSLS k=10, QB-Norm beta=20 with k=1, InvGC LocalAdj pool 1%); the
#: ``hubness`` bench task instead picks each method's parameters on a validation split
DEFAULTS: dict[str, dict[str, Any]] = {
    "csls": {"k": 10},
    "qbnorm": {"beta": 20.0, "k": 1},
    "invgc": {"r_g": 0.5, "r_q": 0.5, "pool_rate": 0.01, "local_adj": True},
}


# ---------------------------------------------------------------------------------------
# hubness measurement
# ---------------------------------------------------------------------------------------
def k_occurrence(sim: np.ndarray, k: int = 10) -> np.ndarray:
    """``N_k(g)``: for every gallery column, how many query rows have it in their top-``k``."""
    sim = np.asarray(sim)
    nq, ng = sim.shape
    k = max(1, min(int(k), ng))
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return np.bincount(top.ravel(), minlength=ng)


def hubness(sim: np.ndarray, k: int = 10) -> dict[str, float]:
    """Skewness of the k-occurrence distribution (0 = no hubs) and how concentrated it is.

    Returns ``skewness`` (third standardised moment of ``N_k``), ``max`` (the
    biggest hub's count / k, i.e. in "queries' worth"), and ``orphans`` (the
    fraction of gallery items in nobody's top-k).
    """
    from scipy.stats import skew

    nk = k_occurrence(sim, k).astype(np.float64)
    return {
        "skewness": float(skew(nk)) if nk.std() > 0 else 0.0,
        "max": float(nk.max() / max(1, k)),
        "orphans": float((nk == 0).mean()),
    }


# ---------------------------------------------------------------------------------------
# CSLS
# ---------------------------------------------------------------------------------------
def csls(
    sim: np.ndarray,
    bank_sim: np.ndarray,
    k: int = 10,
    *,
    query_knn: np.ndarray | None = None,
    self_tol: float | None = SELF_TOL,
    bank_ids: Any = None,
    gallery_ids: Any = None,
) -> np.ndarray:
    """Cross-domain Similarity Local Scaling.

    sim: (n_queries, n_gallery) cosine similarities.
    bank_sim: (n_bank, n_gallery) similarities of the query-bank items to the same gallery.
    k: neighbourhood size of both mean terms.
    query_knn: optional (n_queries,) precomputed ``r_G(q)`` (mean similarity of
        each query to its k nearest gallery items); by default computed from
        ``sim``.  It is constant within a row, so it never changes a ranking,
        only the score scale.
    self_tol, bank_ids, gallery_ids: bank entries that are the gallery item itself (or its
        own record's partner) are skipped, see :func:`without_self`.
    Returns ``2 sim - r_G(q)[:, None] - r_Q(g)[None, :]``.
    """
    sim = np.asarray(sim, dtype=np.float32)
    bank_sim = np.asarray(bank_sim, dtype=np.float32)
    if bank_sim.shape[1] != sim.shape[1]:
        raise ValueError(f"bank_sim has {bank_sim.shape[1]} gallery columns, sim has {sim.shape[1]}")
    r_q = mean_topk(
        without_self(bank_sim, self_tol, bank_ids, gallery_ids), k, axis=0
    )  # mean sim to its k nearest bank queries
    r_g = mean_topk(sim, k, axis=1) if query_knn is None else np.asarray(query_knn, np.float32)
    return 2 * sim - r_g[:, None] - r_q[None, :]


# ---------------------------------------------------------------------------------------
# QB-Norm, dynamic inverted softmax
# ---------------------------------------------------------------------------------------
def activation_set(
    bank_sim: np.ndarray,
    k: int = 1,
    *,
    self_tol: float | None = SELF_TOL,
    bank_ids: Any = None,
    gallery_ids: Any = None,
) -> np.ndarray:
    """Boolean mask over gallery columns: items in the top-``k`` of at least one bank query
    (a bank query does not activate the gallery item it is, or its own record's partner)."""
    bank_sim = without_self(bank_sim, self_tol, bank_ids, gallery_ids)
    ng = bank_sim.shape[1]
    k = max(1, min(int(k), ng))
    top = np.argpartition(-bank_sim, k - 1, axis=1)[:, :k]
    ok = np.isfinite(np.take_along_axis(bank_sim, top, axis=1))
    mask = np.zeros(ng, dtype=bool)
    mask[np.unique(top[ok])] = True
    return mask


def qb_norm(
    sim: np.ndarray,
    bank_sim: np.ndarray,
    beta: float = 20.0,
    k: int = 1,
    *,
    active: np.ndarray | None = None,
    log_denominator: np.ndarray | None = None,
    self_tol: float | None = SELF_TOL,
    bank_ids: Any = None,
    gallery_ids: Any = None,
) -> np.ndarray:
    """Querybank Normalisation with the Dynamic Inverted Softmax.

    sim: (n_queries, n_gallery); bank_sim: (n_bank, n_gallery) query-bank similarities.
    beta: inverse temperature of the inverted softmax (the paper's 20 for CLIP-like spaces).
    k: a gallery item is "activated" when it is in the top-k of some bank query.
    active: optional precomputed activation mask over the gallery columns (for
        when ``sim`` holds a subset of the gallery, e.g. search candidates, but the
        activation set was computed on the whole gallery).
    log_denominator: optional precomputed ``logsumexp_b(beta * bank_sim[b, g])`` per column.
    self_tol, bank_ids, gallery_ids: bank entries that are the gallery item itself (or its
        own record's partner) are skipped, see :func:`without_self`.

    Rows whose raw top-1 column is activated become
    ``exp(beta * s - logsumexp_b(beta * s_bank))``; other rows are returned unchanged.
    """
    sim = np.asarray(sim, dtype=np.float32)
    out = sim.copy()
    if sim.size == 0:
        return out
    if active is None:
        active = activation_set(bank_sim, k, self_tol=self_tol, bank_ids=bank_ids, gallery_ids=gallery_ids)
    if log_denominator is None:
        from scipy.special import logsumexp

        B = without_self(bank_sim, self_tol, bank_ids, gallery_ids).astype(np.float64)
        log_denominator = logsumexp(beta * B, axis=0)
        log_denominator = np.where(np.isfinite(log_denominator), log_denominator, 0.0)  # no bank item left
    top1 = sim.argmax(axis=1)
    rows = np.nonzero(np.asarray(active)[top1])[0]
    if len(rows):
        out[rows] = np.exp(beta * sim[rows].astype(np.float64) - np.asarray(log_denominator)[None, :]).astype(
            np.float32
        )
    return out


# ---------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------
def check_method(method: str | None) -> str | None:
    """Normalise a rerank name (``None``/``"none"`` -> ``None``); unknown names raise :class:`DataError`."""
    if method is None:
        return None
    m = str(method).strip().lower().replace("-", "").replace("_", "")
    if m in ("", "none", "off"):
        return None
    aliases = {"qbnorm": "qbnorm", "dis": "qbnorm", "csls": "csls", "invgc": "invgc"}
    if m not in aliases:
        raise DataError(f"unknown rerank method {method!r} (use one of {', '.join(RERANKERS)} or none)")
    return aliases[m]


def params_for(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults overridden by ``params`` (unknown keys raise)."""
    base = dict(DEFAULTS[method])
    for k, v in (params or {}).items():
        if k not in base:
            raise DataError(f"{method}: unknown parameter {k!r} (known: {', '.join(base)})")
        base[k] = type(base[k])(v) if not isinstance(base[k], bool) else bool(v)
    return base


def apply_rerank(
    method: str | None,
    queries: np.ndarray,
    gallery: np.ndarray,
    *,
    query_bank: np.ndarray | None,
    gallery_bank: np.ndarray | None = None,
    params: Mapping[str, Any] | None = None,
    sim: np.ndarray | None = None,
    gallery_ids: Any = None,
    query_bank_ids: Any = None,
    gallery_bank_ids: Any = None,
) -> np.ndarray:
    """Corrected (n_queries, n_gallery) scores of ``queries`` against ``gallery``.

    method: ``"csls"``, ``"qbnorm"``, ``"invgc"`` or ``None`` (plain cosine).
    query_bank: embeddings of typical queries (same modality as ``queries``);
        CSLS and QB-Norm need it, InvGC uses it when given.
    gallery_bank: embeddings of typical gallery items (InvGC only; default: the gallery itself).
    params: overrides of :data:`DEFAULTS`.
    sim: the raw ``queries @ gallery.T`` when the caller already has it.
    gallery_ids, query_bank_ids, gallery_bank_ids: record ids; bank items of a gallery item's
        own record are left out of its statistics (needed when the banks come from the
        gallery's own corpus, as in an index; see :func:`without_self`).
    """
    method = check_method(method)
    Q, G = f32(queries), f32(gallery)
    if method is None:
        return Q @ G.T if sim is None else np.asarray(sim, np.float32)
    p = params_for(method, params)
    if method == "invgc":
        if gallery_bank is None:
            gallery_bank, gallery_bank_ids = G, gallery_ids
        return invgc(
            Q,
            G,
            query_bank,
            gallery_bank,
            **p,
            gallery_ids=gallery_ids,
            query_bank_ids=query_bank_ids,
            gallery_bank_ids=gallery_bank_ids,
        )
    if query_bank is None or len(query_bank) == 0:
        raise DataError(f"{method} needs a query bank (embeddings of typical queries of the query modality)")
    S = Q @ G.T if sim is None else np.asarray(sim, np.float32)
    B = f32(query_bank) @ G.T
    ids = {"bank_ids": query_bank_ids, "gallery_ids": gallery_ids}
    if method == "csls":
        return csls(S, B, k=p["k"], **ids)
    return qb_norm(S, B, beta=p["beta"], k=p["k"], **ids)

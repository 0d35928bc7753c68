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

from .errors import DataError

RERANKERS = ("csls", "qbnorm", "invgc")

#: defaults: the papers' settings (CSLS k=10, QB-Norm beta=20 with k=1, InvGC LocalAdj pool 1%); the
#: ``hubness`` bench task instead picks each method's parameters on a validation split
DEFAULTS: dict[str, dict[str, Any]] = {
    "csls": {"k": 10},
    "qbnorm": {"beta": 20.0, "k": 1},
    "invgc": {"r_g": 0.5, "r_q": 0.5, "pool_rate": 0.01, "local_adj": True},
}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _mean_topk(mat: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean of the ``k`` largest values along ``axis`` (-inf entries are excluded; none left -> 0)."""
    n = mat.shape[axis]
    k = max(1, min(int(k), n))
    if k == n:
        top = mat
    else:
        part = np.partition(mat, n - k, axis=axis)
        sl = [slice(None)] * mat.ndim
        sl[axis] = slice(n - k, None)
        top = part[tuple(sl)]
    if np.isfinite(top).all():
        return top.mean(axis=axis)
    fin = np.isfinite(top)
    return np.where(fin, top, 0.0).sum(axis=axis) / np.maximum(fin.sum(axis=axis), 1)


SELF_TOL = 1e-5  #: a bank item this close (cosine above 1 - SELF_TOL) to a gallery item *is* that item


def _without_self(
    bank_sim: np.ndarray, tol: float | None, bank_ids: Any = None, gallery_ids: Any = None
) -> np.ndarray:
    """``bank_sim`` (n_bank, n_gallery) with the entries that are the gallery item itself set to -inf.

    When the bank holds the gallery items themselves (an index searched within one modality),
    an item must not count as its own bank neighbour: it would look like the biggest hub of
    all.  Entries above ``1 - tol`` are such self matches.  With ``bank_ids`` and
    ``gallery_ids`` (record ids), every pair from the same record is left out as well: a
    record's own caption is not a typical query for its own image, and counting it would
    single out exactly the items whose partners happen to be in the bank.
    """
    b = np.asarray(bank_sim, dtype=np.float32)
    mask = (b > 1.0 - tol) if tol is not None else np.zeros(b.shape, bool)
    if bank_ids is not None and gallery_ids is not None:
        mask |= np.asarray(bank_ids, dtype=object)[:, None] == np.asarray(gallery_ids, dtype=object)[None, :]
    return np.where(mask, -np.inf, b).astype(np.float32) if mask.any() else b


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


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
        own record's partner) are skipped, see :func:`_without_self`.
    Returns ``2 sim - r_G(q)[:, None] - r_Q(g)[None, :]``.
    """
    sim = np.asarray(sim, dtype=np.float32)
    bank_sim = np.asarray(bank_sim, dtype=np.float32)
    if bank_sim.shape[1] != sim.shape[1]:
        raise ValueError(f"bank_sim has {bank_sim.shape[1]} gallery columns, sim has {sim.shape[1]}")
    r_q = _mean_topk(
        _without_self(bank_sim, self_tol, bank_ids, gallery_ids), k, axis=0
    )  # mean sim to its k nearest bank queries
    r_g = _mean_topk(sim, k, axis=1) if query_knn is None else np.asarray(query_knn, np.float32)
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
    bank_sim = _without_self(bank_sim, self_tol, bank_ids, gallery_ids)
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
        own record's partner) are skipped, see :func:`_without_self`.

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

        B = _without_self(bank_sim, self_tol, bank_ids, gallery_ids).astype(np.float64)
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
# InvGC (with LocalAdj)
# ---------------------------------------------------------------------------------------
def _invgc_message(
    gallery: np.ndarray,
    bank: np.ndarray,
    rate: float,
    local_adj: bool,
    pool_rate: float,
    budget: int = 1 << 24,
    self_tol: float | None = SELF_TOL,
    gallery_ids: Any = None,
    bank_ids: Any = None,
) -> np.ndarray:
    """One inverse convolution of ``gallery`` against ``bank`` (then renormalised).

    Works through the gallery in chunks so that the (chunk, bank) adjacency
    stays under ``budget`` floats.  Bank items identical to the row (cosine
    above ``1 - self_tol``), or from the same record (equal ids, when given),
    get weight 0, so a gallery that is its own bank is not pushed away from
    itself, nor an image from its own caption.
    """
    gids = None if gallery_ids is None or bank_ids is None else np.asarray(gallery_ids, dtype=object)
    bids = None if gids is None else np.asarray(bank_ids, dtype=object)
    out = np.empty_like(gallery)
    nb = len(bank)
    pnum = max(1, int(pool_rate * nb))
    chunk = max(1, budget // max(1, nb))
    mean_w = None
    if not local_adj:  # the dense variant centres on the mean similarity over the whole gallery x bank
        mean_w = sum(float((gallery[s : s + chunk] @ bank.T).sum()) for s in range(0, len(gallery), chunk))
        mean_w /= max(1, len(gallery) * nb)
    for s in range(0, len(gallery), chunk):
        g = gallery[s : s + chunk]
        w = g @ bank.T  # (c, nb) adjacency
        self_mask = (w > 1.0 - self_tol) if self_tol is not None else None
        if gids is not None:
            same = gids[s : s + chunk, None] == bids[None, :]
            self_mask = same if self_mask is None else (self_mask | same)
        if local_adj:
            if pnum < nb:  # keep each row's pnum strongest edges (with their similarities), zero the rest
                sel = w if self_mask is None else np.where(self_mask, -np.inf, w)
                idx = np.argpartition(-sel, pnum - 1, axis=1)[:, :pnum]
                vals = np.take_along_axis(sel, idx, axis=1)
                sparse = np.zeros_like(w)
                np.put_along_axis(sparse, idx, np.where(np.isfinite(vals), vals, 0.0), axis=1)
                w = sparse
            elif self_mask is not None:
                w = np.where(self_mask, 0.0, w)
            msg = (w @ bank) / pnum
        else:
            c = w - mean_w
            if self_mask is not None:
                c[self_mask] = 0.0
            msg = (c @ bank) / nb
        out[s : s + chunk] = _normalize(g - rate * msg)
    return out


def invgc_gallery(
    gallery: np.ndarray,
    query_bank: np.ndarray | None,
    gallery_bank: np.ndarray | None,
    r_g: float = 0.5,
    r_q: float = 0.5,
    pool_rate: float = 0.01,
    local_adj: bool = True,
    *,
    gallery_ids: Any = None,
    query_bank_ids: Any = None,
    gallery_bank_ids: Any = None,
) -> np.ndarray:
    """The InvGC-updated gallery embeddings (unit norm), one per input row.

    Each row moves away from the (similarity-weighted) mean of its
    ``max(1, pool_rate * len(bank))`` nearest neighbours in the gallery bank
    (rate ``r_g``) and in the query bank (rate ``r_q``); the two updates are
    averaged and renormalised.  A missing bank contributes the unchanged row.
    ``local_adj=False`` is the dense variant (every bank item, similarities
    centred on their mean).  With record ids, bank items of the row's own record are skipped.
    """
    g = _normalize(_f32(gallery))
    msgs = []
    for bank, rate, bids in ((gallery_bank, r_g, gallery_bank_ids), (query_bank, r_q, query_bank_ids)):
        if bank is None or len(bank) == 0:
            msgs.append(g)
        else:
            msgs.append(
                _invgc_message(
                    g, _f32(bank), rate, local_adj, pool_rate, gallery_ids=gallery_ids, bank_ids=bids
                )
            )
    return _normalize(0.5 * msgs[0] + 0.5 * msgs[1])


def invgc(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_bank: np.ndarray | None,
    gallery_bank: np.ndarray | None,
    r_g: float = 0.5,
    r_q: float = 0.5,
    pool_rate: float = 0.01,
    local_adj: bool = True,
    **ids: Any,
) -> np.ndarray:
    """Similarities (n_queries, n_gallery) of the queries to the InvGC-updated gallery
    (``ids``: ``gallery_ids``, ``query_bank_ids``, ``gallery_bank_ids``, see :func:`invgc_gallery`)."""
    g2 = invgc_gallery(
        gallery, query_bank, gallery_bank, r_g=r_g, r_q=r_q, pool_rate=pool_rate, local_adj=local_adj, **ids
    )
    return _f32(queries) @ g2.T


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
        gallery's own corpus, as in an index; see :func:`_without_self`).
    """
    method = check_method(method)
    Q, G = _f32(queries), _f32(gallery)
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
    B = _f32(query_bank) @ G.T
    ids = {"bank_ids": query_bank_ids, "gallery_ids": gallery_ids}
    if method == "csls":
        return csls(S, B, k=p["k"], **ids)
    return qb_norm(S, B, beta=p["beta"], k=p["k"], **ids)

"""InvGC with LocalAdj (Wang et al. 2023, "Balance Act"): gallery embeddings pushed away from their nearest
neighbours in the gallery and query banks; see :mod:`anybind.rerank`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import SELF_TOL, f32, normalize


# ---------------------------------------------------------------------------------------
# InvGC (with LocalAdj)
# ---------------------------------------------------------------------------------------
def invgc_message(
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
        out[s : s + chunk] = normalize(g - rate * msg)
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
    g = normalize(f32(gallery))
    msgs = []
    for bank, rate, bids in ((gallery_bank, r_g, gallery_bank_ids), (query_bank, r_q, query_bank_ids)):
        if bank is None or len(bank) == 0:
            msgs.append(g)
        else:
            msgs.append(
                invgc_message(
                    g, f32(bank), rate, local_adj, pool_rate, gallery_ids=gallery_ids, bank_ids=bids
                )
            )
    return normalize(0.5 * msgs[0] + 0.5 * msgs[1])


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
    return f32(queries) @ g2.T

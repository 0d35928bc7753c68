"""Row statistics the hubness corrections share (float32 views, top-k means, leaving an item out of its own bank)."""

from __future__ import annotations

from typing import Any

import numpy as np


def f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def mean_topk(mat: np.ndarray, k: int, axis: int) -> np.ndarray:
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


def without_self(
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


def normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)

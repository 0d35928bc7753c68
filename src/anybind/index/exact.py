"""Exact top-k inner-product search (blocked matmul, a running k-th best per query) and unit-normalisation."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import DataError


def exact_topk(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    block_floats: int = 1 << 20,
    query_block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of every query against ``vectors`` (optionally only ``rows`` of it).

    Returns ``(scores, indices)``, both ``(n_queries, min(k, n))``, best first; equal scores in the order of
    ``rows`` (index order without ``rows``); indices point into ``vectors`` (not into ``rows``).

    For each block of queries, one matmul per block of vectors into a reused score buffer of at most
    ``block_floats`` floats (4 MiB by default: it stays in the CPU cache while it is read back); each query
    keeps its best ``k`` so far, and only scores above its ``k``-th best are looked at again (after the first
    blocks a block rarely holds any: one max per row decides).  Memory beyond the inputs is the buffer
    (and, with ``rows``, a gathered block of at most ``GATHER_BLOCKS * block_floats`` floats of vectors, or ``k`` rows).
    """
    import torch

    with warnings.catch_warnings():  # inputs may be read-only (Arrow memory): they are only read here
        warnings.simplefilter("ignore", UserWarning)
        Q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        X = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    if Q.ndim != 2:
        raise ValueError(f"queries must be 2-D, got shape {tuple(Q.shape)}")
    if rows is not None:
        rows = np.asarray(rows)
        if rows.size and rows.dtype.kind not in "iu":  # a bool mask cast to int64 would be the rows 0 and 1
            raise DataError(f"rows must be integer row numbers into vectors, got an array of {rows.dtype} "
                            "(for a boolean mask pass np.flatnonzero(mask))")
        _check_rows(rows, len(vectors))
    n = len(vectors) if rows is None else len(rows)
    kk = min(int(k), n)
    nq = Q.shape[0]
    if kk <= 0 or nq == 0:
        return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
    if nq == 1 and rows is None:
        one = _one_query(Q.numpy()[0], X.numpy(), kk)
        if one is not None:
            return one
    R = None if rows is None else torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))  # any strides
    qb = max(1, min(query_block, nq))
    cb = min(n, block_floats // qb)
    if R is not None:  # a block of rows is a gathered copy of them: at most GATHER_BLOCKS score buffers of floats
        cb = min(cb, GATHER_BLOCKS * block_floats // max(1, X.shape[-1]))
    cb = max(kk, cb)
    buf = torch.empty((qb, cb), dtype=torch.float32)  # reused: no fresh pages per block
    out_s = np.empty((nq, kk), np.float32)
    out_i = np.empty((nq, kk), np.int64)
    with torch.inference_mode():
        for q0 in range(0, nq, qb):
            q = Q[q0 : q0 + qb]
            best = _Best(q.shape[0], kk)
            for c0 in range(0, n, cb):
                if R is None:
                    blk, idx_map = X[c0 : c0 + cb], None
                else:
                    idx_map = R[c0 : c0 + cb]
                    blk = X.index_select(0, idx_map)
                sc = _product(q, blk, buf if q.shape[0] == qb and blk.shape[0] == cb else None)
                if not best.add(sc, c0, idx_map):
                    return _exact_topk_sorting(Q, X, R, n, kk, qb, cb)  # NaN scores: torch.topk's order for them
            out_s[q0 : q0 + qb], out_i[q0 : q0 + qb] = best.v.numpy(), best.i.numpy()
    if out_i.min() < 0:  # a query whose scores are all -inf past the first block: the plain way
        return _exact_topk_sorting(Q, X, R, n, kk, qb, cb)
    return out_s, out_i


def _check_rows(rows: np.ndarray, n: int) -> None:
    """Refuse ``rows`` unless a 1-D array of row numbers in ``[0, n)``, naming the first one out of range (torch's
    gather would raise "index out of range in self"; a negative row does not count from the end there)."""
    if rows.ndim != 1:
        raise DataError(f"rows must be a 1-D array of row numbers into vectors, got shape {rows.shape}")
    if not rows.size or (rows.min() >= 0 and rows.max() < n):
        return
    at = int(np.flatnonzero((rows < 0) | (rows >= n))[0])
    if not n:
        raise DataError(f"rows[{at}] is {rows[at]}: vectors has no rows")
    neg = " (negative rows do not count from the end)" if rows[at] < 0 else ""
    raise DataError(f"rows[{at}] is {rows[at]}: row numbers into vectors run from 0 to {n - 1}{neg}")


# With ``rows``, a block of vectors gathered for one product holds at most this many times ``block_floats`` floats
# (64 MiB by default): a block of ``block_floats // n_queries`` rows was 1 GB for one query over 1 M rows of 256
# floats; blocks of only ``block_floats`` floats (4,096 rows of 256) made one- to 8-query searches 2-3x slower on 2
# busy cores (each block's few torch ops wait for both threads), 64 MiB ones no slower than the whole gather.
GATHER_BLOCKS = 16

def _one_query(q: np.ndarray, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """One query over all rows, numpy alone (None when a score is NaN): OpenBLAS's GEMV is 2.5x MKL's here, and with
    no torch op after it no thread pool waits on the other's (see :func:`_product`).  Same answer as the blocks:
    the candidates at or above the k-th score in index order, then a stable sort (equal scores in index order)."""
    with np.errstate(all="ignore"):  # inf / NaN scores are handled after (NaN: the blocks' way)
        s = X @ q
    if np.isnan(s).any():
        return None
    kth = np.partition(s, len(s) - k)[len(s) - k]
    cand = np.flatnonzero(s >= kth)
    top = cand[np.argsort(-s[cand], kind="stable")[:k]]
    return s[top][None].astype(np.float32, copy=False), top[None].astype(np.int64, copy=False)


def _product(q, blk, out):
    """``q @ blk.T`` as a torch tensor, into ``out`` when given.  Always torch's product: numpy's (OpenBLAS) was
    2.5x faster for one query, but OpenBLAS's threads and torch's (OpenMP), taking turns on every block's
    product and bookkeeping, made searches of 1-32 queries up to 9x slower than torch alone on 2 cores (e.g. one
    query over 100k x 64: 10 ms against 2.7; 32 queries over 200k x 256: 162 against 82)."""
    import torch

    return torch.mm(q, blk.t()) if out is None else torch.mm(q, blk.t(), out=out)


class _Best:
    """Each query's best ``k`` scores so far and their indices, best first, equal scores in index order."""

    def __init__(self, nq: int, k: int):
        import torch

        self.k = k
        self.v = torch.full((nq, k), float("-inf"))
        self.i = torch.full((nq, k), -1, dtype=torch.int64)
        self.first = True

    def add(self, sc, c0: int, idx_map) -> bool:
        """Merges a block of scores (its columns are indices ``c0...`` or ``idx_map``); False for NaN scores."""
        import torch

        if self.first:  # the block's own k-th best bounds its candidates (ties at it included)
            self.first = False
            if torch.isnan(sc).any():
                return False
            m = min(self.k, sc.shape[1])
            thr = torch.topk(sc, m, dim=1, sorted=False).values.amin(1)
            mask = sc >= thr[:, None]
            self._merge(torch.arange(sc.shape[0]), sc, mask, c0, idx_map)
            return True
        top = sc.amax(1)
        if torch.isnan(top).any():
            return False
        thr = self.v[:, -1]
        hit = (top > thr).nonzero().squeeze(1)  # strictly: an equal score from a later block ranks after
        if hit.numel():
            sub = sc.index_select(0, hit)
            self._merge(hit, sub, sub > thr.index_select(0, hit)[:, None], c0, idx_map)
        return True

    def _merge(self, hit, sub, mask, c0: int, idx_map) -> None:
        import torch

        r, c = mask.nonzero(as_tuple=True)  # row-major: each row's candidates in column (= index) order
        counts = torch.bincount(r, minlength=len(hit))
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(len(r)) - starts[r]
        cv = torch.full((len(hit), width), float("-inf"))
        ci = torch.full((len(hit), width), -1, dtype=torch.int64)
        cv[r, pos] = sub[r, c]
        ci[r, pos] = (c + c0) if idx_map is None else idx_map[c]
        v = torch.cat([self.v.index_select(0, hit), cv], 1)  # the older (lower) indices first
        i = torch.cat([self.i.index_select(0, hit), ci], 1)
        sv, order = torch.sort(v, dim=1, descending=True, stable=True)
        self.v[hit] = sv[:, : self.k]
        self.i[hit] = torch.gather(i, 1, order[:, : self.k])


def _exact_topk_sorting(Q, X, R, n: int, kk: int, qb: int, cb: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain way (``torch.topk`` per block, then over the blocks' winners): scores with NaN among them."""
    import torch

    out_s, out_i = [], []
    with torch.inference_mode():
        for q0 in range(0, Q.shape[0], qb):
            q = Q[q0 : q0 + qb]
            vals, idxs = [], []
            for c0 in range(0, n, cb):
                idx_map = None if R is None else R[c0 : c0 + cb]
                sc = torch.mm(q, (X[c0 : c0 + cb] if R is None else X.index_select(0, idx_map)).t())
                v, i = torch.topk(sc, min(kk, sc.shape[1]), dim=1)
                vals.append(v)
                idxs.append((i + c0) if idx_map is None else idx_map[i])
            best_s, j = torch.topk(torch.cat(vals, 1), kk, dim=1)
            out_s.append(best_s)
            out_i.append(torch.gather(torch.cat(idxs, 1), 1, j))
    return torch.cat(out_s).numpy(), torch.cat(out_i).numpy()


def renormed(x: np.ndarray) -> np.ndarray:
    """:func:`unit_rows` of float32 rows that are unit already (a query's direction), to the same bits, without the
    zero check and, when each row's norm rounds to exactly 1 (often), without the division: ``x / 1`` is ``x``
    exactly.  ``x`` itself may come back."""
    n = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))
    if n.size == 1:
        return x if n.item() == 1.0 else x / n
    return x if (n == 1.0).all() else x / n


_TINY32 = float(np.float32(1e-12))


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and len(x) == 1:  # one query (searched one at a time): the same bits in fewer numpy calls --
        # the one row's float32 sum as below, its square root in Python (a float64 square root rounded to float32
        # is the float32 square root), divided as a scalar: each numpy call right after a graph search is costly
        n = np.float32(math.sqrt(np.add.reduce(x * x, axis=None)))
        if float(n) < _TINY32:
            raise DataError("a vector of zero norm cannot be indexed or searched")
        return x / n
    n = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))  # np.linalg.norm's sum, without its checks
    # (n < 1e-12).any() without ndarray.any's Python layer; for one row, without a ufunc (numpy compares the
    # float32 norm with 1e-12 made float32, so the Python comparison is with that float32 value)
    if n.item() < _TINY32 if n.size == 1 else np.minimum.reduce(n, axis=None) < 1e-12:
        raise DataError("a vector of zero norm cannot be indexed or searched")
    return x / n


class RunningTopK:
    """Exact top-``k`` inner products of fixed ``queries`` against vectors that arrive block by block (a table
    too large for memory, generated or read in batches): :meth:`add` each block in order, :meth:`result` at the
    end.  Memory: the queries, ``k`` candidates each and one block's scores; the answer is :func:`exact_topk`'s
    over the blocks stacked (indices count rows from the first block)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.Q = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = int(k)
        self.seen = 0
        self.S = np.full((len(self.Q), 0), -np.inf, np.float32)
        self.I = np.zeros((len(self.Q), 0), np.int64)

    def add(self, block: np.ndarray) -> None:
        """The next ``len(block)`` rows."""
        s, i = exact_topk(self.Q, block, self.k)
        S = np.concatenate([self.S, s], 1)
        I = np.concatenate([self.I, i + self.seen], 1)
        # stable: among equal scores the earlier row wins, as in one top-k over the stacked rows
        order = np.argsort(-S, axis=1, kind="stable")[:, : self.k]
        self.S, self.I = np.take_along_axis(S, order, 1), np.take_along_axis(I, order, 1)
        self.seen += len(block)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, both ``(n_queries, min(k, rows seen))``, best first."""
        return self.S, self.I

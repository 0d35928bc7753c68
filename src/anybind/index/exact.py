"""Exact top-k inner-product search (blocked torch matmul + top-k) and unit-normalisation."""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError


def exact_topk(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    block_floats: int = 1 << 24,
    query_block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of every query against ``vectors`` (optionally only ``rows`` of it).

    For each block of queries: one matmul per block of vectors into a reused
    score buffer (at most ``block_floats`` floats, 64 MiB by default), a
    ``torch.topk`` per block, and one final top-k over the blocks' winners.
    Memory beyond the inputs is the score buffer plus ``k`` candidates per
    block.  Returns ``(scores, indices)``, both ``(n_queries, min(k, n))``, best
    first; indices point into ``vectors`` (not into ``rows``).
    """
    import torch

    with warnings.catch_warnings():  # inputs may be read-only (Arrow memory): they are only read here
        warnings.simplefilter("ignore", UserWarning)
        Q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        X = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    if Q.ndim != 2:
        raise ValueError(f"queries must be 2-D, got shape {tuple(Q.shape)}")
    n = len(vectors) if rows is None else len(rows)
    kk = min(int(k), n)
    nq = Q.shape[0]
    if kk <= 0 or nq == 0:
        return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
    R = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
    qb = max(1, min(query_block, nq))
    cb = max(kk, min(n, block_floats // qb))
    buf = torch.empty((qb, cb), dtype=torch.float32)  # reused: no fresh pages per block
    out_s, out_i = [], []
    with torch.inference_mode():
        for q0 in range(0, nq, qb):
            q = Q[q0 : q0 + qb]
            vals, idxs = [], []
            for c0 in range(0, n, cb):
                if R is None:
                    blk, idx_map = X[c0 : c0 + cb], None
                else:
                    idx_map = R[c0 : c0 + cb]
                    blk = X.index_select(0, idx_map)
                if q.shape[0] == qb and blk.shape[0] == cb:
                    sc = torch.mm(q, blk.t(), out=buf)
                else:
                    sc = torch.mm(q, blk.t())
                v, i = torch.topk(sc, min(kk, sc.shape[1]), dim=1)
                vals.append(v)
                idxs.append((i + c0) if idx_map is None else idx_map[i])
            if len(vals) == 1:
                best_s, best_i = vals[0], idxs[0]
            else:
                best_s, j = torch.topk(torch.cat(vals, 1), kk, dim=1)
                best_i = torch.gather(torch.cat(idxs, 1), 1, j)
            out_s.append(best_s)
            out_i.append(best_i)
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

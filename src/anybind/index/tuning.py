"""Tuning a search breadth to a recall target: the rule shared by the LanceDB ANN (:meth:`.ann.LanceAnn.tune`),
the in-memory graph (:meth:`~anybind.index.Index.tune_memory_ann`) and the ``search-scale`` bench's hnswlib
baseline.

A setting is judged by its recall@k against exact search on tuning queries with a margin for their sampling
error: the mean recall less ``z`` standard errors of it (:func:`recall_bound`), not the mean (a mean just at the
target leaves about even odds that other queries fall below it).  The tuning queries are the caller's own or
stored rows perturbed by noise (:func:`sample_queries`, by a seed): never a test split."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..metrics import mean_and_lower_bound
from .errors import IndexError_
from .exact import unit_rows

if TYPE_CHECKING:
    from .store import Snapshot

#: the HNSW search breadths tried when tuning, smallest first (the in-memory graph and the hnswlib baseline alike)
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True)
class EfTuning:
    """What :func:`tune_ef` chose: ``ef``, the tuning queries' mean ``recall`` (recall@``k``) at it and its lower
    bound ``recall_low``; ``reached``: whether ``recall_low`` >= ``target`` (else ``ef`` is the largest tried);
    ``tried``: (ef, recall, recall_low) of every breadth tried, in order."""

    ef: int
    recall: float
    recall_low: float
    reached: bool
    target: float
    k: int
    n_queries: int
    tried: tuple[tuple[int, float, float], ...]


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> list[float]:
    """Recall@k of each query: the share of its ``truth`` row (``k`` ids) among the first ``k`` of ``found``."""
    k = truth.shape[1]
    return [len(set(f[:k].tolist()) & set(t.tolist())) / max(1, k) for f, t in zip(found, truth)]


def recall_bound(found: np.ndarray, truth: np.ndarray, z: float = 2.0) -> tuple[float, float]:
    """(mean recall@k over the queries, its lower bound: the mean less ``z`` standard errors of it)."""
    return mean_and_lower_bound(per_query_recall(found, truth), z)


def check_target(target: object, z: object = 2.0) -> float:
    """``target`` as a recall in (0, 1] and ``z`` >= 0, else :class:`IndexError_` in one line."""
    ok = isinstance(target, (int, float)) and not isinstance(target, bool) and 0.0 < target <= 1.0
    if not ok:
        raise IndexError_(f"target_recall must be in (0, 1], got {target!r}")
    if not (isinstance(z, (int, float)) and not isinstance(z, bool) and z >= 0):
        raise IndexError_(f"z (standard errors of margin) must be >= 0, got {z!r}")
    return float(target)


def tune_ef(search: Callable[[int], np.ndarray], truth: np.ndarray, target: float,
            grid: Sequence[int] = EF_GRID, z: float = 2.0) -> EfTuning:
    """The smallest ``ef`` of ``grid`` (ascending) whose recall on the tuning queries reaches ``target`` with the
    margin of :func:`recall_bound`.  ``search(ef)``: the tuning queries' found ids at that ``ef`` (one row per
    query); ``truth``: their exact top-k ids.  The largest ``ef`` comes back (``reached`` false) if none reaches."""
    target = check_target(target, z)
    given = tuple(grid)
    if not given or not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) and e >= 1 for e in given):
        raise IndexError_(f"the ef grid must be positive integers, ascending, not {given!r}")
    grid = [int(e) for e in given]
    if grid != sorted(set(grid)):
        raise IndexError_(f"the ef grid must be positive integers, ascending, not {given!r}")
    tried = []
    for ef in grid:
        mean, low = recall_bound(search(ef), truth, z)
        tried.append((ef, mean, low))
        if low >= target:
            break
    ef, mean, low = tried[-1]
    return EfTuning(ef, mean, low, low >= target, target, int(truth.shape[1]), int(len(truth)), tuple(tried))


def unit_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Given query vectors as unit rows, refused unless they are rows of width ``dim``."""
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if Q.ndim != 2 or Q.shape[1] != dim:
        what = f"{Q.shape[1]}-d" if Q.ndim == 2 else f"of shape {Q.shape}"
        raise IndexError_(f"queries are {what}: this index holds {dim}-d vectors")
    if not len(Q):
        raise IndexError_("no tuning queries given")
    bad = np.flatnonzero(~np.isfinite(Q).all(axis=1))
    if len(bad):  # its recall would count as 0: the tuning skewed, not refused
        raise IndexError_(f"query {bad[0]} is not finite (NaN or infinite)")
    return unit_rows(Q)


def sample_queries(vectors: np.ndarray, n_queries: int, noise: float, seed: int,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """``n_queries`` stored ``vectors`` (of ``rows``, if given) drawn by ``seed``, perturbed by Gaussian noise of
    norm ~``noise`` and renormalised, so that no query is its own trivial nearest neighbour."""
    number = isinstance(noise, (int, float, np.integer, np.floating)) and not isinstance(noise, bool)
    if not (number and np.isfinite(noise) and noise >= 0):
        raise IndexError_(f"noise must be a finite number >= 0, not {noise!r}")
    rng = np.random.default_rng(seed)
    dim = vectors.shape[1]
    pool = np.arange(len(vectors)) if rows is None else rows
    pick = rng.choice(pool, size=min(n_queries, len(pool)), replace=False)
    noisy = vectors[pick] + rng.normal(size=(len(pick), dim)).astype(np.float32) * (noise / np.sqrt(dim))
    return unit_rows(noisy)


def truth_rows(snap: "Snapshot", truth: Sequence[Iterable[tuple[str, str]]], n_queries: int, k: int) -> np.ndarray:
    """The tuning queries' exact top-``k`` computed by the caller, as (id, modality) pairs per query (the form
    :meth:`~anybind.index.ann.LanceAnn.tune` takes), as row numbers of ``snap``: ``(n_queries, min(k, rows))``.
    :class:`IndexError_` in one line unless there is one list per query, of that many pairs of strings, each a
    row the index holds, none twice (any other truth would score every breadth low, or twice-counted rows high, and
    tune in silence to the slowest or the cheapest)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    want = min(k, len(snap.vectors))
    lists = [list(g) for g in truth]
    if len(lists) != n_queries:
        raise IndexError_(f"truth holds {len(lists)} top-k lists for {n_queries} tuning queries: one per query")
    for i, g in enumerate(lists):
        if len(g) != want:
            raise IndexError_(f"truth of query {i} lists {len(g)} rows: the exact top-{want} expected")
        seen: set[tuple[str, str]] = set()
        for e, p in enumerate(g):
            if not (isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
                raise IndexError_(f"truth of query {i}: entry {e} is {p!r}, not an (id, modality) pair of strings")
            if (p[0], p[1]) in seen:  # it would count twice as found: recall inflated, the cheapest setting chosen
                raise IndexError_(f"truth of query {i} lists id {p[0]!r} ({p[1]}) twice: the exact top-{want} names "
                                  "each row once")
            seen.add((p[0], p[1]))
    ids = snap.meta.column("id")
    named = pa.array(sorted({p[0] for g in lists for p in g}), pa.string())
    pos = np.flatnonzero(pc.is_in(ids, value_set=named).to_numpy(zero_copy_only=False))
    at = {(i, m): int(r) for r, i, m in zip(pos, ids.take(pa.array(pos)).to_pylist(), snap.modality[pos])}
    rows = np.empty((n_queries, want), np.int64)
    for i, g in enumerate(lists):
        for e, (rid, m) in enumerate(g):
            r = at.get((rid, m))
            if r is None:
                raise IndexError_(f"truth of query {i} names id {rid!r} ({m}), which this index does not hold")
            rows[i, e] = r
    return rows

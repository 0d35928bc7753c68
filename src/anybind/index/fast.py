"""Fast search for serving, beside the LanceDB table: the in-memory HNSW graph (:mod:`.memann`) and
quantised codes with exact rescoring (:mod:`.quant`), held by :class:`FastSearch`.  Its
:meth:`~FastSearch.candidates` is asked first by :meth:`~anybind.index.Index.search_vectors`; it answers ``None`` when neither is set up (or
the index is below ``ann_threshold`` rows, or a filter keeps too few rows for the graph), and the
LanceDB ANN or exact search answers as before."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexError_
from .exact import exact_topk
from .memann import MEMANN_DIR, MemoryAnn, check_threads
from .quant import DEFAULT_RESCORE, QUANT_KINDS, QuantStore, memory_of
from .store import Snapshot
from .table import IndexTable
from .tuning import EF_GRID, EfTuning, check_target, sample_queries, truth_rows, tune_ef, unit_queries

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
_INIT = threading.Lock()  # loading a graph or building codes: once per index object


class FastSearch:
    """The in-memory ANN graph and the quantised codes of one index (each loaded or made when first needed)."""

    def __init__(self, t: IndexTable) -> None:
        self.t = t
        self._memann: "MemoryAnn | bool | None" = None  # None: not loaded yet; False: unusable (warned once)
        self._quant: QuantStore | None = None

    # -- setting up -----------------------------------------------------------------------------
    def create_memory_ann(self, *, M: int = 16, ef_construction: int = 100, ef: int = 64,
                          threads: int = 1) -> dict[str, Any]:
        """Build the in-memory HNSW graph over every row and save it in the index folder (``memann/``)."""
        check_threads(threads)
        with self.t.write_txn():
            t0 = time.perf_counter()
            ann = MemoryAnn.build(self.t.snapshot(), self.t.identity, M=M, ef_construction=ef_construction, ef=ef,
                                  threads=threads)
            ann.save(self.t.path / MEMANN_DIR)
            self._memann = ann
            self.t.meta["memory_ann"] = {"library": "hnswlib", **ann.params, "rows": ann.live,
                                       "version": ann.version, "build_seconds": round(time.perf_counter() - t0, 2)}
            self.t.save_meta()
            return self.t.meta["memory_ann"]

    def update_memory_ann(self) -> tuple[int, int]:
        """Bring the saved graph up to the table's latest version (rows added / deleted since); the
        writer calls this under its lock (``Index.build`` does).  Returns (inserted, deleted)."""
        with self.t.write_txn():
            ann = self._memory_ann(rebuild=True)
            with ann.lock.write():
                snap = self.t.snapshot()
                added, gone = ann.sync(snap)
                ann.save(self.t.path / MEMANN_DIR)
            self.t.meta["memory_ann"].update(rows=ann.live, version=ann.version)
            self.t.save_meta()
            return added, gone

    def set_memory_ann_ef(self, ef: int) -> None:
        """The in-memory graph's search breadth (candidates kept while searching; more: higher recall,
        slower), saved with the index."""
        if not self.t.meta.get("memory_ann"):
            raise IndexError_("this index keeps no in-memory ANN: build one with Index.create_memory_ann()")
        if int(ef) < 1:
            raise IndexError_(f"ef must be a positive integer, not {ef!r}")
        with self.t.write_txn():
            self.t.meta["memory_ann"]["ef"] = int(ef)
            self.t.save_meta()
        ann = self._memory_ann()
        if ann is not None:
            with ann.lock.write():
                ann.params["ef"] = int(ef)
                ann.graph.set_ef(int(ef))

    def tune_memory_ann(self, target_recall: float = 0.95, k: int = 10, n_queries: int = 200, *,
                        queries: np.ndarray | None = None, noise: float = 0.5, seed: int = 0, z: float = 2.0,
                        grid: Sequence[int] = EF_GRID, save: bool = True,
                        truth: Sequence[Iterable[tuple[str, str]]] | None = None) -> EfTuning:
        """The smallest ``ef`` of ``grid`` whose recall@``k`` against exact search on tuning queries reaches
        ``target_recall`` less ``z`` standard errors (:func:`.tuning.tune_ef`), stored with the index unless
        ``save=False`` (then the graph's ``ef`` is put back).  Tuning queries: ``queries`` or ``n_queries`` stored
        rows drawn by ``seed`` and perturbed by noise of norm ~``noise``; ``truth``: the exact top-``k`` of
        ``queries`` as (id, modality) pairs, when the caller has them (:func:`.tuning.truth_rows`; else computed
        here); the writer lock is held throughout (the table does not move under the measurement)."""
        check_target(target_recall, z)
        for name, v in (("k", k), ("n_queries", n_queries)):
            if type(v) is not int or v < 1:
                raise IndexError_(f"{name} must be a positive integer, not {v!r}")
        if not self.t.meta.get("memory_ann"):
            raise IndexError_(f"{self.t.path}: no in-memory ANN to tune: build one with Index.create_memory_ann() "
                              "(or `anybind index ... --memory-ann`)")
        with self.t.write_txn():
            snap = self.t.snapshot()
            if not len(snap.vectors):
                raise IndexError_(f"{self.t.path}: the index is empty: no rows to tune the in-memory ANN on")
            if truth is not None and queries is None:
                raise IndexError_("truth needs the queries it belongs to, one top-k list per query")
            Q = (unit_queries(queries, self.t.dim) if queries is not None
                 else sample_queries(snap.vectors, n_queries, noise, seed))
            exact = truth_rows(snap, truth, len(Q), k) if truth is not None else exact_topk(Q, snap.vectors, k)[1]
            ann = self._memory_ann()
            if ann is None:  # warned once by the loader, which names the folder
                raise IndexError_(f"{self.t.path}: the in-memory ANN cannot be loaded: rebuild it with "
                                  "`anybind index ... --memory-ann`")
            before = ann.params.get("ef", 64)

            def search(ef: int) -> np.ndarray:
                with ann.lock.write():
                    ann.graph.set_ef(ef)
                found = self._search_graph(ann, snap, Q, exact.shape[1], None, {})
                if found is None:
                    raise IndexError_(f"{self.t.path}: the in-memory ANN gave up on the tuning queries at ef={ef} "
                                      "(too few live rows); rebuild it with `anybind index ... --memory-ann`")
                return found[3]

            try:
                tuned = tune_ef(search, exact, target_recall, grid, z)
            finally:
                with ann.lock.write():
                    ann.graph.set_ef(int(before))
            if save:
                self.set_memory_ann_ef(tuned.ef)
                self.t.meta["memory_ann"]["tuned"] = {"target": tuned.target, f"recall@{tuned.k}": tuned.recall,
                                                      f"recall@{tuned.k}_low": tuned.recall_low,
                                                      "reached": tuned.reached, "queries": tuned.n_queries,
                                                      "given_queries": queries is not None, "seed": seed}
                self.t.save_meta()
        log.info("%s: in-memory ANN ef %d: recall@%d %.4f (less %g standard errors %.4f) on %d tuning queries%s",
                 self.t.path, tuned.ef, tuned.k, tuned.recall, z, tuned.recall_low, tuned.n_queries,
                 "" if tuned.reached else f": target {tuned.target} not reached")
        return tuned

    def quantize(self, kind: str | None, *, rescore: int | None = None) -> dict[str, Any] | None:
        """Search int8 or binary codes in memory and rescore the top ``rescore * k`` candidates with
        the float vectors (``None``: stop).  The codes are made on the first search after this."""
        if kind is not None and kind not in QUANT_KINDS:
            raise IndexError_(f"unknown quantisation {kind!r}: use one of {', '.join(QUANT_KINDS)}")
        if rescore is not None and int(rescore) < 1:
            raise IndexError_(f"rescore must be a positive integer (candidates per hit), not {rescore!r}")
        with self.t.write_txn():
            self.t.meta["quantize"] = {"kind": kind, "rescore": rescore} if kind else None
            self.t.save_meta()
        if self._quant is None or self._quant.kind != kind:  # the same codes: only the factor changes
            self._drop_quant()
        return self.t.meta["quantize"]

    def quant_memory(self) -> dict[str, float]:
        """Bytes of the quantised codes in memory and of the float vectors they stand for."""
        return memory_of(self._quant_store())

    def warm(self) -> None:
        """Load the in-memory graph (brought to the table's version) or make the quantised codes now,
        not on the first search (the service calls this at start); nothing when searches would not use
        them (neither set up, or fewer than ``ann_threshold`` rows)."""
        if self.t.count():
            q = np.zeros((1, self.t.dim), np.float32)
            q[0, 0] = 1.0
            self.candidates(q, 1, None, {}, None, False)

    # -- loading --------------------------------------------------------------------------------
    def _memory_ann(self, rebuild: bool = False) -> MemoryAnn | None:
        ann = self._memann
        if isinstance(ann, MemoryAnn):  # loaded: no lock to take (every search asks)
            return ann
        with _INIT:
            if isinstance(self._memann, MemoryAnn):
                return self._memann
            if self._memann is False and not rebuild:
                return None
            try:
                ann = MemoryAnn.load(self.t.path / MEMANN_DIR, self.t.identity, self.t.dim)
            except IndexError_ as e:
                if rebuild:
                    log.warning("%s; rebuilding it", e)
                    self._memann = MemoryAnn.build(self.t.snapshot(), self.t.identity,
                                                   **{k: v for k, v in (self.t.meta.get("memory_ann") or {}).items()
                                                      if k in ("M", "ef_construction", "ef", "threads")})
                    return self._memann
                log.warning("%s; searching exactly meanwhile", e)
                self._memann = False
                return None
            self._adopt_ef(ann)  # set since the graph was saved
            self._memann = ann
            return ann

    def _adopt_ef(self, ann: MemoryAnn) -> None:
        """The graph searches at the ``ef`` index.json has now (set or tuned since it was saved or loaded, maybe by
        another process: a refresh reads it)."""
        ef = (self.t.meta.get("memory_ann") or {}).get("ef")
        if ef and int(ef) != ann.params.get("ef"):
            with ann.lock.write():
                ann.params["ef"] = int(ef)
                ann.graph.set_ef(int(ef))

    def _drop_quant(self) -> None:
        if self._quant is not None:
            self._quant.close()
            self._quant = None

    def _quant_store(self) -> QuantStore:
        cfg = self.t.meta.get("quantize") or {}
        if not cfg.get("kind"):
            raise IndexError_("this index keeps no quantised codes: set them with Index.quantize('int8')")
        with _INIT:
            q = self._quant
            if q is None or q.version != self.t.version or q.kind != cfg["kind"]:
                self._drop_quant()  # never answer from codes of an older version: made again
                t0 = time.perf_counter()
                q = self._quant = QuantStore.build(self.t.table, self.t.dim, cfg["kind"], cfg.get("rescore"))
                log.info("%s: %s codes of %d rows made in %.1f s", self.t.path, q.kind, len(q.codes),
                         time.perf_counter() - t0)
            q.rescore = int(cfg.get("rescore") or DEFAULT_RESCORE[q.kind])  # as set now (maybe by another process)
            return q

    # -- searching ------------------------------------------------------------------------------
    def candidates(self, Q, pool, targets, lab, exact, with_vectors) -> list[tuple["pa.Table", np.ndarray]] | None:
        """Per query: (candidate rows with metadata (+ ``vector``), their scores), or ``None`` (see the module docs)."""
        found = self.rows(Q, pool, targets, lab, exact)
        if found is None:
            return None
        snap, vectors, S, R = found
        return _candidates(snap.meta, vectors, S, R, self.t.dim, with_vectors)

    def _graph_ready(self, exact, load: bool = True) -> tuple[MemoryAnn | None, Snapshot] | None:
        """(the graph, the current snapshot) when a search is to use the graph: set up, ``exact`` not True and,
        for ``exact=None``, ``ann_threshold`` rows or more; ``None`` when not.  The graph is ``None`` when it
        cannot be used or, with ``load=False``, is not loaded yet."""
        if exact is True or not self.t.meta.get("memory_ann"):
            return None
        snap = self.t.snapshot()  # current: one version check, no row count
        if exact is None and len(snap.modality) < self.t.ann_threshold:
            return None
        ann = self._memann
        ann = ann if type(ann) is MemoryAnn else self._memory_ann() if load else None
        if ann is not None:
            self._adopt_ef(ann)
        return ann, snap

    def graph_one(self, q: np.ndarray, k: int, exact) -> tuple[Snapshot, list[float], list[int]] | bool | None:
        """:meth:`rows` of one query row with no filter, from the in-memory graph, as lists: (the snapshot, the
        scores, the rows); ``None`` where :meth:`rows` has more to do (the graph not loaded yet, to be brought
        to the table's version, ``k`` beyond the live rows) or would not use the graph; ``False`` where the
        graph gave up (logged; :meth:`rows` with ``graph=False`` answers without searching it again)."""
        ready = self._graph_ready(exact, load=False)
        if ready is None or ready[0] is None:
            return None
        ann, snap = ready
        if k > len(snap.modality) or not ann.current(snap):
            return None
        with ann.lock.read():
            if ann.version != snap.version:  # moved while we waited
                return None
            found = ann.top_one(q, k)
        return found if not found else (snap, *found)

    def rows(self, Q, pool, targets, lab, exact, graph: bool = True
             ) -> tuple[Snapshot, np.ndarray, np.ndarray, np.ndarray] | None:
        """(the snapshot the rows are of, its float vectors, scores (n, <= pool) best first in every row (the
        searcher's hits trust this), row numbers (-1 pads)), or ``None`` when neither the graph nor the codes
        answer: the rows alone, no metadata read.  ``graph=False``: the graph gave up on this search already."""
        quant = (self.t.meta.get("quantize") or {}).get("kind")
        if self.t.meta.get("memory_ann"):
            ready = self._graph_ready(exact)
            if ready is None:
                return None
            ann, snap = ready
            if ann is not None and graph:
                res = self._search_graph(ann, snap, Q, pool, targets, lab)
                if res is not None:
                    return res
        elif exact is True or not quant or (exact is None and self.t.count() < self.t.ann_threshold):
            return None
        if quant:
            q = self._quant_store()
            qs = q.snapshot()
            return (qs, q.floats, *q.search(Q, pool, qs.rows_where(targets, lab)))
        return None

    def _search_graph(self, ann: MemoryAnn, snap: Snapshot, Q, pool, targets, lab):
        """:meth:`rows` from the graph, brought to the table's version first; ``None`` where it gives up."""
        res = None
        for attempt in range(3):  # another thread may move the graph on between our sync and search
            snap = self.t.snapshot() if attempt else snap
            if ann.version > snap.version:  # another thread moved the graph past our snapshot: never back
                snap = self.t.snapshot()  # (a sync back and forth would add slots for the same rows)
            if not ann.current(snap):  # moved, or just loaded
                with ann.lock.write():
                    if ann.version > snap.version:  # moved past it while we waited for the lock
                        snap = self.t.snapshot()
                    if not ann.current(snap):
                        stale = ann.version != snap.version
                        added, gone = ann.sync(snap)
                        if stale:
                            log.info("%s: in-memory ANN brought to table version %d (+%d rows, -%d)",
                                     self.t.path, snap.version, added, gone)
            with ann.lock.read():  # searches share the graph; a sync waits for them
                if ann.version == snap.version:
                    rows = snap.rows_where(targets, lab) if targets is not None or lab else None
                    res = ann.search(Q, pool, snap, rows)
                    break
        return None if res is None else (snap, snap.vectors, *res)


def _candidates(meta, vectors, S, R, dim, with_vectors) -> list[tuple["pa.Table", np.ndarray]]:
    import pyarrow as pa

    ok = R >= 0
    rows = [r[o] for r, o in zip(R, ok)]
    t_all = meta.take(pa.array(np.concatenate(rows) if rows else np.zeros(0, np.int64), pa.int64()))  # one take
    if with_vectors:
        flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        order = np.argsort(flat, kind="stable")  # sorted reads (the floats may be memory-mapped)
        V = np.empty((len(flat), dim), np.float32)
        V[order] = np.asarray(vectors[flat[order]]).reshape(-1, dim)
        t_all = t_all.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), dim))
    out, pos = [], 0
    for r, s, o in zip(rows, S, ok):
        out.append((t_all.slice(pos, len(r)), np.asarray(s[o], np.float32)))
        pos += len(r)
    return out

"""A fast in-memory ANN beside the LanceDB table: an HNSW graph (hnswlib) over the table's rows.

Chosen by measurement (50k clustered 256-d unit vectors, 2 shared cores, M=16 / connectivity 16,
ef_construction=100, ef tuned on separate queries to recall@10 >= 0.96, 500 test queries):

=================  =======  =========  ===============  =================
library            build    recall@10  batched q/s      one at a time q/s
=================  =======  =========  ===============  =================
hnswlib 0.8.0      10.0 s   0.973      4,541            4,567
faiss 1.15 HNSW    19.3 s   0.976      4,199            1,191
usearch 2.26 f32   19.2 s   0.970      2,135            1,874
=================  =======  =========  ===============  =================

(script: the ``search-scale`` bench's hnswlib baseline settings; all three at ef=64.)

The graph is saved in the index folder (``memann/``: ``graph.bin``, ``slots.parquet`` (the
record id, modality and content key of each graph slot) and ``info.json`` with the table version
it covers).  It is never searched stale: when the table has moved past that version, the rows
added since are inserted and the rows deleted or replaced since are marked deleted in the graph
(:meth:`MemoryAnn.sync`) before the next search; a graph file that cannot be used (missing,
damaged, of another space) is not searched: search falls back to exact with a warning, and
``anybind index ... --memory-ann`` (or :meth:`~anybind.index.Index.create_memory_ann`) rebuilds it.

**Deterministic by default.**  The graph is built and synced on one thread (``threads=1``, saved in its
parameters): hnswlib's multi-threaded insert links nodes in whatever order its threads reach them, so two builds of
the same rows differ (in the bytes, and in the hits of a narrow graph).  Measured side by side in one run (100k
clustered 64-d unit vectors, M=16, ef_construction=100, 2 cores shared with other work, load 5-13, two rounds):
one thread 35.4 / 46.7 s, all cores 51.2 / 57.0 s, recall@10 0.999 both (ef=64, 500 queries); one thread gave the
same graph bytes both rounds, all cores two different ones.  ``threads=-1`` (all cores) or ``N`` builds faster on
an idle many-core machine, at the cost of reproducibility.  One thread is reproducible on one machine; another
CPU's distance kernels (AVX-512, AVX, SSE sum in other orders) may still break a near-tie another way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..artefact_meta import read_meta
from .errors import IndexError_
from .store import write_json_atomic

if TYPE_CHECKING:
    from .store import Snapshot

log = logging.getLogger(__name__)

MEMANN_DIR = "memann"
MEMANN_FORMAT = "anybind.memann"
#: info.json's format_version (a file without one, written before it existed, reads as 1)
MEMANN_VERSION = 1
REBUILD = "rebuild it with `anybind index ... --memory-ann`"


def _hnswlib():
    try:
        import hnswlib
    except ImportError:
        raise IndexError_("the in-memory ANN needs hnswlib: pip install 'anybind[ann]'") from None
    return hnswlib


def check_threads(threads: Any, error: type[Exception] = IndexError_) -> int:
    """``threads`` for hnswlib's inserts: -1 (all cores) or a positive integer; ``error`` otherwise."""
    if type(threads) is not int or not (threads == -1 or threads >= 1):
        raise error(f"threads must be -1 (all cores) or a positive integer, not {threads!r}")
    return threads


class _ReadSide:
    """``with lock.read():`` -- one object serves every thread (its state is the lock's); taking it is one
    plain lock acquire when no writer waits or works (it is taken on every search)."""

    __slots__ = ("_rw",)

    def __init__(self, rw: "RWLock") -> None:
        self._rw = rw

    def __enter__(self) -> None:
        rw = self._rw
        with rw._lock:
            while rw._writer or rw._waiting:
                rw._cond.wait()
            rw._readers += 1

    def __exit__(self, *exc) -> None:
        rw = self._rw
        with rw._lock:
            rw._readers -= 1
            if not rw._readers and rw._waiting:  # only a writer waits on the last reader
                rw._cond.notify_all()


class RWLock:
    """Many searches at once, or one change to the graph (hnswlib searches may run in parallel, but
    not beside an insert, a delete mark or a resize).  A waiting writer holds off new readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a plain lock: its `with` is C, where a Condition's is Python
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._writer = False
        self._waiting = 0
        self._read = _ReadSide(self)

    def read(self) -> _ReadSide:
        """``with lock.read():`` (a plain context object, not a generator: taken on every search)."""
        return self._read

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _row_keys(snap: "Snapshot") -> list[tuple[str, str, str]]:
    """(id, modality, content key) per row; the id and modality strings are the snapshot's hit columns' own."""
    cols = snap.hit_columns()
    return list(zip(cols.id, cols.modality, snap.meta.column("key").to_pylist()))


class MemoryAnn:
    """An HNSW graph over an index's rows, kept in step with the table (see the module docs)."""

    def __init__(self, graph, slots: list[tuple[str, str, str]], deleted: np.ndarray, version: int,
                 params: dict[str, Any], identity: str, dim: int):
        self.graph = graph
        self.slots = slots  # (id, modality, content key) per graph label
        self.deleted = deleted  # bool per slot
        self.version = int(version)
        self.params = params
        self.identity = identity
        self.dim = int(dim)
        self.slot_row = np.zeros(0, np.int64)  # per slot, its row in the current snapshot (-1: gone)
        self.lock = RWLock()  # searches share it; sync and save take it alone
        self._live: tuple[np.ndarray, int] | None = None  # (the deleted array counted, live slots)
        self._same: tuple[np.ndarray, bool] | None = None  # (slot_row, whether every slot s is row s)

    @property
    def live(self) -> int:
        """Slots not marked deleted (counted once per change of ``deleted``, not on every search)."""
        d = self.deleted
        if self._live is None or self._live[0] is not d or self._live[1] != len(self.slots):
            self._live = (d, int(len(self.slots) - d.sum()))
        return self._live[1]

    @classmethod
    def build(cls, snap: "Snapshot", identity: str, *, M: int = 16, ef_construction: int = 100, ef: int = 64,
              threads: int = 1, seed: int = 0) -> "MemoryAnn":
        """A graph over every row of ``snap``; ``threads`` inserting (1: the same graph every time; -1: all
        cores, faster but not reproducible), kept in :attr:`params` for :meth:`sync`."""
        threads = check_threads(threads)
        hnswlib = _hnswlib()
        n, d = snap.vectors.shape
        g = hnswlib.Index(space="ip", dim=d)
        g.init_index(max_elements=max(1, n), M=M, ef_construction=ef_construction, random_seed=seed,
                     allow_replace_deleted=False)
        if n:
            g.add_items(snap.vectors, np.arange(n), num_threads=threads)
        g.set_ef(ef)
        params = {"M": M, "ef_construction": ef_construction, "ef": ef, "threads": threads}
        ann = cls(g, _row_keys(snap), np.zeros(n, bool), snap.version, params, identity, d)
        ann.slot_row = np.arange(n, dtype=np.int64)
        return ann

    # -- keeping in step with the table ---------------------------------------------------------
    def sync(self, snap: "Snapshot") -> tuple[int, int]:
        """Bring the graph to ``snap``'s version: insert new rows (on the graph's ``threads``; one for a graph
        saved before it had the parameter), mark deleted / replaced ones.  Returns (rows inserted, slots marked
        deleted)."""
        threads = self.params.get("threads", 1)  # checked when built or loaded
        rows = {k: r for r, k in enumerate(_row_keys(snap))}
        slot_row = np.full(len(self.slots), -1, np.int64)
        gone = []
        for s, k in enumerate(self.slots):
            if self.deleted[s]:
                continue
            r = rows.pop(k, None)
            if r is None:
                gone.append(s)
            else:
                slot_row[s] = r
        new = np.fromiter(rows.values(), np.int64, len(rows))  # rows no live slot holds
        for s in gone:
            self.graph.mark_deleted(s)
        self.deleted[gone] = True
        if len(new):
            first = len(self.slots)
            need = first + len(new)
            if need > self.graph.get_max_elements():
                self.graph.resize_index(max(need, int(self.graph.get_max_elements() * 1.5)))
            self.graph.add_items(snap.vectors[new], np.arange(first, need), num_threads=threads)
            keys = _row_keys(snap)
            self.slots.extend(keys[r] for r in new)
            self.deleted = np.concatenate([self.deleted, np.zeros(len(new), bool)])
            slot_row = np.concatenate([slot_row, new])
        self.slot_row = slot_row
        self.version = snap.version
        self._live = None  # `deleted` was changed in place: counted again
        return len(new), len(gone)

    # -- searching ------------------------------------------------------------------------------
    def _rows_of(self, labels: np.ndarray) -> np.ndarray:
        """The snapshot rows of graph slots ``labels`` (hnswlib's uint64): ``slot_row[labels]``, or, while every
        slot is its own row (a graph built or synced without moves or deletions), the labels themselves
        (viewed as int64: no gather, checked once per ``slot_row``)."""
        sr, same = self.slot_row, self._same
        if same is None or same[0] is not sr:
            same = self._same = (sr, len(sr) == len(self.slots) and bool(np.array_equal(sr, np.arange(len(sr)))))
        return labels.view(np.int64) if same[1] and labels.dtype == np.uint64 else sr[labels]

    def current(self, snap: "Snapshot") -> bool:
        """Whether the graph is at ``snap``'s version with ``slot_row`` made (a graph just loaded has none)."""
        return self.version == snap.version and len(self.slot_row) == len(self.slots)

    def _knn(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """hnswlib's best ``k`` slots per query and their distances (1 - the score), or ``None`` (logged) when
        fewer than ``k`` are reachable (many deleted): the caller holds the lock for reading; exact answers."""
        try:  # hnswlib searches with max(ef, k) candidates
            return self.graph.knn_query(Q, k=k, num_threads=1 if len(Q) == 1 else -1)
        except RuntimeError as e:
            log.info("in-memory ANN search gave up (%s); searching exactly", " ".join(str(e).split()))
            return None

    def top_one(self, q: np.ndarray, k: int) -> tuple[list[float], list[int]] | bool | None:
        """:meth:`search` of one query row, no filter, as lists (the same scores and rows), for a caller that
        holds the lock for reading and found the graph :meth:`current`; ``None`` when ``k`` exceeds the live
        rows (:meth:`search` knows what to do then), ``False`` when the graph gave up (as :meth:`search` would)."""
        if k > self.live:
            return None
        found = self._knn(q, k)
        if found is None:
            return False
        return (1.0 - found[1]).tolist()[0], self._rows_of(found[0]).tolist()[0]  # float32, as in search

    def search(self, Q: np.ndarray, k: int, snap: "Snapshot",
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Top-``k`` snapshot rows per query (exact scores, best first; -1 pads), or ``None`` when a
        filter keeps too few rows for the graph to find them (the caller searches exactly)."""
        if snap.version != self.version:
            raise IndexError_(f"in-memory ANN covers table version {self.version}, not {snap.version}: sync it first")
        n_rows = len(snap.vectors)
        want = n_rows if rows is None else len(rows)
        kk = min(int(k), want)
        if kk <= 0:
            return np.zeros((len(Q), 0), np.float32), np.zeros((len(Q), 0), np.int64)
        mask = None
        fetch = kk
        if rows is not None:
            if want < 0.1 * n_rows:
                return None
            mask = np.zeros(n_rows, bool)
            mask[rows] = True
            fetch = int(np.ceil(kk * n_rows / want * 2)) + 10
        fetch = min(fetch, self.live)
        found = self._knn(Q, fetch)  # the caller holds self.lock for reading
        if found is None:
            return None
        labels, dist = found
        R = self._rows_of(labels)  # deleted slots are never returned
        if mask is None and fetch == kk:  # hnswlib's inner-product distance is 1 - the score, best first
            S = 1.0 - dist  # float32 arithmetic (a Python float does not widen it)
            return (S if S.dtype == np.float32 else S.astype(np.float32)), R
        out_s = np.full((len(Q), kk), -np.inf, np.float32)
        out_r = np.full((len(Q), kk), -1, np.int64)
        for i in range(len(Q)):
            r = R[i][R[i] >= 0]
            if mask is not None:
                r = r[mask[r]]
            if len(r) < kk:
                return None  # the filter hid too many: exact search answers instead
            s = snap.vectors[r] @ Q[i]  # exact scores of the candidates
            top = np.argsort(-s, kind="stable")[:kk]
            out_s[i], out_r[i] = s[top], r[top]
        return out_s, out_r

    # -- on disk --------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        import os
        import shutil

        folder = Path(folder)
        tmp, old = folder.with_name(f".{folder.name}.{os.getpid()}.tmp"), folder.with_name(f".{folder.name}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self.graph.save_index(str(tmp / "graph.bin"))
            ids, mods, keys = (list(c) for c in zip(*self.slots)) if self.slots else ([], [], [])
            pq.write_table(pa.table({"id": ids, "modality": mods, "key": keys, "deleted": self.deleted}),
                           tmp / "slots.parquet")
            write_json_atomic(tmp / "info.json", {"format": MEMANN_FORMAT, "format_version": MEMANN_VERSION,
                                                  "version": self.version,
                                                  "identity": self.identity, "dim": self.dim,
                                                  "slots": len(self.slots), "params": self.params})
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():  # swapped whole (the writer holds the index's lock): readers see old or new
                os.rename(folder, old)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, identity: str, dim: int) -> "MemoryAnn":
        """A saved graph; :class:`IndexError_` naming the folder if it cannot be used."""
        import pyarrow.parquet as pq

        hnswlib = _hnswlib()
        folder = Path(folder)
        try:
            info = read_meta(folder, "info.json", "graph.bin", fmt=MEMANN_FORMAT, version=MEMANN_VERSION,
                             what="in-memory ANN", error=IndexError_, unversioned=1, fix=REBUILD)
            if info.get("identity") != identity or int(info.get("dim", -1)) != int(dim):
                raise ValueError(f"built for space {info.get('identity')} ({info.get('dim')}-d), "
                                 f"not this index's {identity} ({dim}-d)")
            t = pq.read_table(folder / "slots.parquet")
            slots = list(zip(t.column("id").to_pylist(), t.column("modality").to_pylist(),
                             t.column("key").to_pylist()))
            if len(slots) != int(info["slots"]):
                raise ValueError(f"{len(slots)} slots listed, info.json says {info['slots']}")
            g = hnswlib.Index(space="ip", dim=int(dim))
            g.load_index(str(folder / "graph.bin"), max_elements=max(1, len(slots)))
            if g.get_current_count() != len(slots):
                raise ValueError(f"the graph holds {g.get_current_count()} items, not {len(slots)}")
            params = dict(info.get("params") or {})
            check_threads(params.get("threads", 1), ValueError)  # used by every sync: a damaged one is refused here
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise IndexError_(f"{folder}: in-memory ANN not usable ({' '.join(str(e).split())}); {REBUILD}") from None
        deleted = t.column("deleted").to_numpy(zero_copy_only=False).astype(bool)
        for s in np.nonzero(deleted)[0]:  # the graph file keeps its marks; older files may not
            try:
                g.mark_deleted(int(s))
            except RuntimeError:  # already marked
                pass
        g.set_ef(int(params.get("ef", 64)))  # not kept in the file: hnswlib loads with ef=10
        return cls(g, slots, deleted, int(info["version"]), params, identity, int(dim))

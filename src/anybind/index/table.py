"""The state every part of an :class:`~anybind.index.Index` works on, in one object: :class:`IndexTable`
holds the folder, its ``index.json`` (``meta``), the space, the LanceDB table and the in-memory
:class:`~anybind.index.store.Snapshot`, and does the reads and the locking they all need.

The writer, the ANN, the fast search, the searcher and the classifier are each given this handle
(:mod:`.core` builds them); none of them holds a copy of its state."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexError_, QueryError
from .lock import writer_lock
from .store import (DEFAULT_ANN_THRESHOLD, META_FILE, Snapshot, check_meta, objects_of, one_chunk, vectors_of,
                    write_json_atomic)

if TYPE_CHECKING:
    from ..space import Space


#: methods of a LanceDB table (and attributes) that only read it; any other call may move its version
_READS = frozenset({"search", "count_rows", "schema", "version", "name", "to_arrow", "to_pandas", "head", "uri",
                    "list_versions", "list_indices", "index_stats", "stats", "query", "vector_search"})


class TableView:
    """The LanceDB table as the index hands it out: every attribute passes through, and a call of any method
    but the reading ones (``add``, ``delete``, ``checkout_latest``, a ``merge_insert`` builder's ``execute``...)
    tells ``moved`` before and after it, so that the version the index keeps is asked again."""

    def __init__(self, obj: Any, moved: Callable[[], None]) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_moved", moved)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if name in _READS or not callable(attr):
            return attr
        moved = self._moved

        def call(*args, **kwargs):
            moved()
            try:
                out = attr(*args, **kwargs)
            finally:
                moved()
            return TableView(out, moved) if type(out).__module__.startswith("lancedb") else out

        return call

    def __len__(self) -> int:
        return len(self._obj)

    def __repr__(self) -> str:
        return repr(self._obj)


class IndexTable:
    """One index folder opened: ``path``, ``meta`` (``index.json``), ``space`` (or ``None`` for raw
    vectors), ``table`` (the LanceDB table, as a :class:`TableView`), its version and the snapshot of the
    table in memory.

    The table's version moves only through calls on this process's table object (LanceDB re-reads the
    folder on ``checkout_latest``, which :meth:`refresh` calls), so :attr:`version` is kept here and asked
    again only after such a call (a write, a checkout: :class:`TableView` and :meth:`write_txn` say so).
    A search thus costs no version round trip, and still never answers from an older version."""

    def __init__(self, path: Path, meta: dict[str, Any], space: "Space | None", table) -> None:
        self.path = Path(path)
        self.meta = meta
        self.space = space
        self._lance = table._obj if isinstance(table, TableView) else table
        self.table = TableView(self._lance, self.moved)
        self._version: int | None = None
        self._count: tuple[int, int] | None = None  # (version, rows)
        self._gen = 0  # moves so far: a version read while the table moved is not kept
        self._vlock = threading.Lock()
        self.snap: Snapshot | None = None
        #: per-version memos of the searcher (re-ranking banks); emptied when the snapshot is reloaded
        self.memo: dict[Any, Any] = {}

    # -- what index.json says ------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.meta["identity"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def modalities(self) -> list[str]:
        return list(self.meta.get("modalities", []))

    @property
    def ann_threshold(self) -> int:
        return int(self.meta.get("ann_threshold", DEFAULT_ANN_THRESHOLD))

    def save_meta(self) -> None:
        write_json_atomic(self.path / META_FILE, self.meta)

    def register_modalities(self, modalities) -> None:
        """Adds ``modalities`` to ``index.json``'s list when any is new, and saves it (call holding the writer lock)."""
        mods = sorted(set(self.modalities) | set(modalities))
        if mods != self.modalities:
            self.meta["modalities"] = mods
            self.save_meta()

    # -- the version -----------------------------------------------------------------------------
    def moved(self) -> None:
        """The table may have moved (a write or a checkout through this process's table object)."""
        with self._vlock:
            self._gen += 1
            self._version = None

    @property
    def version(self) -> int:
        """The table's version, asked of LanceDB only after it may have moved."""
        v = self._version
        if v is None:
            with self._vlock:
                gen = self._gen
            v = self._lance.version
            with self._vlock:
                if gen == self._gen:  # nothing moved it while we asked
                    self._version = v
        return v

    # -- reading the table ---------------------------------------------------------------------
    def count(self) -> int:
        """Rows in the table (counted once per version)."""
        v = self.version
        c = self._count
        if c is None or c[0] != v:
            c = self._count = (v, int(self._lance.count_rows()))
        return c[1]

    def column(self, name: str) -> np.ndarray:
        t = self.table.search().select([name]).limit(None).to_arrow()
        return t.column(name).to_numpy(zero_copy_only=False)

    def counts(self) -> dict[str, int]:
        """Rows per modality (from the in-memory snapshot when it is current, else one column read)."""
        snap = self.snap
        mods = snap.modality if snap is not None and snap.version == self.version else self.column("modality")
        vals, cnt = np.unique(np.asarray(mods, dtype=object), return_counts=True) if len(mods) else ([], [])
        return {str(v): int(c) for v, c in zip(vals, cnt)}

    def snapshot(self) -> Snapshot:
        """The table in memory (vectors + metadata), reloaded only when the table changed."""
        v = self.version
        snap = self.snap
        if snap is not None and snap.version == v:  # (every search asks: no import statement on this path)
            return snap
        import pyarrow as pa

        # streamed in batches into one preallocated matrix: peak memory ~ the vectors once
        V = np.empty((self.table.count_rows(), self.dim), np.float32)
        cols = [f.name for f in self.table.schema if f.name != "vector"]
        metas, pos = [], 0
        for b in self.table.search().limit(None).to_batches(65536):
            m = b.num_rows
            if pos + m > len(V):  # rows appeared since count_rows(): grow
                V = np.concatenate([V, np.empty((pos + m - len(V), self.dim), np.float32)])
            V[pos : pos + m] = vectors_of(b.column("vector"), self.dim)
            metas.append(b.select(cols))
            pos += m
        schema = pa.schema([f for f in self.table.schema if f.name != "vector"])
        meta = one_chunk(pa.Table.from_batches(metas, schema=schema)) if metas else schema.empty_table()
        del metas
        mods = objects_of(meta.column("modality"))
        self.snap = Snapshot(v, meta, V[:pos], mods)
        self.memo.clear()
        return self.snap

    def drop_snapshot(self) -> None:
        self.snap = None

    def read_header(self) -> dict[str, Any] | None:
        """``index.json`` as it is on disk now (another process may have rewritten it), checked as
        :meth:`Index.open <anybind.index.Index.open>` checks it (:func:`~.store.check_meta`: a damaged header is
        :class:`IndexError_` in one line naming the file); ``None`` when it cannot be read as JSON (being replaced
        right now, or not UTF-8 / JSON): the caller keeps the header it has."""
        mp = self.path / META_FILE
        try:
            raw = json.loads(mp.read_bytes().decode("utf-8"))
        except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None
        return check_meta(mp, raw)

    def refresh(self) -> bool:
        """See writes made by other processes (table rows, ``index.json``, adopted when it is of this index's
        identity and sound: see :meth:`read_header`); returns whether the table moved."""
        before = self.version
        meta = self.read_header()  # first: a damaged header refuses before the table moves (a later refresh
        self.table.checkout_latest()  # would answer that nothing moved)
        if meta is not None and meta["identity"] == self.meta.get("identity"):
            self.meta = meta
        return self.version != before

    @contextmanager
    def write_txn(self, meta: bool = True) -> Iterator[None]:
        """Hold the index's writer lock, with the table (and ``index.json`` if ``meta``) re-read at
        their latest."""
        with writer_lock(self.path):
            meta_now = self.read_header()  # a damaged header: refused in one line, nothing written
            identity = meta_now["identity"] if meta_now is not None else None
            if identity != self.identity:  # replaced (overwrite) or removed while we waited
                raise IndexError_(
                    f"{self.path}: the index was {'replaced' if identity else 'removed'} while this process "
                    "was writing to it; nothing more was written"
                )
            try:
                if meta:
                    self.refresh()
                else:
                    self.table.checkout_latest()
                yield
            finally:
                self.moved()  # whatever was written under the lock: the version is asked again

    def check_targets(self, modality: str | Sequence[str] | None) -> list[str] | None:
        """The target modalities of a search, checked against the index's and the space's."""
        if modality is None:
            return None
        mods = [modality] if isinstance(modality, str) else list(modality)
        known = set(self.modalities) | set(self.space.modalities if self.space else [])
        for m in mods:
            if m not in known:
                raise QueryError(
                    f"unknown modality {m!r}: this index holds {', '.join(sorted(known)) or 'nothing'}"
                )
        return mods

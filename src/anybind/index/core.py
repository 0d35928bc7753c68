"""The :class:`Index` class: state, properties, create / open / build, and reading the table.

Its other methods come from mixins, one module each: :mod:`.write` (add, add_vectors,
delete, optimize, repair), :mod:`.ann` (create_ann, ann_recall), :mod:`.query` (embed_query),
:mod:`.search` (search, search_vectors, re-ranking), :mod:`.classify` (classify).  See
:mod:`anybind.index` for the on-disk layout and the guarantees."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..version import __version__
from ..errors import DataError, SpaceError
from ..io import atomic_write_dir, recover_dir
from .ann import AnnMixin
from .classify import ClassifyMixin
from .errors import IndexError_
from .fast import FastMixin
from .lock import discard_parts, relock, writer_lock
from .query import QueryMixin
from .refresh import stale_error
from .results import AddStats
from .search import SearchMixin
from .store import (
    DEFAULT_ANN_THRESHOLD,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    SPACE_DIR,
    TABLE,
    table_schema,
    Snapshot,
    vectors_of,
    write_json_atomic,
)
from .write import WriteMixin

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..data.manifest import Manifest, Record
    from ..space import Space

log = logging.getLogger(__name__)


class Index(WriteMixin, AnnMixin, FastMixin, QueryMixin, SearchMixin, ClassifyMixin):
    """A persistent LanceDB index of one space's embeddings.  Build with :meth:`build`, reopen with :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any], space: "Space | None", table):
        self.path = Path(path)
        self.meta = meta
        self.space = space
        self.table = table
        self._snap: Snapshot | None = None
        self._bank_cache: dict[Any, Any] = {}
        self._made_dir: bool | None = None  # set by create(): this object made the index (and the folder?)
        self.last_add: AddStats | None = None  # what the last add / add_vectors through this object did

    # -- properties -------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.meta["identity"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def modalities(self) -> list[str]:
        """The modalities this index embeds from records (set at build, extended by :meth:`add`)."""
        return list(self.meta.get("modalities", []))

    @property
    def ann_threshold(self) -> int:
        return int(self.meta.get("ann_threshold", DEFAULT_ANN_THRESHOLD))

    def __len__(self) -> int:
        return int(self.table.count_rows())

    def counts(self) -> dict[str, int]:
        """Rows per modality (from the in-memory snapshot when it is current, else one column read)."""
        snap = self._snap
        snap_mods = snap.modality if snap is not None and snap.version == self.table.version else self._column("modality")
        vals, cnt = (
            np.unique(np.asarray(snap_mods, dtype=object), return_counts=True) if len(snap_mods) else ([], [])
        )
        return {str(v): int(c) for v, c in zip(vals, cnt)}

    def __repr__(self) -> str:
        return f"<Index {self.path} rows={len(self)} dim={self.dim} identity={self.identity}>"

    # -- creation / opening ------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        space: "Space | None" = None,
        dim: int | None = None,
        identity: str | None = None,
        modalities: Iterable[str] = (),
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        overwrite: bool = False,
        exist_ok: bool = False,
    ) -> "Index":
        """An empty index: tied to ``space`` (saved inside it), or to a bare ``dim`` + ``identity``
        for raw vectors.

        Holds the folder's writer lock, so concurrent creators serialise.  exist_ok: if an index is
        there (or another process creates one meanwhile), open it instead; it must have the same
        space identity (else :class:`~anybind.errors.SpaceError`)."""
        path = Path(path)
        made_dir = not path.exists()
        with writer_lock(path, create=True):
            if exist_ok and not overwrite and (path / META_FILE).exists():
                return cls._open_for_create(path, space, dim, identity)
            try:
                index = cls._create(path, space=space, dim=dim, identity=identity, modalities=modalities,
                                    ann_threshold=ann_threshold, overwrite=overwrite)
            except BaseException:
                if not (path / META_FILE).exists():  # leave nothing: all of it if this call made the folder
                    discard_parts(path, made_dir, (SPACE_DIR, f"{TABLE}.lance") if made_dir else ())
                raise
        index._made_dir = made_dir
        return index

    @classmethod
    def _open_for_create(
        cls, path: Path, space: "Space | None", dim: int | None, identity: str | None
    ) -> "Index":
        """The index already at ``path`` (made by another run), if it is of the same space."""
        index = cls.open(path, space)  # SpaceError if it was built with another space
        if space is None and (index.identity, index.dim) != (identity, dim):
            raise SpaceError(
                f"{path}: an index of identity {index.identity} ({index.dim}-d vectors) is already there, "
                f"not {identity} ({dim}-d): open it, or give another --out"
            )
        return index

    @classmethod
    def _create(
        cls,
        path: Path,
        *,
        space: "Space | None",
        dim: int | None,
        identity: str | None,
        modalities: Iterable[str],
        ann_threshold: int,
        overwrite: bool,
    ) -> "Index":
        """Written whole in a temporary folder and swapped in (:func:`anybind.io.atomic_write_dir`): ``path``
        must be new, an empty folder, or (with ``overwrite``) an index holding nothing else."""
        import lancedb

        path = Path(path)
        if space is not None:
            dim, identity = space.dim, space.identity()
        if dim is None or identity is None:
            raise ValueError("Index.create needs a space, or dim= and identity= for a vectors-only index")
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anybind_version": __version__,
            "identity": identity,
            "dim": int(dim),
            "metric": "dot",
            "modalities": sorted(set(modalities)),
            "encoders": dict(space.encoders) if space is not None else {},
            "space": SPACE_DIR if space is not None else None,
            "ann": None,
            "ann_threshold": int(ann_threshold),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

        def write(tmp: Path) -> None:
            if space is not None:
                space.save(tmp / SPACE_DIR)
            lancedb.connect(str(tmp)).create_table(TABLE, schema=table_schema(int(dim)))
            write_json_atomic(tmp / META_FILE, meta)  # written last: its presence marks a complete index

        atomic_write_dir(path, write, kind="index", overwrite=overwrite)
        relock(path)  # the folder was swapped: hold the lock of the one there now
        return cls(path, meta, space, lancedb.connect(str(path)).open_table(TABLE))

    @classmethod
    def open(cls, path: str | Path, space: "Space | None" = None) -> "Index":
        """Open an index; with ``space``, refuse it unless it is the space the index was built with."""
        import lancedb

        from ..space import Space

        path = Path(path)
        recover_dir(path, "index")  # a create killed mid-swap: put the complete version back
        mp = path / META_FILE
        if not mp.is_file():
            raise IndexError_(
                f"{path}: not an anybind index (no {META_FILE}); build one with `anybind index`"
            )
        try:
            meta = json.loads(mp.read_text())
        except json.JSONDecodeError as e:
            raise IndexError_(f"{mp}: corrupt JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise IndexError_(f"{mp}: not an anybind index file")
        if not isinstance(meta.get("identity"), str) or not meta["identity"]:
            raise IndexError_(f"{mp}: no space 'identity' (the space the index was built with): damaged index")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise IndexError_(
                f"{path}: written by a newer anybind (format {meta['format_version']}); upgrade anybind"
            )
        if space is not None:
            if space.identity() != meta["identity"]:
                raise stale_error(path, meta, space)  # names both identities and the fix (a refresh)
        elif meta.get("space") and (path / meta["space"]).is_dir():
            space = Space.load(path / meta["space"])
            if space.identity() != meta["identity"]:
                raise IndexError_(
                    f"{path}: the space copy inside the index does not match its identity (damaged index)"
                )
        db = lancedb.connect(str(path))
        try:
            table = db.open_table(TABLE)
        except Exception:  # a create killed after index.json: an empty table
            table = db.create_table(TABLE, schema=table_schema(int(meta["dim"])), exist_ok=True)
        return cls(path, meta, space, table)

    @classmethod
    def build(
        cls,
        space: "Space",
        manifest: "str | Path | Manifest | Sequence[Record]",
        path: str | Path,
        modalities: Iterable[str] | None = None,
        *,
        cache: "FeatureCache | str | Path | None" = None,
        split: str | None = None,
        ann: str | bool = "auto",
        ann_type: str = "ivf_hnsw_sq",
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        chunk_size: int = 1024,
        overwrite: bool = False,
        progress: bool = False,
        embedder=None,
        chunk_rows: bool = False,
    ) -> "Index":
        """Embed a corpus into a new index at ``path`` (or update the index already there, incrementally).

        modalities: the manifest fields to index (default: every field bound in the space).
        split: only this split's records (default: all).
        ann: ``"auto"`` builds an ANN index when the table reaches ``ann_threshold`` rows;
            ``True`` always; ``False`` never.
        embedder: see :meth:`add` (e.g. :func:`anybind.scale.encode_ray.ray_index_embedder`).
        chunk_rows: a long text gives one row per chunk (passage-level search, :mod:`.passages`).
        """
        path = Path(path)
        mods = sorted(set(modalities)) if modalities is not None else None
        if mods is not None:
            unknown = [m for m in mods if m not in space.modalities]
            if unknown:
                raise SpaceError(
                    f"modalities {unknown} are not bound in this space (bound: {', '.join(space.modalities)})"
                )
        recover_dir(path, "index")
        if (path / META_FILE).exists() and not overwrite:
            index = cls.open(path, space)
        else:
            index = cls.create(  # exist_ok: another run may be creating the same index right now
                path, space=space, modalities=mods or (), ann_threshold=ann_threshold, overwrite=overwrite,
                exist_ok=True,
            )
        try:
            records = index._records(manifest, mods, split=split, progress=progress)
            if mods is None:
                mods = sorted({m for r in records for m in r.values if m in space.modalities})
            if chunk_rows:
                from .passages import passage_records, stale_rows

                records, counts = passage_records(records, space, mods)
                for m, ids in stale_rows(index._existing(), counts).items():
                    index.delete(ids, m)
            stats = index.add(records, modalities=mods, cache=cache, chunk_size=chunk_size, progress=progress,
                              embedder=embedder)
        except BaseException:
            index._discard_if_empty()  # a failed run leaves no empty index behind (only one it created)
            raise
        if index._discard_if_empty():
            src = manifest if isinstance(manifest, (str, Path)) else "the records given"
            raise DataError(f"{src}: no record to index (each is bad or lacks the indexed modalities); "
                            f"no index was written at {path}")
        with index._write_txn():  # decided and built under the lock: concurrent builds build it once
            n = len(index)
            have = index.meta.get("ann")
            if n and (ann is True or (ann == "auto" and n >= index.ann_threshold)):
                if not have or n >= 2 * int(have.get("rows", 0)) or have.get("type") != ann_type:
                    index.create_ann(ann_type)
                elif stats.commits:
                    index.optimize()  # folds the new rows into the existing ANN index
            if index.meta.get("memory_ann") and stats.commits:
                index.update_memory_ann()  # the saved in-memory graph follows the table
        return index

    def _discard_if_empty(self) -> bool:
        """Remove this index if :meth:`create` made it through this object and it holds no rows
        (no other writer added any); returns whether it did."""
        if self._made_dir is None:
            return False
        try:
            with writer_lock(self.path):
                self.table.checkout_latest()
                if self.table.count_rows():
                    return False
                discard_parts(self.path, self._made_dir, (META_FILE, SPACE_DIR, f"{TABLE}.lance"))
                return True
        except Exception as e:  # never hide the failure that brought us here
            log.warning("%s: could not remove the empty index this run created (%s)", self.path, e)
            return False

    # -- reading the table -------------------------------------------------
    def _column(self, name: str) -> np.ndarray:
        t = self.table.search().select([name]).limit(None).to_arrow()
        return t.column(name).to_numpy(zero_copy_only=False)

    def snapshot(self) -> Snapshot:
        """The table in memory (vectors + metadata), reloaded only when the table changed."""
        import pyarrow as pa

        v = self.table.version
        if self._snap is None or self._snap.version != v:
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
            meta = pa.Table.from_batches(metas, schema=schema) if metas else schema.empty_table()
            mods = meta.column("modality").to_numpy(zero_copy_only=False)
            self._snap = Snapshot(v, meta, V[:pos], mods)
            self._bank_cache.clear()
        return self._snap

    def refresh(self) -> bool:
        """See writes made by other processes since this index was opened (rows added, replaced or
        deleted; the metadata in ``index.json``).  Cheap when nothing changed: the in-memory
        snapshot is kept and reloaded only if the table's version moved.  Returns whether it did."""
        before = self.table.version
        self.table.checkout_latest()
        mp = self.path / META_FILE
        try:
            meta = json.loads(mp.read_text())
        except (OSError, json.JSONDecodeError):  # being replaced right now (atomic rename): keep ours
            meta = None
        if isinstance(meta, dict) and meta.get("identity") == self.meta.get("identity"):
            self.meta = meta
        return self.table.version != before

    def _save_meta(self) -> None:
        write_json_atomic(self.path / META_FILE, self.meta)

    def _records(self, manifest, modalities, split=None, progress=False) -> list["Record"]:
        from ..data.manifest import Manifest, Record

        if isinstance(manifest, (str, Path, Manifest)):
            if self.space is None:
                raise IndexError_("this index has no space: add raw vectors with add_vectors()")
            from ..space import as_manifests

            mods = modalities or [m for m in self.space.modalities]
            man = as_manifests(manifest, mods, self.space.encoders, False, progress)[0]
            recs = man.split(split)
        else:
            recs = list(manifest)
            if split is not None:
                recs = [r for r in recs if r.split == split]
        for r in recs:
            if not isinstance(r, Record):
                raise DataError(f"expected manifest records, got {type(r).__name__}")
        return recs

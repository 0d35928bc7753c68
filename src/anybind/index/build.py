"""Making and reading an index folder, for :class:`~anybind.index.Index`'s ``create`` / ``open`` / ``build``:
:func:`write_new` (a new index written whole and swapped in), :func:`read_meta` (``index.json`` checked,
with the space it names), :func:`fill` (a corpus embedded into an opened index, its ANN kept up) and
:func:`discard_if_empty` (a failed first build leaves nothing behind)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artefact_meta import read_meta as read_header
from ..errors import DataError, SpaceError
from ..io import atomic_write_dir, recover_dir
from ..version import __version__
from .errors import IndexError_
from .lock import discard_parts, relock, writer_lock
from .stale import stale_error
from .store import (FORMAT, FORMAT_VERSION, META_FILE, SPACE_DIR, TABLE, check_meta, table_schema,
                    write_json_atomic)
from .table import IndexTable
from .write import Writer

if TYPE_CHECKING:
    from ..space import Space

log = logging.getLogger(__name__)


def create(cls, path: Path, *, space: "Space | None", dim: int | None, identity: str | None,
           modalities: Iterable[str], ann_threshold: int, overwrite: bool, exist_ok: bool) -> tuple[Any, bool | None]:
    """:meth:`Index.create <anybind.index.Index.create>` (``cls``: the index class): the index and whether this
    call made its folder (``None``: it opened the index already there)."""
    made_dir = not path.exists()
    with writer_lock(path, create=True):
        if exist_ok and not overwrite and (path / META_FILE).exists():
            index = cls.open(path, space)  # SpaceError if it was built with another space
            if space is None and (index.identity, index.dim) != (identity, dim):
                raise SpaceError(
                    f"{path}: an index of identity {index.identity} ({index.dim}-d vectors) is already there, "
                    f"not {identity} ({dim}-d): open it, or give another --out"
                )
            return index, None
        try:
            meta, table = write_new(path, space=space, dim=dim, identity=identity, modalities=modalities,
                                    ann_threshold=ann_threshold, overwrite=overwrite)
        except BaseException:
            if not (path / META_FILE).exists():  # leave nothing: all of it if this call made the folder
                discard_parts(path, made_dir, (SPACE_DIR, f"{TABLE}.lance") if made_dir else ())
            raise
    return cls(path, meta, space, table), made_dir


def open_or_create(cls, space: "Space", path: Path, mods: list[str] | None, ann_threshold: int, overwrite: bool):
    """The index :meth:`Index.build <anybind.index.Index.build>` fills: the one at ``path``, or a new one."""
    if mods is not None:
        unknown = [m for m in mods if m not in space.modalities]
        if unknown:
            raise SpaceError(f"modalities {unknown} are not bound in this space (bound: {', '.join(space.modalities)})")
    recover_dir(path, "index")
    if (path / META_FILE).exists() and not overwrite:
        return cls.open(path, space)
    return cls.create(  # exist_ok: another run may be creating the same index right now
        path, space=space, modalities=mods or (), ann_threshold=ann_threshold, overwrite=overwrite, exist_ok=True
    )


def write_new(
    path: Path,
    *,
    space: "Space | None",
    dim: int | None,
    identity: str | None,
    modalities: Iterable[str],
    ann_threshold: int,
    overwrite: bool,
) -> tuple[dict[str, Any], Any]:
    """A new index written whole in a temporary folder and swapped in (:func:`anybind.io.atomic_write_dir`):
    ``path`` must be new, an empty folder, or (with ``overwrite``) an index holding nothing else.  Returns its
    ``index.json`` and its (empty) table."""
    import lancedb

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
        "svg_keys_named": True,  # an SVG row's key names its renderer (encoders.base.current_key); others are untagged
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def write(tmp: Path) -> None:
        if space is not None:
            space.save(tmp / SPACE_DIR)
        lancedb.connect(str(tmp)).create_table(TABLE, schema=table_schema(int(dim)))
        write_json_atomic(tmp / META_FILE, meta)  # written last: its presence marks a complete index

    atomic_write_dir(path, write, kind="index", overwrite=overwrite)
    relock(path)  # the folder was swapped: hold the lock of the one there now
    return meta, lancedb.connect(str(path)).open_table(TABLE)


def read_meta(path: Path, space: "Space | None") -> tuple[dict[str, Any], "Space | None", Any]:
    """The index at ``path`` checked: its ``index.json``, its space (``space`` if it is the index's, else
    :func:`~.stale.stale_error`; without one, the copy inside the index) and its table."""
    import lancedb

    from ..space import Space

    recover_dir(path, "index")  # a create killed mid-swap: put the complete version back
    mp = path / META_FILE
    if not mp.is_file():
        raise IndexError_(f"{path}: not an anybind index (no {META_FILE}); build one with `anybind index`")
    meta = check_meta(mp, read_header(path, META_FILE, None, fmt=FORMAT, version=FORMAT_VERSION, what="index",
                                      error=IndexError_, unversioned=0))
    if space is not None:
        if space.identity() != meta["identity"]:
            raise stale_error(path, meta, space)  # names both identities and the fix (a refresh)
    elif meta.get("space") and (path / meta["space"]).is_dir():
        space = Space.load(path / meta["space"])
        if space.identity() != meta["identity"]:
            raise IndexError_(f"{path}: the space copy inside the index does not match its identity (damaged index)")
    db = lancedb.connect(str(path))
    try:
        table = db.open_table(TABLE)
    except Exception:  # a create killed after index.json: an empty table
        table = db.create_table(TABLE, schema=table_schema(int(meta["dim"])), exist_ok=True)
    return meta, space, table


def fill(index, writer: Writer, t: IndexTable, manifest, mods: list[str] | None, *, made_dir: bool | None,
         split, cache, ann, ann_type: str, chunk_size: int, progress: bool, embedder, chunk_rows: bool) -> None:
    """Embed ``manifest`` into the opened ``index`` (see :meth:`Index.build <anybind.index.Index.build>`); an
    index this run made (``made_dir`` not ``None``) is removed again when it ends up empty."""
    space = t.space
    try:
        records = writer.records(manifest, mods, split=split, progress=progress)
        if mods is None:
            mods = sorted({m for r in records for m in r.values if m in space.modalities})
        if chunk_rows:
            from .passages import passage_records, stale_rows

            records, counts = passage_records(records, space, mods)
            for m, ids in stale_rows(writer.existing(), counts).items():
                index.delete(ids, m)
        stats = index.add(records, modalities=mods, cache=cache, chunk_size=chunk_size, progress=progress,
                          embedder=embedder)
    except BaseException:
        discard_if_empty(t, made_dir)  # a failed run leaves no empty index behind (only one it created)
        raise
    if discard_if_empty(t, made_dir):
        src = manifest if isinstance(manifest, (str, Path)) else "the records given"
        raise DataError(f"{src}: no record to index (each is bad or lacks the indexed modalities); "
                        f"no index was written at {t.path}")
    with t.write_txn():  # decided and built under the lock: concurrent builds build it once
        n = t.count()
        have = t.meta.get("ann")
        if n and (ann is True or (ann == "auto" and n >= t.ann_threshold)):
            if not have or n >= 2 * int(have.get("rows", 0)) or have.get("type") != ann_type:
                index.create_ann(ann_type)
            elif stats.commits:
                index.optimize()  # folds the new rows into the existing ANN index
        if t.meta.get("memory_ann") and stats.commits:
            index.update_memory_ann()  # the saved in-memory graph follows the table


def discard_if_empty(t: IndexTable, made_dir: bool | None) -> bool:
    """Remove the index if this process made it (``made_dir``: and its folder) and it holds no rows (no other
    writer added any); returns whether it did.  ``made_dir`` ``None``: the index was there before, kept."""
    if made_dir is None:
        return False
    try:
        with writer_lock(t.path):
            t.table.checkout_latest()
            if t.table.count_rows():
                return False
            discard_parts(t.path, made_dir, (META_FILE, SPACE_DIR, f"{TABLE}.lance"))
            return True
    except Exception as e:  # never hide the failure that brought us here
        log.warning("%s: could not remove the empty index this run created (%s)", t.path, e)
        return False

"""Writing to an index: :class:`Writer` (``add``: incremental, embeds only new or changed content;
``add_vectors``, ``delete``, ``optimize``, ``repair``), working on the :class:`~.table.IndexTable` it is
given; each commit under the writer lock (:mod:`.lock`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, SpaceError, unusable_file
from .errors import IndexError_
from .append import checked_vectors, stored_columns
from .results import AddStats
from .store import rows_table, sql_str, vectors_of
from .table import IndexTable

if TYPE_CHECKING:
    import pyarrow as pa

    from ..cache import FeatureCache
    from ..data.manifest import Manifest, Record

log = logging.getLogger(__name__)


def _id_filters(ids: Sequence[str], modality: str | None = None, per: int = 500) -> Iterator[str]:
    """SQL filters selecting these record ids (of ``modality`` only, when given), ``per`` ids each."""
    for c0 in range(0, len(ids), per):
        where = f"id IN ({', '.join(sql_str(i) for i in ids[c0 : c0 + per])})"
        yield where if modality is None else f"modality = {sql_str(modality)} AND {where}"


@dataclass
class _Seen:
    """The (id, modality) rows a writer knows are in the table, complete as of table ``version``
    (``None`` once another writer committed meanwhile: each commit then asks the table)."""

    version: int | None
    rows: set[tuple[str, str]]


class Writer:
    """The writing side of one index (see the module doc)."""

    def __init__(self, t: IndexTable) -> None:
        self.t = t

    def records(self, manifest, modalities, split=None, progress=False) -> list["Record"]:
        """The records of a manifest (path or object, read with the space's encoders) or of a list, checked."""
        from ..data.manifest import Manifest, Record

        if isinstance(manifest, (str, Path, Manifest)):
            if self.t.space is None:
                raise IndexError_("this index has no space: add raw vectors with add_vectors()")
            from ..space import as_manifests

            mods = modalities or [m for m in self.t.space.modalities]
            man = as_manifests(manifest, mods, self.t.space.encoders, False, progress)[0]
            recs = man.split(split)
        else:
            recs = list(manifest)
            if split is not None:
                recs = [r for r in recs if r.split == split]
        for r in recs:
            if not isinstance(r, Record):
                raise DataError(f"expected manifest records, got {type(r).__name__}")
        return recs

    def existing(self) -> dict[tuple[str, str], tuple[str, str, str]]:
        t = self.t.table.search().select(["id", "modality", "key", "source", "labels"]).limit(None).to_arrow()
        cols = [t.column(c).to_pylist() for c in ("id", "modality", "key", "source", "labels")]
        return {(i, m): (k, s, lb) for i, m, k, s, lb in zip(*cols)}

    def _seen(self) -> tuple[dict[tuple[str, str], tuple[str, str, str]], _Seen]:
        """The rows in the table now (see :meth:`existing`), and what :meth:`_commit_rows` needs of them."""
        self.t.table.checkout_latest()
        version = self.t.table.version  # read before the rows: rows newer than it only make a commit ask again
        existing = self.existing()
        return existing, _Seen(version, set(existing))

    def _commit_rows(self, rows: "pa.Table", modality: str, seen: _Seen, upsert: bool = False) -> int:
        """Commit ``rows`` (all of ``modality``) under the writer lock: an upsert if any of their
        (id, modality) is in the table at its latest version (so concurrent writers never insert a
        row twice), else a plain append.  Returns how many of them replaced rows."""
        ids = rows.column("id").to_pylist()
        with self.t.write_txn(meta=False):
            if seen.version is not None and self.t.table.version == seen.version:
                n_old = sum((i, modality) in seen.rows for i in ids)
            else:  # another writer committed since `seen` was read: ask the table about these ids
                seen.version = None
                n_old = len(self._present(ids, modality))
            self._commit(rows, upsert=upsert or n_old > 0)
            if seen.version is not None:
                seen.version = self.t.table.version
        seen.rows.update((i, modality) for i in ids)
        return n_old

    def _present(self, ids: Sequence[str], modality: str) -> set[str]:
        """Which of these ids have a row of ``modality`` in the table."""
        out: set[str] = set()
        for where in _id_filters(ids, modality):
            t = self.t.table.search().where(where).select(["id"]).limit(None).to_arrow()
            out.update(t.column("id").to_pylist())
        return out

    def _commit(self, rows: "pa.Table", upsert: bool) -> None:
        rows = stored_columns(self.t, rows)
        if upsert:
            (
                self.t.table.merge_insert(["id", "modality"])
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
        else:
            self.t.table.add(rows)

    def add(
        self,
        records: "str | Path | Manifest | Sequence[Record]",
        *,
        modalities: Iterable[str] | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        chunk_size: int = 1024,
        progress: bool = False,
        embedder=None,
    ) -> AddStats:
        """Add (or update) records, embedding only new or changed content (see :meth:`Index.add
        <anybind.index.Index.add>`); returns what it did."""
        if self.t.space is None:
            raise IndexError_("this index has no space to embed records with: use add_vectors()")
        space = self.t.space
        mods = sorted(set(modalities)) if modalities is not None else (self.t.modalities or space.modalities)
        unknown = [m for m in mods if m not in space.modalities]
        if unknown:
            raise SpaceError(
                f"modalities {unknown} are not bound in this space (bound: {', '.join(space.modalities)})"
            )
        recs = self.records(records, mods, progress=progress)
        with self.t.write_txn():
            self.t.register_modalities(mods)
        existing, seen = self._seen()
        stats = AddStats()
        todo: dict[str, dict[tuple[str, str], tuple]] = {m: {} for m in mods}
        relabel: dict[str, dict[tuple[str, str], tuple]] = {m: {} for m in mods}
        for m in mods:
            enc = space.encoder(m)
            is_file = getattr(enc, "input_kind", "file") == "file"
            for r in recs:
                if m not in r.values:
                    continue
                value = str(Path(r.values[m]).resolve()) if is_file else r.values[m]
                try:
                    key = enc.content_key(value)
                    size = os.stat(value).st_size if is_file else None
                except (OSError, DataError) as e:  # DataError: not a regular file (see data/files.py)
                    raise DataError(
                        f"record {r.id!r}: cannot read {m} file {value} ({getattr(e, 'strerror', None) or e})"
                    ) from None
                labels_json = json.dumps(r.labels or {}, sort_keys=True, default=str)
                row = (r.id, m)
                old = existing.get(row)
                item = (r.id, value, r.labels or {}, key, size)
                if old is None:
                    todo[m][row] = item
                elif old[0] != key:
                    todo[m][row] = item
                elif old[1] != str(value) or old[2] != labels_json:
                    relabel[m][row] = item
                else:
                    stats.unchanged += 1
        for m in mods:
            items = list(todo[m].values())
            if embedder is not None:
                chunks = embedder(m, items, chunk_size)
            else:
                chunks = self._embedded_chunks(m, items, chunk_size, cache, progress, stats)
            for chunk, X in chunks:
                if not chunk:
                    continue
                rows = rows_table(
                    self.t.dim,
                    [it[0] for it in chunk],
                    [m] * len(chunk),
                    [it[1] for it in chunk],
                    [it[2] for it in chunk],
                    [it[3] for it in chunk],
                    X,
                    [it[4] for it in chunk],
                )
                n_old = self._commit_rows(rows, m, seen)
                stats.commits += 1
                stats.added += len(chunk) - n_old
                stats.updated += n_old
                stats.embedded[m] = stats.embedded.get(m, 0) + len(chunk)
            items = list(relabel[m].values())
            for c0 in range(0, len(items), chunk_size):
                chunk = items[c0 : c0 + chunk_size]
                vecs = self._stored_vectors([it[0] for it in chunk], m)
                rows = rows_table(
                    self.t.dim,
                    [it[0] for it in chunk],
                    [m] * len(chunk),
                    [it[1] for it in chunk],
                    [it[2] for it in chunk],
                    [it[3] for it in chunk],
                    np.stack([vecs[it[0]] for it in chunk]),
                    [it[4] for it in chunk],
                )
                self._commit_rows(rows, m, seen, upsert=True)
                stats.commits += 1
                stats.relabelled += len(chunk)
        return stats

    def _embedded_chunks(self, m: str, items: list[tuple], chunk_size: int, cache, progress: bool, stats):
        """``(items, vectors)`` per chunk; an item whose file cannot be decoded (changed since it was
        validated) is left out, logged as a warning and listed in ``stats.failed``."""
        for c0 in range(0, len(items), chunk_size):
            part = items[c0 : c0 + chunk_size]
            bad: dict[int, str] = {}
            X = self.t.space.embed(m, [it[1] for it in part], cache=cache, progress=progress, bad=bad)
            for j, why in sorted(bad.items()):
                log.warning("record %r: %s (skipped)", part[j][0], unusable_file(m, why))
                stats.failed.append((part[j][0], unusable_file(m, why)))
            keep = [j for j in range(len(part)) if j not in bad]
            yield [part[j] for j in keep], X[keep]

    def _stored_vectors(self, ids: Sequence[str], modality: str) -> dict[str, np.ndarray]:
        out = {}
        for where in _id_filters(ids, modality):
            t = self.t.table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            for i, v in zip(t.column("id").to_pylist(), vectors_of(t.column("vector"), self.t.dim)):
                out[i] = v
        return out

    def add_vectors(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        modality: str,
        *,
        sources: Sequence[str] | None = None,
        labels: Sequence[Mapping[str, Any]] | None = None,
        keys: Sequence[str] | None = None,
        chunk_size: int = 100_000,
    ) -> AddStats:
        """Add precomputed vectors of one modality (normalised here); existing (id, modality) rows are replaced."""
        ids, X, sources, labels, keys = checked_vectors(self.t.dim, ids, vectors, sources, labels, keys)
        stats = AddStats()
        with self.t.write_txn():
            self.t.register_modalities([modality])
        seen = self._seen()[1]
        for c0 in range(0, len(ids), chunk_size):
            sl = slice(c0, c0 + chunk_size)
            part = ids[sl]
            rows = rows_table(
                self.t.dim, part, [modality] * len(part), sources[sl], labels[sl], keys[sl], X[sl]
            )
            n_old = self._commit_rows(rows, modality, seen)
            stats.commits += 1
            stats.added += len(part) - n_old
            stats.updated += n_old
        return stats

    def delete(self, ids: Iterable[str], modality: str | None = None) -> int:
        """Delete every row of these record ids (only ``modality``'s rows when given); returns rows deleted."""
        ids = [str(i) for i in ids]
        with self.t.write_txn():
            before = self.t.count()
            for where in _id_filters(ids, modality):
                self.t.table.delete(where)
            return before - self.t.count()

    def optimize(self) -> None:
        """Compact small fragments, fold new rows into the ANN index, drop versions older than a week."""
        with self.t.write_txn():
            self.t.table.optimize()
            self.t.drop_snapshot()

    def repair(self) -> int:
        """Remove duplicate rows (one (record id, modality) stored more than once, as concurrent
        writers before the writer lock could leave), keeping the newest of each; returns how many
        rows were removed.  The newest is the last in table order (rows are scanned in the order
        they were written, which compaction keeps)."""
        with self.t.write_txn():
            t = self.t.table.search().select(["id", "modality"]).with_row_id(True).limit(None).to_arrow()
            last: dict[tuple[str, str], int] = {}
            drop: list[int] = []
            for row, rid in zip(zip(t.column("id").to_pylist(), t.column("modality").to_pylist()),
                                t.column("_rowid").to_pylist()):
                if row in last:
                    drop.append(last[row])
                last[row] = rid
            for c0 in range(0, len(drop), 1000):  # each delete is atomic; a rerun finishes a killed repair
                self.t.table.delete(f"_rowid IN ({', '.join(str(r) for r in drop[c0 : c0 + 1000])})")
        if drop:
            log.info("%s: removed %d duplicate rows", self.t.path, len(drop))
        return len(drop)

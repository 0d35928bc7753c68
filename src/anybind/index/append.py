"""Appending precomputed vectors to an index in bounded memory: :func:`append_vector_batches` (a table larger
than memory, written batch by batch) and the argument checks it shares with ``Index.add_vectors``
(:func:`checked_vectors`).

``add_vectors`` replaces rows whose (id, modality) is already stored, so it reads the whole table's ids and
keys first (a few hundred bytes a row: gigabytes at 10M rows); the stream only appends new rows and refuses
an id that is already there, remembering 8 bytes a row (a 64-bit hash of each id, sorted; a hash seen before
is confirmed against the ids themselves before anything is refused)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.strings import ID_RULE, id_problem
from ..errors import DataError
from ..progress import progress_bar
from .exact import unit_rows
from .results import AddStats
from .store import rows_table, sql_str
from .table import IndexTable

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


def checked_vectors(dim: int, ids: Sequence[Any], vectors: np.ndarray, sources=None, labels=None, keys=None):
    """``add_vectors``' checks and defaults: returns (ids as str, unit rows, sources, labels, keys); raises
    :class:`DataError` on a wrong shape or dtype, non-finite values or a zero vector (naming its row and id), an
    id outside the manifest's rule or a duplicate."""
    try:
        A = np.asarray(vectors)
    except ValueError:  # ragged nested lists
        raise DataError("vectors are not a 2-D array of numbers (rows of different lengths?)") from None
    if A.dtype.kind not in "fiub":
        raise DataError(f"vectors of dtype {A.dtype}: numbers expected")
    X = A.astype(np.float32, copy=False)
    if X.ndim != 2 or X.shape[1] != dim:
        raise DataError(f"vectors of shape {X.shape}: this index holds {dim}-d vectors")
    if len(ids) != len(X):
        raise DataError(f"{len(ids)} ids but {len(X)} vectors")
    ids = [str(i) for i in ids]
    if not np.isfinite(X).all():
        r = int(np.flatnonzero(~np.isfinite(X).all(1))[0])
        raise DataError(f"row {r} (id {ids[r]!r}): non-finite values")
    norms = np.sqrt(np.add.reduce(X * X, axis=1))
    if len(X) and norms.min() < 1e-12:
        r = int(np.flatnonzero(norms < 1e-12)[0])
        raise DataError(f"row {r} (id {ids[r]!r}): a vector of zero norm cannot be indexed or searched")
    X = unit_rows(X)
    for i in ids:  # the manifest's rule: every id must be reachable by its URL /items/<id>
        if (problem := id_problem(i)) is not None:
            raise DataError(f"id {i!r}: {problem}; {ID_RULE}")
    if len(set(ids)) != len(ids):
        first: set[str] = set()
        dup = next(i for i in ids if i in first or first.add(i))
        raise DataError(f"id {dup!r} twice: duplicate ids in one call")
    sources = list(sources) if sources is not None else ids
    labels = list(labels) if labels is not None else [{}] * len(ids)
    if keys is None:
        keys = ["v:" + hashlib.sha256(x.tobytes()).hexdigest()[:32] for x in X]
    keys = list(keys)
    for name, vals in (("sources", sources), ("labels", labels), ("keys", keys)):
        if len(vals) != len(ids):
            raise DataError(f"{len(vals)} {name} for {len(ids)} ids")
    return ids, X, sources, labels, keys


def stored_columns(t: IndexTable, rows: "pa.Table") -> "pa.Table":
    """``rows`` with only the columns the table has (a table written before a column was added keeps its
    schema)."""
    names = t.table.schema.names
    if len(names) < rows.num_columns:
        rows = rows.select([n for n in rows.column_names if n in names])
    return rows


def _hashes(ids: Sequence[str]) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                        for i in ids), np.uint64, len(ids))


class _SeenIds:
    """The ids of one modality in the table, as sorted 64-bit hashes (8 bytes an id), complete as of table
    ``version``: :meth:`sync` (under the writer lock) reads them again when another writer committed since."""

    def __init__(self, t: IndexTable, modality: str) -> None:
        self.t, self.modality = t, modality
        self.version: int | None = None
        self.h = np.zeros(0, np.uint64)

    def sync(self) -> None:
        """Call holding the writer lock, the table at its latest: re-reads the ids if the table moved since."""
        version = self.t.version
        if version == self.version:
            return
        parts = [np.zeros(0, np.uint64)]
        if self.t.count():
            q = self.t.table.search().where(f"modality = {sql_str(self.modality)}").select(["id"]).limit(None)
            for b in q.to_batches(65536):
                parts.append(_hashes(b.column("id").to_pylist()))
        self.h, self.version = np.sort(np.concatenate(parts)), version

    def refuse_stored(self, ids: list[str], h: np.ndarray) -> None:
        """Raise if any of ``ids`` (hashes ``h``) is stored already (a hash match is checked on the ids)."""
        pos = np.minimum(np.searchsorted(self.h, h), max(0, len(self.h) - 1))
        maybe = [i for i, hit in zip(ids, self.h[pos] == h if len(self.h) else np.zeros(len(h), bool)) if hit]
        for s in range(0, len(maybe), 500):  # 500 ids a query; a real match in any chunk refuses
            chunk = ", ".join(sql_str(i) for i in maybe[s : s + 500])
            where = f"modality = {sql_str(self.modality)} AND id IN ({chunk})"
            found = self.t.table.search().where(where).select(["id"]).limit(None).to_arrow().column("id").to_pylist()
            if found:
                raise DataError(f"id {found[0]!r} ({self.modality}) is in the index already: append_vector_batches "
                                "only adds new rows (add_vectors replaces)")

    def remember(self, h: np.ndarray) -> None:
        """Call holding the writer lock, after this process appended ids of hashes ``h``."""
        h = np.sort(h)
        self.h = np.insert(self.h, np.searchsorted(self.h, h), h)
        self.version = self.t.version


def append_vector_batches(
    t: IndexTable,
    batches: Iterable[tuple[Sequence[str], np.ndarray] | tuple[Sequence[str], np.ndarray, Mapping[str, Any]]],
    modality: str,
    *,
    progress: bool = False,
    total: int | None = None,
) -> AddStats:
    """Append ``batches`` of (ids, vectors[, extras]) of one ``modality``, one commit per batch, holding one
    batch at a time (see the module doc).  ``extras``: ``sources`` / ``labels`` / ``keys`` of the batch, as
    ``add_vectors`` takes them.  An id already stored (before the stream, by it, or meanwhile by another
    writer: each batch is checked and written under the writer lock) raises :class:`DataError` before its
    batch is written; the batches before it stay committed.  ``total``: rows expected (for the
    progress bar)."""
    stats = AddStats()
    seen = _SeenIds(t, modality)
    with progress_bar(progress, f"appending {modality}", total) as bar:
        for nb, batch in enumerate(batches, 1):
            try:
                if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                    got = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                                                         else "")
                    raise DataError(f"expected (ids, vectors) or (ids, vectors, extras), got {got}")
                ids, vectors, extra = batch if len(batch) == 3 else (*batch, {})
                if unknown := sorted(set(extra) - {"sources", "labels", "keys"}):
                    raise DataError(f"extras {', '.join(map(repr, unknown))}: use sources, labels, keys")
                ids, X, sources, labels, keys = checked_vectors(t.dim, ids, vectors, **dict(extra))
            except DataError as e:
                raise DataError(f"batch {nb}: {e}") from None
            h = _hashes(ids)
            rows = rows_table(t.dim, ids, [modality] * len(ids), sources, labels, keys, X)
            # checked and written under the lock: no other writer in between; index.json re-read for the first
            with t.write_txn(meta=stats.commits == 0):
                seen.sync()
                try:
                    seen.refuse_stored(ids, h)
                except DataError as e:
                    raise DataError(f"batch {nb}: {e}") from None
                t.table.add(stored_columns(t, rows))
                seen.remember(h)
                t.register_modalities([modality])  # once it has rows (not for an empty or refused stream)
            stats.commits += 1
            stats.added += len(ids)
            if progress:
                bar.advance(len(ids))
    log.info("%s: appended %d %s rows in %d commits", t.path, stats.added, modality, stats.commits)
    return stats

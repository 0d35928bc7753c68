"""A persistent any-to-any search index over a bound space (LanceDB, embedded, on disk).

An index is a folder::

    index.json      format, the space identity it is tied to, dim, modalities, ANN settings
    space/          a copy of the space the vectors were made with (so queries embed the same way)
    items.lance/    the LanceDB table: one row per (record id, modality)

Table columns: ``id``, ``modality``, ``source`` (the text itself, or the
absolute file path, or the lookup key), ``labels`` (the record's labels as a
JSON string), ``label_pairs`` (the same as ``"key=value"`` strings, for
filters), ``key`` (the encoder's content key: a hash of the text or of the
file's bytes) and ``vector`` (``fixed_size_list<float32>[dim]``, unit norm).

::

    index = Index.build(space, "data/tux/manifest.jsonl", "indexes/tux")
    index.search(text="a barking dog", modality="image", k=10)
    index.search(image="dog.png", text="at night", modality="audio")       # fused query
    index.add(load_manifest("more.jsonl"))    # embeds only what is new or changed
    index.delete(["badger"])

Guarantees:

* **Tied to the space.**  ``index.json`` stores ``space.identity()``;
  :meth:`Index.open` with a space of another identity raises
  :class:`~anybind.errors.SpaceError` naming both.
* **Incremental.**  A row is keyed by (record id, modality) and carries the
  content key of what was embedded; :meth:`Index.add` embeds only rows that are
  new or whose content changed (a label-only change rewrites the labels and
  reuses the stored vector).
* **Crash-safe.**  Rows are committed in chunks; each commit is a new LanceDB
  version written atomically, so a killed insert leaves the last committed
  version readable and a rerun embeds only what is missing.
* **Exact or approximate.**  Exact search is one batched matmul + top-k per
  block of the stored vectors (bounded memory for the score blocks); above
  ``ann_threshold`` rows an ANN index (LanceDB IVF-HNSW-SQ or IVF-PQ) is used,
  and :meth:`Index.ann_recall` reports its recall@k against exact search.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import AnybindError, DataError, SpaceError

if TYPE_CHECKING:
    import pyarrow as pa

    from .cache import FeatureCache
    from .data.manifest import Manifest, Record
    from .space import Space

os.environ.setdefault("LANCE_LOG", "error")  # lance logs "no existing dataset" etc. as warnings

FORMAT = "anybind.index"
FORMAT_VERSION = 1
META_FILE = "index.json"
TABLE = "items"
SPACE_DIR = "space"
DEFAULT_ANN_THRESHOLD = 100_000
ANN_TYPES = ("ivf_hnsw_sq", "ivf_pq")

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"}
_AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif", ".m4a"}


class QueryError(DataError):
    """A search query is unusable (empty text, unreadable file, unknown modality, bad k...)."""


class IndexError_(AnybindError, RuntimeError):
    """An index folder is missing, damaged, or inconsistent with how it is used."""


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One search result."""

    id: str
    modality: str
    score: float
    source: str
    labels: dict[str, Any] = field(default_factory=dict)
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AddStats:
    """What :meth:`Index.add` did: rows added, content-updated, relabelled, unchanged; items embedded."""

    added: int = 0
    updated: int = 0
    relabelled: int = 0
    unchanged: int = 0
    embedded: dict[str, int] = field(default_factory=dict)
    commits: int = 0

    @property
    def total_embedded(self) -> int:
        return sum(self.embedded.values())


# ---------------------------------------------------------------------------------------
# exact top-k
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _label_pairs(labels: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in sorted((labels or {}).items()):
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            out.append(f"{k}={x if isinstance(x, str) else json.dumps(x, sort_keys=True)}")
    return out


def _label_filter(labels: Mapping[str, Any] | Sequence[str] | None) -> dict[str, list[str]]:
    """``{"category": "animals"}`` or ``["category=animals", "lang=en"]`` -> ``{key: [values]}``."""
    if not labels:
        return {}
    if isinstance(labels, Mapping):
        items = list(labels.items())
    else:
        items = []
        for s in labels:
            if "=" not in str(s):
                raise QueryError(f"label filter {s!r}: expected KEY=VALUE")
            k, v = str(s).split("=", 1)
            items.append((k.strip(), v.strip()))
    out: dict[str, list[str]] = {}
    for k, v in items:
        vals = v if isinstance(v, (list, tuple, set)) else [v]
        for x in vals:
            out.setdefault(str(k), []).append(x if isinstance(x, str) else json.dumps(x, sort_keys=True))
    return out


def _write_json_atomic(path: Path, obj: Any) -> None:
    from .cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def _schema(dim: int) -> "pa.Schema":
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("modality", pa.string()),
            ("source", pa.string()),
            ("labels", pa.string()),
            ("label_pairs", pa.list_(pa.string())),
            ("key", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def _rows_table(dim: int, ids, modalities, sources, labels, keys, vectors: np.ndarray) -> "pa.Table":
    import pyarrow as pa

    V = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table(
        {
            "id": pa.array([str(i) for i in ids], pa.string()),
            "modality": pa.array(list(modalities), pa.string()),
            "source": pa.array([str(s) for s in sources], pa.string()),
            "labels": pa.array(
                [json.dumps(lb or {}, sort_keys=True, default=str) for lb in labels], pa.string()
            ),
            "label_pairs": pa.array([_label_pairs(lb) for lb in labels], pa.list_(pa.string())),
            "key": pa.array(list(keys), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), dim),
        },
        schema=_schema(dim),
    )


def _vectors_of(col: "pa.ChunkedArray | pa.Array", dim: int) -> np.ndarray:
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.zeros((0, dim), np.float32)
    flat = col.flatten() if col.offset == 0 else pa.concat_arrays([col]).flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise DataError("a vector of zero norm cannot be indexed or searched")
    return x / n


@dataclass
class _Snapshot:
    """The table as of one version, in memory, for exact search and bookkeeping."""

    version: int
    meta: "pa.Table"  # every column but the vector, in row order
    vectors: np.ndarray  # (n, dim) float32
    modality: np.ndarray  # (n,) object

    def rows_where(self, modalities: Sequence[str] | None, labels: dict[str, list[str]]) -> np.ndarray | None:
        """Row numbers passing the filters (``None`` = all rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        mask = None
        if modalities is not None:
            mask = np.isin(self.modality, np.asarray(list(modalities), dtype=object))
        if labels:
            col = self.meta.column("label_pairs").combine_chunks()
            flat = pc.list_flatten(col)
            parents = pc.list_parent_indices(col).to_numpy()
            for key, vals in labels.items():
                hit = pc.is_in(flat, value_set=pa.array([f"{key}={v}" for v in vals], pa.string()))
                ok = np.zeros(len(self.modality), dtype=bool)
                ok[parents[hit.to_numpy(zero_copy_only=False).astype(bool)]] = True
                mask = ok if mask is None else (mask & ok)
        return None if mask is None else np.nonzero(mask)[0]


# ---------------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------------
class Index:
    """A persistent LanceDB index of one space's embeddings.  Build with :meth:`build`, reopen with :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any], space: "Space | None", table):
        self.path = Path(path)
        self.meta = meta
        self.space = space
        self.table = table
        self._snap: _Snapshot | None = None
        self._bank_cache: dict[Any, Any] = {}

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
        """Rows per modality."""
        snap_mods = self._column("modality")
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
    ) -> "Index":
        """An empty index: tied to ``space`` (saved inside it), or to a bare ``dim`` + ``identity`` for raw vectors."""
        import lancedb

        path = Path(path)
        if space is not None:
            dim, identity = space.dim, space.identity()
        if dim is None or identity is None:
            raise ValueError("Index.create needs a space, or dim= and identity= for a vectors-only index")
        if (path / META_FILE).exists():
            if not overwrite:
                raise IndexError_(f"{path}: an index already exists there (open it, or pass overwrite=True)")
            shutil.rmtree(path)
        elif path.exists():
            # a create killed before index.json was written leaves only our own parts: clear them
            for part in (SPACE_DIR, f"{TABLE}.lance"):
                if (path / part).exists():
                    shutil.rmtree(path / part)
        path.mkdir(parents=True, exist_ok=True)
        if space is not None:
            space.save(path / SPACE_DIR)
        db = lancedb.connect(str(path))
        table = db.create_table(TABLE, schema=_schema(int(dim)), exist_ok=True)
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
        _write_json_atomic(path / META_FILE, meta)  # written last: its presence marks a complete index
        return cls(path, meta, space, table)

    @classmethod
    def open(cls, path: str | Path, space: "Space | None" = None) -> "Index":
        """Open an index; with ``space``, refuse it unless it is the space the index was built with."""
        import lancedb

        from .space import Space

        path = Path(path)
        mp = path / META_FILE
        if not mp.is_file():
            raise IndexError_(
                f"{path}: not an anybind index (no {META_FILE}); build one with `anybind index`"
            )
        try:
            meta = json.loads(mp.read_text())
        except json.JSONDecodeError as e:
            raise IndexError_(f"{mp}: corrupt JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise IndexError_(f"{mp}: not an anybind index file")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise IndexError_(
                f"{path}: written by a newer anybind (format {meta['format_version']}); upgrade anybind"
            )
        if space is not None:
            if space.identity() != meta["identity"]:
                raise SpaceError(
                    f"index {path} was built with space identity {meta['identity']} "
                    f"(encoders {meta.get('encoders') or '-'}), but the space given has identity {space.identity()} "
                    f"({space.encoders}): its vectors would not be comparable. Rebuild the index with this space "
                    "(`anybind index SPACE MANIFEST --out NEW`), or open it with the space it was built with"
                )
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
            table = db.create_table(TABLE, schema=_schema(int(meta["dim"])), exist_ok=True)
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
    ) -> "Index":
        """Embed a corpus into a new index at ``path`` (or update the index already there, incrementally).

        modalities: the manifest fields to index (default: every field bound in the space).
        split: only this split's records (default: all).
        ann: ``"auto"`` builds an ANN index when the table reaches ``ann_threshold`` rows;
            ``True`` always; ``False`` never.
        embedder: see :meth:`add` (e.g. :func:`anybind.scale.encode.ray_index_embedder`).
        """
        path = Path(path)
        mods = sorted(set(modalities)) if modalities is not None else None
        if mods is not None:
            unknown = [m for m in mods if m not in space.modalities]
            if unknown:
                raise SpaceError(
                    f"modalities {unknown} are not bound in this space (bound: {', '.join(space.modalities)})"
                )
        if (path / META_FILE).exists() and not overwrite:
            index = cls.open(path, space)
        else:
            index = cls.create(
                path, space=space, modalities=mods or (), ann_threshold=ann_threshold, overwrite=overwrite
            )
        records = index._records(manifest, mods, split=split, progress=progress)
        if mods is None:
            mods = sorted({m for r in records for m in r.values if m in space.modalities})
        stats = index.add(records, modalities=mods, cache=cache, chunk_size=chunk_size, progress=progress,
                          embedder=embedder)
        n = len(index)
        have = index.meta.get("ann")
        if n and (ann is True or (ann == "auto" and n >= index.ann_threshold)):
            if not have or n >= 2 * int(have.get("rows", 0)) or have.get("type") != ann_type:
                index.create_ann(ann_type)
            elif stats.commits:
                index.optimize()  # folds the new rows into the existing ANN index
        return index

    # -- reading the table -------------------------------------------------
    def _column(self, name: str) -> np.ndarray:
        t = self.table.search().select([name]).limit(None).to_arrow()
        return t.column(name).to_numpy(zero_copy_only=False)

    def snapshot(self) -> _Snapshot:
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
                V[pos : pos + m] = _vectors_of(b.column("vector"), self.dim)
                metas.append(b.select(cols))
                pos += m
            schema = pa.schema([f for f in self.table.schema if f.name != "vector"])
            meta = pa.Table.from_batches(metas, schema=schema) if metas else schema.empty_table()
            mods = meta.column("modality").to_numpy(zero_copy_only=False)
            self._snap = _Snapshot(v, meta, V[:pos], mods)
            self._bank_cache.clear()
        return self._snap

    def refresh(self) -> None:
        """See writes made by other processes since this index was opened."""
        self.table.checkout_latest()
        self._snap = None

    def _save_meta(self) -> None:
        _write_json_atomic(self.path / META_FILE, self.meta)

    def _records(self, manifest, modalities, split=None, progress=False) -> list["Record"]:
        from .data.manifest import Manifest, Record

        if isinstance(manifest, (str, Path, Manifest)):
            if self.space is None:
                raise IndexError_("this index has no space: add raw vectors with add_vectors()")
            from .space import _as_manifests

            mods = modalities or [m for m in self.space.modalities]
            man = _as_manifests(manifest, mods, self.space.encoders, False, progress)[0]
            recs = man.split(split)
        else:
            recs = list(manifest)
            if split is not None:
                recs = [r for r in recs if r.split == split]
        for r in recs:
            if not isinstance(r, Record):
                raise DataError(f"expected manifest records, got {type(r).__name__}")
        return recs

    # -- writing -----------------------------------------------------------
    def _existing(self) -> dict[tuple[str, str], tuple[str, str, str]]:
        t = self.table.search().select(["id", "modality", "key", "source", "labels"]).limit(None).to_arrow()
        cols = [t.column(c).to_pylist() for c in ("id", "modality", "key", "source", "labels")]
        return {(i, m): (k, s, lb) for i, m, k, s, lb in zip(*cols)}

    def _commit(self, rows: "pa.Table", upsert: bool) -> None:
        if upsert:
            (
                self.table.merge_insert(["id", "modality"])
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
        else:
            self.table.add(rows)

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
        """Add (or update) records; only new or changed content is embedded.

        A row is (record id, modality).  Unchanged content (same content key)
        is skipped without embedding; a changed label or source is rewritten
        with the stored vector; changed content is re-embedded.  Rows are
        committed every ``chunk_size`` items, so an interrupted add keeps what
        it committed and a rerun continues from there.

        ``embedder(modality, items, chunk_size)`` replaces the in-process embedding: it
        yields ``(chunk, vectors)`` with ``chunk`` a list of the given items (any order,
        at most ``chunk_size``) and ``vectors`` their unit embeddings; each is committed
        as it arrives (:func:`anybind.scale.encode.ray_index_embedder` embeds on Ray).
        """
        if self.space is None:
            raise IndexError_("this index has no space to embed records with: use add_vectors()")
        space = self.space
        mods = sorted(set(modalities)) if modalities is not None else (self.modalities or space.modalities)
        unknown = [m for m in mods if m not in space.modalities]
        if unknown:
            raise SpaceError(
                f"modalities {unknown} are not bound in this space (bound: {', '.join(space.modalities)})"
            )
        recs = self._records(records, mods, progress=progress)
        new_mods = sorted(set(self.modalities) | set(mods))
        if new_mods != self.modalities:
            self.meta["modalities"] = new_mods
            self._save_meta()
        existing = self._existing()
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
                except OSError as e:
                    raise DataError(
                        f"record {r.id!r}: cannot read {m} file {value} ({e.strerror or e})"
                    ) from None
                labels_json = json.dumps(r.labels or {}, sort_keys=True, default=str)
                row = (r.id, m)
                old = existing.get(row)
                item = (r.id, value, r.labels or {}, key)
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
                chunks = (
                    (items[c0 : c0 + chunk_size],
                     space.embed(m, [it[1] for it in items[c0 : c0 + chunk_size]], cache=cache, progress=progress))
                    for c0 in range(0, len(items), chunk_size)
                )
            for chunk, X in chunks:
                rows = _rows_table(
                    self.dim,
                    [it[0] for it in chunk],
                    [m] * len(chunk),
                    [it[1] for it in chunk],
                    [it[2] for it in chunk],
                    [it[3] for it in chunk],
                    X,
                )
                n_old = sum((it[0], m) in existing for it in chunk)
                self._commit(rows, upsert=n_old > 0)
                stats.commits += 1
                stats.added += len(chunk) - n_old
                stats.updated += n_old
                stats.embedded[m] = stats.embedded.get(m, 0) + len(chunk)
            items = list(relabel[m].values())
            for c0 in range(0, len(items), chunk_size):
                chunk = items[c0 : c0 + chunk_size]
                vecs = self._stored_vectors([it[0] for it in chunk], m)
                rows = _rows_table(
                    self.dim,
                    [it[0] for it in chunk],
                    [m] * len(chunk),
                    [it[1] for it in chunk],
                    [it[2] for it in chunk],
                    [it[3] for it in chunk],
                    np.stack([vecs[it[0]] for it in chunk]),
                )
                self._commit(rows, upsert=True)
                stats.commits += 1
                stats.relabelled += len(chunk)
        return stats

    def _stored_vectors(self, ids: Sequence[str], modality: str) -> dict[str, np.ndarray]:
        out = {}
        for c0 in range(0, len(ids), 500):
            part = ids[c0 : c0 + 500]
            where = f"modality = {_sql_str(modality)} AND id IN ({', '.join(_sql_str(i) for i in part)})"
            t = self.table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            for i, v in zip(t.column("id").to_pylist(), _vectors_of(t.column("vector"), self.dim)):
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
        X = np.asarray(vectors, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise DataError(f"vectors of shape {X.shape}: this index holds {self.dim}-d vectors")
        if len(ids) != len(X):
            raise DataError(f"{len(ids)} ids but {len(X)} vectors")
        if not np.isfinite(X).all():
            raise DataError("vectors contain non-finite values")
        X = _unit(X)
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise DataError("duplicate ids in one add_vectors call")
        sources = list(sources) if sources is not None else ids
        labels = list(labels) if labels is not None else [{}] * len(ids)
        if keys is None:
            import hashlib

            keys = ["v:" + hashlib.sha256(x.tobytes()).hexdigest()[:32] for x in X]
        existing = set(self._existing()) if len(self) else set()
        stats = AddStats()
        if modality not in self.meta["modalities"]:
            self.meta["modalities"] = sorted(set(self.meta["modalities"]) | {modality})
            self._save_meta()
        for c0 in range(0, len(ids), chunk_size):
            sl = slice(c0, c0 + chunk_size)
            part = ids[sl]
            n_old = sum((i, modality) in existing for i in part)
            rows = _rows_table(
                self.dim, part, [modality] * len(part), sources[sl], labels[sl], keys[sl], X[sl]
            )
            self._commit(rows, upsert=n_old > 0)
            stats.commits += 1
            stats.added += len(part) - n_old
            stats.updated += n_old
        return stats

    def delete(self, ids: Iterable[str], modality: str | None = None) -> int:
        """Delete every row of these record ids (only ``modality``'s rows when given); returns rows deleted."""
        ids = [str(i) for i in ids]
        before = len(self)
        for c0 in range(0, len(ids), 500):
            part = ids[c0 : c0 + 500]
            where = f"id IN ({', '.join(_sql_str(i) for i in part)})"
            if modality is not None:
                where = f"modality = {_sql_str(modality)} AND " + where
            self.table.delete(where)
        return before - len(self)

    def optimize(self) -> None:
        """Compact small fragments, fold new rows into the ANN index, drop versions older than a week."""
        self.table.optimize()
        self._snap = None

    # -- ANN -----------------------------------------------------------------
    def create_ann(
        self,
        kind: str = "ivf_hnsw_sq",
        *,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        m: int = 16,
        ef_construction: int = 100,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        ef: int | None = None,
    ) -> dict[str, Any]:
        """Build an ANN index over the vector column (replacing any previous one).

        kind: ``"ivf_hnsw_sq"`` (IVF partitions, an HNSW graph over 8-bit scalar-quantised
            vectors in each) or ``"ivf_pq"`` (IVF + product quantisation; pair it with
            ``refine_factor`` to re-score candidates with the full vectors).
        nprobes / refine_factor / ef: the query-time defaults stored with the index.
        """
        from lancedb.index import IvfHnswSq, IvfPq

        kind = kind.lower().replace("-", "_")
        n = len(self)
        if n < 256:
            raise IndexError_(
                f"an ANN index needs at least 256 rows to train on (this index has {n}); exact search is used"
            )
        if kind == "ivf_hnsw_sq":
            parts = num_partitions or max(1, n // 250_000)
            cfg = IvfHnswSq(distance_type="dot", num_partitions=parts, m=m, ef_construction=ef_construction)
            search = {"nprobes": nprobes or min(parts, 4), "ef": ef or 128, "refine_factor": refine_factor}
        elif kind == "ivf_pq":
            parts = num_partitions or max(1, int(np.sqrt(n)))
            sub = num_sub_vectors or max(1, self.dim // 8)
            while self.dim % sub:
                sub -= 1
            cfg = IvfPq(distance_type="dot", num_partitions=parts, num_sub_vectors=sub)
            search = {
                "nprobes": nprobes or max(20, parts // 20),
                "refine_factor": 10 if refine_factor is None else refine_factor,
                "ef": None,
            }
        else:
            raise ValueError(f"unknown ANN kind {kind!r} (use one of {', '.join(ANN_TYPES)})")
        t0 = time.perf_counter()
        self.table.create_index("vector", config=cfg, replace=True)
        self.meta["ann"] = {
            "type": kind,
            "num_partitions": parts,
            "rows": n,
            "search": search,
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        self._save_meta()
        return self.meta["ann"]

    def uses_ann(self, exact: bool | None = None) -> bool:
        if exact is True:
            return False
        has = bool(self.meta.get("ann"))
        if exact is False:
            if not has:
                raise IndexError_(
                    "no ANN index: build one with create_ann() (or `anybind index --ann always`)"
                )
            return True
        return has and len(self) >= self.ann_threshold

    def _where(self, modalities: Sequence[str] | None, labels: dict[str, list[str]]) -> str | None:
        conds = []
        if modalities is not None:
            conds.append(f"modality IN ({', '.join(_sql_str(m) for m in modalities)})")
        for k, vals in labels.items():
            conds.append(
                "(" + " OR ".join(f"array_has(label_pairs, {_sql_str(f'{k}={v}')})" for v in vals) + ")"
            )
        return " AND ".join(conds) if conds else None

    def _ann_search(
        self,
        Q: np.ndarray,
        k: int,
        where: str | None,
        *,
        with_vectors: bool = True,
        batch: int = 64,
        **params,
    ) -> list["pa.Table"]:
        """ANN top-``k`` per query vector, ``batch`` queries per LanceDB call (a multi-vector query:
        several times faster than one call per query).  Each result holds the metadata columns,
        ``vector`` (when ``with_vectors``) and ``score``, best first."""
        import pyarrow as pa
        import pyarrow.compute as pc

        sp = dict((self.meta.get("ann") or {}).get("search") or {})
        sp.update({k_: v for k_, v in params.items() if v is not None})
        cols = ["id", "modality", "source", "labels", "label_pairs", "key"] + (
            ["vector"] if with_vectors else []
        )
        out: list[pa.Table] = []
        for s0 in range(0, len(Q), batch):
            part = np.asarray(Q[s0 : s0 + batch], np.float32)
            b = self.table.search(list(part) if len(part) > 1 else part[0]).distance_type("dot").limit(k)
            if sp.get("nprobes"):
                b = b.nprobes(int(sp["nprobes"]))
            if sp.get("refine_factor"):
                b = b.refine_factor(int(sp["refine_factor"]))
            if sp.get("ef"):
                b = b.ef(int(sp["ef"]))
            if where:
                b = b.where(where, prefilter=True)
            t = b.select(cols + ["_distance"]).to_arrow()
            score = pa.array(1.0 - t.column("_distance").to_numpy(zero_copy_only=False), pa.float32())
            t = t.append_column("score", score)
            if len(part) == 1:
                groups = [t]
            else:
                qi = t.column("query_index").to_numpy(zero_copy_only=False)
                groups = [t.filter(pa.array(qi == j)) for j in range(len(part))]
            for g in groups:
                sc = g.column("score").to_numpy(zero_copy_only=False)
                if len(sc) > 1 and np.any(np.diff(sc) > 0):  # LanceDB returns each query's rows best first
                    g = g.take(pc.sort_indices(g, sort_keys=[("score", "descending")]))
                out.append(g.select(cols + ["score"]))
        return out

    def ann_recall(
        self,
        k: int = 10,
        n_queries: int = 200,
        *,
        queries: np.ndarray | None = None,
        modality: str | None = None,
        noise: float = 0.5,
        seed: int = 0,
        **ann_params,
    ) -> dict[str, float]:
        """Recall@k of the ANN index against exact search, and both speeds, on the same queries.

        Queries default to ``n_queries`` stored vectors (of ``modality``, if given)
        perturbed with Gaussian noise of norm ~``noise`` and renormalised, so that
        no query is its own trivial nearest neighbour.  Both searches are timed
        one query at a time (``*_qps_single``) and batched (``*_qps_batch``: one
        matmul for exact, multi-vector LanceDB queries for ANN).
        """
        snap = self.snapshot()
        rows = snap.rows_where([modality] if modality else None, {})
        if queries is None:
            rng = np.random.default_rng(seed)
            pool = np.arange(len(snap.vectors)) if rows is None else rows
            pick = rng.choice(pool, size=min(n_queries, len(pool)), replace=False)
            Q = snap.vectors[pick] + rng.normal(size=(len(pick), self.dim)).astype(np.float32) * (
                noise / np.sqrt(self.dim)
            )
            Q = _unit(Q)
        else:
            Q = _unit(np.atleast_2d(queries))
        t0 = time.perf_counter()
        _, gt = exact_topk(Q, snap.vectors, k, rows=rows)
        t_exact_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in Q[: min(len(Q), 50)]:
            exact_topk(q[None], snap.vectors, k, rows=rows)
        t_exact_single = (time.perf_counter() - t0) / min(len(Q), 50)
        where = self._where([modality] if modality else None, {})
        ids_mod = list(zip(snap.meta.column("id").to_pylist(), snap.modality))
        t0 = time.perf_counter()
        res = self._ann_search(Q, k, where, with_vectors=False, **ann_params)
        t_ann = (time.perf_counter() - t0) / len(Q)
        n1 = min(len(Q), 50)
        t0 = time.perf_counter()
        self._ann_search(Q[:n1], k, where, with_vectors=False, batch=1, **ann_params)
        t_ann_single = (time.perf_counter() - t0) / n1
        rec = []
        for i, t in enumerate(res):
            got = set(zip(t.column("id").to_pylist(), t.column("modality").to_pylist()))
            want = {ids_mod[j] for j in gt[i]}
            rec.append(len(got & want) / max(1, len(want)))
        return {
            f"recall@{k}": float(np.mean(rec)),
            "ann_qps_single": 1.0 / t_ann_single,
            "ann_qps_batch": 1.0 / t_ann,
            "exact_qps_single": 1.0 / t_exact_single,
            "exact_qps_batch": len(Q) / t_exact_batch,
            "speedup_single": t_exact_single / t_ann_single,
            "speedup_batch": t_exact_batch / len(Q) / t_ann,
            "n_queries": int(len(Q)),
            "rows": int(len(snap.vectors)),
        }

    # -- queries -------------------------------------------------------------
    def embed_query(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        text_modality: str = "text",
    ) -> tuple[np.ndarray, list[str]]:
        """One unit query vector from one or several inputs, and the input modalities.

        ``query`` may be a text, a file path (modality from its suffix), a vector,
        or a list of ``(modality, item)`` / ``(modality, item, weight)`` tuples.
        ``text=``, ``image=``, ``audio=`` take one item or a list; ``inputs`` maps
        any bound modality (``"text_fr"``, ``"speech"``...) to items.  Several
        inputs are fused: the weighted mean of their unit vectors, renormalised
        (``weights`` follow the order query, text, image, audio, inputs).
        """
        parts: list[tuple[str, Any]] = []
        vec_parts: list[np.ndarray] = []
        tuple_weights: list[float | None] = []

        def as_list(x):
            return list(x) if isinstance(x, (list, tuple)) else [x]

        if query is not None:
            if isinstance(query, np.ndarray):
                q = np.asarray(query, np.float32)
                if q.ndim == 2 and q.shape[0] == 1:
                    q = q[0]
                if q.shape != (self.dim,):
                    raise QueryError(
                        f"query vector of shape {query.shape}: this index holds {self.dim}-d vectors"
                    )
                vec_parts.append(q)
            elif isinstance(query, str) and not _looks_like_file(query):
                parts.append((text_modality, query))
            elif isinstance(query, (str, Path)):
                parts.append((_modality_of_file(query), query))
            elif isinstance(query, (list, tuple)):
                for t in query:
                    if not isinstance(t, tuple) or len(t) not in (2, 3):
                        raise QueryError(
                            f"query list items must be (modality, item[, weight]) tuples, got {t!r}"
                        )
                    parts.append((t[0], t[1]))
                    tuple_weights.append(t[2] if len(t) == 3 else None)
            else:
                raise QueryError(f"unsupported query of type {type(query).__name__}")
        for m, v in ((text_modality, text), ("image", image), ("audio", audio)):
            if v is not None:
                parts += [(m, x) for x in as_list(v)]
        if inputs is not None:
            items = inputs.items() if isinstance(inputs, Mapping) else inputs
            for m, v in items:
                parts += [(m, x) for x in as_list(v)]
        n_inputs = len(vec_parts) + len(parts)
        if n_inputs == 0:
            raise QueryError("empty query: give a text, an image or audio path, or a vector")
        if weights is None and any(w is not None for w in tuple_weights):
            weights = (
                [1.0] * len(vec_parts)
                + [w if w is not None else 1.0 for w in tuple_weights]
                + [1.0] * (len(parts) - len(tuple_weights))
            )
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != n_inputs:
                raise QueryError(f"{len(weights)} weights for {n_inputs} query inputs")
            if not all(np.isfinite(weights)) or sum(abs(w) for w in weights) == 0:
                raise QueryError("query weights must be finite and not all zero")
        vecs = [_unit(v) for v in vec_parts]
        for m, item in parts:
            vecs.append(self._embed_one(m, item, cache))
        W = np.ones(len(vecs), np.float32) if weights is None else np.asarray(weights, np.float32)
        fused = (W[:, None] * np.stack(vecs)).sum(0)
        norm = float(np.linalg.norm(fused))
        if norm < 1e-6:
            raise QueryError(
                "the fused query vector is zero (the inputs cancel out): change the inputs or weights"
            )
        return (fused / norm).astype(np.float32), sorted({m for m, _ in parts})

    def _embed_one(self, modality: str, item: Any, cache) -> np.ndarray:
        space = self.space
        if space is None:
            raise QueryError("this index has no space to embed queries with: pass a query vector")
        if modality not in space.modalities:
            raise QueryError(
                f"unknown query modality {modality!r}: this index's space binds {', '.join(space.modalities)}"
            )
        kind = getattr(space.encoder(modality), "input_kind", "file")
        if kind == "text":
            if not isinstance(item, str) or not item.strip():
                raise QueryError(f"empty {modality} query: give some text")
        elif kind == "file":
            p = Path(item)
            if not p.exists():
                raise QueryError(f"cannot read {modality} query {p}: no such file")
            if not p.is_file():
                raise QueryError(f"cannot read {modality} query {p}: not a regular file")
            try:
                with open(p, "rb") as f:
                    f.read(1)
            except OSError as e:
                raise QueryError(f"cannot read {modality} query {p}: {e.strerror or e}") from None
            item = str(p.resolve())
        try:
            return space.embed(modality, [item], cache=cache)[0]
        except AnybindError as e:
            raise QueryError(f"cannot use {modality} query: {e}") from None

    def _check_targets(self, modality: str | Sequence[str] | None) -> list[str] | None:
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

    def search(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        **ann_params,
    ) -> list[Hit]:
        """Search with one (possibly fused) query; returns up to ``k`` hits, best first.

        modality: only return items of this modality (or these); default any.
        labels: ``{"category": "animals"}`` or ``["category=animals"]``; every key must
            match (a list of values matches any of them).
        rerank: ``"csls"``, ``"qbnorm"`` or ``"invgc"`` (see :mod:`anybind.rerank`).  The
            query bank is the indexed items of the query's modalities (or ``query_bank``:
            vectors, or modality names); the gallery bank is the searched items.
        exact: force exact (``True``) or ANN (``False``) search; default: ANN when the
            index has one and at least ``ann_threshold`` rows.
        ann_params: ``nprobes``, ``refine_factor``, ``ef`` overrides for ANN search.
        """
        k = _check_k(k)
        targets = self._check_targets(modality)
        lab = _label_filter(labels)
        q, qmods = self.embed_query(
            query, text=text, image=image, audio=audio, inputs=inputs, weights=weights, cache=cache
        )
        bank = query_bank if query_bank is not None else (qmods or None)
        return self.search_vectors(
            q[None],
            modality=targets,
            k=k,
            labels=lab,
            rerank=rerank,
            rerank_params=rerank_params,
            query_bank=bank,
            exact=exact,
            **ann_params,
        )[0]

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        rerank_pool: int = 1000,
        bank_size: int = 4096,
        **ann_params,
    ) -> list[list[Hit]]:
        """Search with a batch of query vectors (n, dim); one hit list per query."""
        from . import rerank as rr

        k = _check_k(k)
        try:
            method = rr.check_method(rerank)
        except DataError as e:
            raise QueryError(str(e)) from None
        Q = _unit(np.atleast_2d(np.asarray(queries, np.float32)))
        if Q.shape[1] != self.dim:
            raise QueryError(f"queries of width {Q.shape[1]}: this index holds {self.dim}-d vectors")
        targets = self._check_targets(modality) if modality is not None else None
        lab = _label_filter(labels)
        pool = k if method is None else max(k, rerank_pool)
        cands = self._candidates(Q, pool, targets, lab, exact, with_vectors=method is not None, **ann_params)
        if method is not None:
            cands = self._rerank(method, Q, cands, targets, lab, rerank_params, query_bank, bank_size, exact)
        out = []
        for t, scores in cands:
            order = np.argsort(-scores, kind="stable")[:k]
            ids = t.column("id").to_pylist()
            mods = t.column("modality").to_pylist()
            srcs = t.column("source").to_pylist()
            labs = t.column("labels").to_pylist()
            out.append(
                [
                    Hit(ids[j], mods[j], float(scores[j]), srcs[j], json.loads(labs[j] or "{}"), r + 1)
                    for r, j in enumerate(order)
                ]
            )
        return out

    def _candidates(
        self, Q, pool, targets, lab, exact, with_vectors=True, **ann_params
    ) -> list[tuple["pa.Table", np.ndarray]]:
        """Per query: (candidate rows with metadata (+ ``vector``), their raw scores)."""
        import pyarrow as pa

        if self.uses_ann(exact):
            res = self._ann_search(
                Q, pool, self._where(targets, lab), with_vectors=with_vectors, **ann_params
            )
            return [(t, t.column("score").to_numpy(zero_copy_only=False).astype(np.float32)) for t in res]
        snap = self.snapshot()
        rows = snap.rows_where(targets, lab)
        S, idx = exact_topk(Q, snap.vectors, pool, rows=rows)
        out = []
        for s, i in zip(S, idx):
            t = snap.meta.take(pa.array(i, pa.int64()))
            if with_vectors:
                V = pa.FixedSizeListArray.from_arrays(pa.array(snap.vectors[i].reshape(-1)), self.dim)
                t = t.append_column("vector", V)
            out.append((t, s))
        return out

    def _bank(self, spec, bank_size: int, seed: int = 0) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Bank vectors and their record ids: an array as given (no ids), or a sample (at most
        ``bank_size``) of the indexed items of some modalities."""
        if spec is None:
            return None, None
        if isinstance(spec, np.ndarray):
            return _unit(np.atleast_2d(spec)), None
        mods = [spec] if isinstance(spec, str) else list(spec)
        key = ("bank", tuple(mods), bank_size, self.table.version)
        if key not in self._bank_cache:
            where = f"modality IN ({', '.join(_sql_str(m) for m in mods)})"
            t = self.table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            V = _vectors_of(t.column("vector"), self.dim)
            ids = t.column("id").to_numpy(zero_copy_only=False)
            if len(V) > bank_size:
                pick = np.sort(np.random.default_rng(seed).choice(len(V), bank_size, replace=False))
                V, ids = V[pick], ids[pick]
            self._bank_cache[key] = (V, ids)
        return self._bank_cache[key]

    def _rerank(self, method, Q, cands, targets, lab, params, query_bank, bank_size, exact):
        """Re-score each query's candidates.  Banks come from the index itself, so a gallery
        item's own record (the item, or its partner in another modality) is left out of the
        bank statistics of that item (see :func:`anybind.rerank._without_self`)."""
        from . import rerank as rr

        p = rr.params_for(method, params)
        qbank, qids = self._bank(query_bank, bank_size)
        if method in ("csls", "qbnorm") and (qbank is None or len(qbank) == 0):
            raise QueryError(
                f"rerank {method} needs a query bank: the index has no items of the query's modality "
                f"({query_bank or 'a vector query has none'}); pass query_bank= (vectors or modality names)"
            )
        gmods = targets if targets is not None else sorted(self.counts())
        gbank, gids = self._bank(list(gmods), bank_size) if method == "invgc" else (None, None)
        active = None
        if method == "qbnorm":
            key = (
                "active",
                id(qbank),
                tuple(gmods),
                json.dumps(lab, sort_keys=True),
                p["k"],
                self.table.version,
            )
            if key not in self._bank_cache:
                # gallery items in some bank query's top-k over the whole (filtered) gallery, leaving
                # out the bank query's own record (itself, or its partner in another modality)
                kk = p["k"] + 1 + len(self.modalities)
                if self.uses_ann(exact):
                    top = self._ann_search(qbank, kk, self._where(targets, lab), with_vectors=False)
                    hits = [
                        list(
                            zip(
                                t.column("id").to_pylist(),
                                t.column("modality").to_pylist(),
                                t.column("score").to_numpy(zero_copy_only=False),
                            )
                        )
                        for t in top
                    ]
                else:
                    snap = self.snapshot()
                    S, top = exact_topk(qbank, snap.vectors, kk, rows=snap.rows_where(targets, lab))
                    ids = snap.meta.column("id").to_numpy(zero_copy_only=False)
                    hits = [[(ids[j], snap.modality[j], v) for v, j in zip(sr, tr)] for sr, tr in zip(S, top)]
                pairs = set()
                for b, row in enumerate(hits):
                    own = qids[b] if qids is not None else None
                    keep = [(i, m) for i, m, v in row if i != own and v <= 1.0 - rr.SELF_TOL]
                    pairs.update(keep[: p["k"]])
                self._bank_cache[key] = pairs
            active = self._bank_cache[key]
        out = []
        for qi, (t, s) in enumerate(cands):
            if len(s) == 0:
                out.append((t, s))
                continue
            G = _vectors_of(t.column("vector"), self.dim)
            cids = t.column("id").to_numpy(zero_copy_only=False)
            if method == "invgc":
                new = rr.invgc(
                    Q[qi : qi + 1],
                    G,
                    qbank,
                    gbank,
                    **p,
                    gallery_ids=cids,
                    query_bank_ids=qids,
                    gallery_bank_ids=gids,
                )[0]
            elif method == "csls":
                new = rr.csls(s[None], qbank @ G.T, k=p["k"], bank_ids=qids, gallery_ids=cids)[0]
            else:
                mods = t.column("modality").to_pylist()
                mask = np.array([(i, m) in active for i, m in zip(cids, mods)])
                new = rr.qb_norm(
                    s[None],
                    qbank @ G.T,
                    beta=p["beta"],
                    k=p["k"],
                    active=mask,
                    bank_ids=qids,
                    gallery_ids=cids,
                )[0]
            out.append((t, np.asarray(new, np.float32)))
        return out

    # -- zero-shot -------------------------------------------------------------
    def classify(
        self,
        classes: Sequence[str],
        *,
        modality: str | None = None,
        templates: Sequence[str] = ("a {}.",),
        k: int = 5,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        text_modality: str = "text",
        cache: "FeatureCache | str | Path | None" = None,
        batch_size: int = 4096,
    ) -> list[dict[str, Any]]:
        """Zero-shot classify the indexed items (of ``modality``) over any number of class names.

        Nothing stored is re-embedded; class prompts go through the feature cache
        in batches (see :func:`class_embeddings`).  Returns, per item,
        ``{"id", "modality", "classes": [(name, score), ...]}`` (top ``k``).
        """
        if self.space is None:
            raise IndexError_("this index has no space to embed class names with")
        k = _check_k(k)
        targets = self._check_targets(modality)
        C = class_embeddings(
            self.space, classes, templates, text_modality=text_modality, cache=cache, batch_size=batch_size
        )
        snap = self.snapshot()
        rows = snap.rows_where(targets, _label_filter(labels))
        idx = np.arange(len(snap.vectors)) if rows is None else rows
        out = []
        ids = snap.meta.column("id").to_pylist()
        for c0 in range(0, len(idx), 65536):
            part = idx[c0 : c0 + 65536]
            S, top = exact_topk(snap.vectors[part], C, k)
            for r, s, i in zip(part, S, top):
                out.append(
                    {
                        "id": ids[r],
                        "modality": str(snap.modality[r]),
                        "classes": [(classes[j], float(v)) for v, j in zip(s, i)],
                    }
                )
        return out


def class_embeddings(
    space: "Space",
    names: Sequence[str],
    templates: Sequence[str] = ("a {}.",),
    *,
    text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Prompt-ensemble embeddings (n_classes, dim) of many class names, in batches through the feature cache.

    Each class is the renormalised mean of its templates' embeddings; prompts are
    embedded ``batch_size`` at a time (so thousands of classes x templates never
    sit in memory as encoder inputs at once) and every prompt's encoder features
    are cached, so a second call with the same classes encodes nothing.
    """
    from .cache import FeatureCache

    if not names:
        raise DataError("no class names given")
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad:
        raise DataError(f"empty class name at position {bad[0]}")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    T = len(templates)
    per = max(1, batch_size // max(1, T))
    out = np.zeros((len(names), space.dim), np.float32)
    for c0 in range(0, len(names), per):
        part = names[c0 : c0 + per]
        prompts = [t.format(n) for n in part for t in templates]
        E = space.embed(text_modality, prompts, cache=fc).reshape(len(part), T, -1).mean(1)
        out[c0 : c0 + len(part)] = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return out


def zero_shot_topk(
    space: "Space",
    vectors: np.ndarray,
    classes: Sequence[str],
    *,
    templates: Sequence[str] = ("a {}.",),
    k: int = 5,
    text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` classes (scores, class indices) of embedded items over a large label set."""
    C = class_embeddings(
        space, classes, templates, text_modality=text_modality, cache=cache, batch_size=batch_size
    )
    return exact_topk(_unit(np.atleast_2d(vectors)), C, _check_k(k))


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise QueryError(f"k must be a positive integer, got {k}")
    return int(k)


def _looks_like_file(s: str) -> bool:
    suf = Path(s).suffix.lower()
    return (suf in _IMAGE_SUFFIXES or suf in _AUDIO_SUFFIXES) and "\n" not in s and len(s) < 4096


def _modality_of_file(p: str | Path) -> str:
    suf = Path(p).suffix.lower()
    if suf in _IMAGE_SUFFIXES:
        return "image"
    if suf in _AUDIO_SUFFIXES:
        return "audio"
    raise QueryError(
        f"cannot tell the modality of {p} from its suffix: pass image=..., audio=... or inputs={{modality: path}}"
    )

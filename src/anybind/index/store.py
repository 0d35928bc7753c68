"""The on-disk side of an index: format constants, the LanceDB table schema, rows to and from
Arrow, label filters and SQL quoting, atomic ``index.json`` writes, and :class:`Snapshot` (the
table in memory).  pyarrow is imported inside the functions that need it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..artefact_meta import check_header
from .errors import IndexError_, QueryError

if TYPE_CHECKING:
    import pyarrow as pa

os.environ.setdefault("LANCE_LOG", "error")  # lance logs "no existing dataset" etc. as warnings

FORMAT = "anybind.index"
FORMAT_VERSION = 1
META_FILE = "index.json"
TABLE = "items"
SPACE_DIR = "space"
DEFAULT_ANN_THRESHOLD = 100_000
ANN_TYPES = ("ivf_hnsw_sq", "ivf_pq")
#: the columns a search hit is made of (:class:`~anybind.index.results.Hit`)
HIT_COLUMNS = ("id", "modality", "source", "labels")


def sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def sql_where(modalities: Sequence[str] | None, labels: Mapping[str, Sequence[str]]) -> str | None:
    """The SQL filter of a search: rows of these modalities (``None``: any) carrying every label key with
    one of its values (``{key: [values]}``, from :func:`label_filter`); ``None`` when nothing is filtered."""
    conds = []
    if modalities is not None:
        conds.append(f"modality IN ({', '.join(sql_str(m) for m in modalities)})")
    for k, vals in labels.items():
        conds.append("(" + " OR ".join(f"array_has(label_pairs, {sql_str(f'{k}={v}')})" for v in vals) + ")")
    return " AND ".join(conds) if conds else None


def _label_pairs(labels: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in sorted((labels or {}).items()):
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            out.append(f"{k}={x if isinstance(x, str) else json.dumps(x, sort_keys=True)}")
    return out


def label_filter(labels: Mapping[str, Any] | Sequence[str] | None) -> dict[str, list[str]]:
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


def write_json_atomic(path: Path, obj: Any) -> None:
    from ..io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def table_schema(dim: int) -> "pa.Schema":
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
            # a file item's size in bytes when it was indexed (null: no file, or an index written before
            # the column; such tables keep their schema): the service refuses a file of another size unhashed
            ("size", pa.int64()),
        ]
    )


def rows_table(
    dim: int, ids, modalities, sources, labels, keys, vectors: np.ndarray, sizes=None
) -> "pa.Table":
    """Rows in the table's schema; ``sizes``: each file item's size in bytes (``None``: not a file)."""
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
            "size": pa.array(list(sizes) if sizes is not None else [None] * len(V), pa.int64()),
        },
        schema=table_schema(dim),
    )


def vectors_of(col: "pa.ChunkedArray | pa.Array", dim: int) -> np.ndarray:
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.zeros((0, dim), np.float32)
    flat = col.flatten() if col.offset == 0 else pa.concat_arrays([col]).flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def one_chunk(t: "pa.Table") -> "pa.Table":
    """``t`` with each column in one chunk (a take of a few rows across the 64k-row batches a table is
    read in costs ~1 ms; in one chunk, tens of microseconds)."""
    return t.combine_chunks() if any(c.num_chunks > 1 for c in t.columns) else t


def objects_of(col: "pa.Array | pa.ChunkedArray") -> np.ndarray:
    """A string column as a numpy object array, one Python string per distinct value (a modality or an
    empty label set repeated on a million rows costs a pointer a row, not a string a row); nulls: ``None``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    enc = pc.dictionary_encode(arr)
    words = np.empty(len(enc.dictionary) + 1, object)
    words[:-1] = enc.dictionary.to_pylist()
    words[-1] = None
    return words[enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)]


class HitColumns(NamedTuple):
    """What a hit is made of, per row of a :class:`Snapshot` (see :meth:`Snapshot.hit_columns`)."""

    id: list[str]
    modality: list[str]
    source: list[str]
    labels: list[str | None]  # JSON


@dataclass
class Snapshot:
    """The table as of one version, in memory, for exact search and bookkeeping."""

    version: int
    meta: "pa.Table"  # every column but the vector, in row order
    vectors: np.ndarray  # (n, dim) float32
    modality: np.ndarray  # (n,) object
    _hit_columns: "HitColumns | None" = field(default=None, init=False, repr=False, compare=False)

    def hit_columns(self) -> "HitColumns":
        """The :data:`HIT_COLUMNS` as four Python lists, one value per row (by :func:`objects_of`: one string
        per distinct value; made once per snapshot): a search's hits are list lookups by row number, under
        a microsecond a hit, where a take of the Arrow table right after a graph search costs 100-300 us
        (its caches are cold) and a fancy index of an object array several microseconds."""
        cols = self._hit_columns
        if cols is None:
            cols = self._hit_columns = HitColumns(*(
                (self.modality if c == "modality" else objects_of(self.meta.column(c))).tolist() for c in HIT_COLUMNS))
        return cols

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


# index.json's keys that may be absent or null, and what each must otherwise be
_OPTIONAL = {"space": (str, "a folder name or null"), "ann": (dict, "an object or null"),
             "memory_ann": (dict, "an object or null"), "quantize": (dict, "an object or null")}


def check_fields(mp: Path, meta: dict[str, Any]) -> None:
    """``index.json``'s own fields (``mp``: its path) are of the types the index reads them as; otherwise
    :class:`IndexError_` in one line naming the file, the key and its value."""
    def bad(key: str, want: str) -> IndexError_:
        return IndexError_(f"{mp}: {key} is {meta.get(key)!r}, expected {want} (damaged index)")

    if not isinstance(meta.get("identity"), str) or not meta["identity"]:
        raise IndexError_(f"{mp}: no space 'identity' (the space the index was built with): damaged index")
    if type(meta.get("dim")) is not int or meta["dim"] < 1:  # bool is an int subclass: `true` is not a width
        raise bad("dim", "a positive integer")
    mods = meta.get("modalities", [])
    if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
        raise bad("modalities", "a list of names")
    if "ann_threshold" in meta and type(meta["ann_threshold"]) is not int:
        raise bad("ann_threshold", "an integer")
    for key, (kind, want) in _OPTIONAL.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise bad(key, want)


def check_meta(mp: Path, meta: Any) -> dict[str, Any]:
    """``index.json`` (``mp``) parsed, checked as every reader checks it -- :meth:`Index.open
    <anybind.index.Index.open>` and a refresh adopting another process's rewrite alike: an index header of a
    format version this anybind reads (the first indexes had none: format 0), its fields of the types the index
    reads them as; otherwise :class:`IndexError_` in one line naming the file."""
    check_header(meta, mp, fmt=FORMAT, version=FORMAT_VERSION, what="index", error=IndexError_, unversioned=0)
    check_fields(mp, meta)
    return meta

"""Reading the files of a ``vectors:<path>`` encoder: ids and a numeric matrix, checked.

A Parquet file (``id`` column + a ``vector`` list column, or one numeric column per dimension),
an ``.npz`` (arrays ``ids`` and ``vectors``) or an ``.npy`` matrix with its ids in ``<path>.ids.txt``.
Nothing is unpickled (object arrays are refused), and a header that states more data than the
file holds is refused before anything of that size is allocated.  Every problem is one
:class:`~anybind.errors.DataError` line naming the file and the reason.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..data.files import file_problem
from ..errors import DataError


def _why(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _matrix(path: Path, arr: np.ndarray, what: str = "vectors") -> np.ndarray:
    """A real-valued numeric array as float32 (dimensions are checked by the encoder)."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise DataError(f"{path}: {what} have dtype {arr.dtype}, expected real numbers")
    return np.asarray(arr, dtype=np.float32)


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    if "id" not in t.column_names:
        raise DataError(f"{path}: Parquet vectors need an 'id' column")
    ids = [str(x) for x in t.column("id").to_pylist()]
    if "vector" in t.column_names:
        rows = t.column("vector").to_pylist()
        nulls = [ids[i] for i, r in enumerate(rows) if r is None or not isinstance(r, list)]
        if nulls:
            raise DataError(f"{path}: the 'vector' column is not a list for ids {nulls[:3]}")
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            raise DataError(f"{path}: the 'vector' column is ragged (rows of lengths {lengths[:5]})")
        if any(x is None for r in rows for x in r):
            raise DataError(f"{path}: the 'vector' column has missing values")
        return ids, _matrix(path, np.asarray(rows))
    cols = [c for c in t.column_names if c != "id"]
    bad = [c for c in cols if not (pa.types.is_integer(t.schema.field(c).type) or pa.types.is_floating(t.schema.field(c).type))]
    if bad or not cols:
        raise DataError(f"{path}: Parquet vectors need a 'vector' list column or numeric columns (not {bad[:3] or 'none'})")
    if any(t.column(c).null_count for c in cols):
        raise DataError(f"{path}: the vector columns have missing values")
    return ids, _matrix(path, np.stack([t.column(c).to_numpy() for c in cols], axis=1))


def _npz_member(path: Path, z, name: str) -> np.ndarray:
    """One array of an .npz, its header checked against the member's size before it is read."""
    member = name + ".npy"
    info = z.zip.getinfo(member)
    with z.zip.open(info) as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    if dtype.hasobject:
        raise DataError(f"{path}: '{name}' is an object array (pickled data is never loaded)")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
        raise DataError(f"{path}: '{name}' states shape {shape} but holds only {info.file_size} bytes (truncated)")
    return z[name]


def _read_npz(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        if "ids" not in z.files or "vectors" not in z.files:
            raise DataError(f"{path}: .npz vectors need arrays 'ids' and 'vectors'")
        ids = _npz_member(path, z, "ids")
        if ids.ndim != 1:
            raise DataError(f"{path}: 'ids' must be a 1-D array, got shape {ids.shape}")
        return [str(x) for x in ids], _matrix(path, _npz_member(path, z, "vectors"))


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    side = path.with_name(path.name + ".ids.txt")
    if file_problem(side):
        raise DataError(f"{path}: an .npy matrix needs its ids in {side.name} (one per line, row order)")
    ids = side.read_text(encoding="utf-8").splitlines()
    # memory-mapped first: a header stating more than the file holds fails here, before any allocation
    return ids, _matrix(path, np.array(np.load(path, mmap_mode="r", allow_pickle=False)))


_READERS = {".parquet": _read_parquet, ".npz": _read_npz, ".npy": _read_npy}


def read_vectors_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Ids (as strings) and a float32 array of a vectors file, or a :class:`DataError` saying why not."""
    why = file_problem(path)
    if why:
        raise DataError(f"{path}: vectors {why}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported vectors file (use .parquet, .npz or .npy + .ids.txt)")
    try:
        return reader(path)
    except DataError:
        raise
    except (ValueError, TypeError, NotImplementedError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # numpy: "Object arrays cannot be loaded when allow_pickle=False", a bad header, "mmap length is greater
        # than file size"; pyarrow: ArrowInvalid (a ValueError) on a file that is not Parquet
        raise DataError(f"{path}: not a readable {path.suffix} vectors file ({_why(e)})") from None

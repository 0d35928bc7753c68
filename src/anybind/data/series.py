"""Reading time series: ``.npy`` (never a pickle) or CSV/TSV files, and in-memory arrays.

A series is a float64 ``(channels, length)`` array.  Every function raises
:class:`~anybind.errors.DataError` naming the file and what is wrong.  The
time-series encoders (:mod:`anybind.encoders.timeseries`) and manifest
validation both read through here.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

#: the fewest time steps a series may have
MIN_LENGTH = 2
#: refuse files whose array would not fit comfortably in memory (elements)
MAX_ELEMENTS = 50_000_000

NPY_MAGIC = b"\x93NUMPY"


def as_series(arr: Any, what: str = "series") -> np.ndarray:
    """Validate an array as one series: float64 ``(channels, length)``, finite, long enough.

    A 1-d array is one channel.  Raises :class:`DataError` starting with ``what``.
    """
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{what}: not a numeric array (dtype {a.dtype})")
    if np.iscomplexobj(a):
        raise DataError(f"{what}: complex values are not a time series")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise DataError(f"{what}: expected shape (length,) or (channels, length), got {a.shape}")
    if a.size == 0:
        raise DataError(f"{what}: no samples (shape {a.shape})")
    if a.shape[1] < MIN_LENGTH:
        raise DataError(f"{what}: {a.shape[1]} time step(s), need at least {MIN_LENGTH} (shape is (channels, length))")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        c, t = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{what}: {int(bad.sum())} missing/non-finite value(s) (NaN or inf), first at channel {c}, step {t}; "
            "fill or trim them before encoding"
        )
    return a


def read_series_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror or e})") from None
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def npy_header(data: bytes, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a ``.npy`` file's bytes declare, read from its header alone (nothing loaded,
    nothing unpickled), checked: a plain numeric array (no Python objects, no records), format 1.0 or 2.0,
    with as many data bytes as the header declares.  Raises :class:`DataError` starting with ``what``."""
    if not data.startswith(NPY_MAGIC):
        raise DataError(f"{what}: not a .npy file (no NUMPY magic number)")
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}; save it with numpy.save")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(fp)
    except (ValueError, EOFError, OSError) as e:
        raise DataError(f"{what}: not a readable .npy header ({' '.join(str(e).split())[:200]})") from None
    if dtype.hasobject:
        raise DataError(f"{what}: the .npy holds Python objects (a pickle); refusing to unpickle it -- "
                        "save a plain numeric array instead")
    if dtype.names is not None or dtype.kind not in "biuf":
        raise DataError(f"{what}: a .npy of {dtype} values: save a plain numeric (integer or float) array")
    if any(int(d) < 0 for d in shape):  # numpy writes none; counted, -1 x ... would make a negative size
        raise DataError(f"{what}: a .npy header declaring a negative dimension (shape {shape}): damaged or crafted")
    n = math.prod(int(d) for d in shape)
    if len(data) - fp.tell() < n * dtype.itemsize:
        raise DataError(f"{what}: truncated .npy file: its header declares shape {shape} ({n * dtype.itemsize} "
                        f"bytes), it holds {len(data) - fp.tell()}")
    return tuple(int(d) for d in shape), dtype


#: how a zip archive (an .npz) starts, as numpy tells one: a local file header, or an empty archive's end record;
#: not a bare ``PK`` (text can start so, and numpy would take it for a pickle)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def load_npy(path: Path, data: bytes | Path) -> np.ndarray:
    """A ``.npy`` array from its bytes, or from its file (``data`` a path: memory-mapped, so its header's shape can
    be checked before any of its values is read); never unpickled.  :class:`DataError` (one line naming ``path``)."""
    try:
        if isinstance(data, Path):
            with data.open("rb") as f:
                head = f.read(len(NPY_MAGIC))
        else:
            head = data[: len(NPY_MAGIC)]
    except OSError as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if head and not head.startswith((NPY_MAGIC, *_ZIP_MAGIC)):  # a zip: an .npz, refused below
        raise DataError(f"{path}: not a .npy file (no NUMPY magic number)")
    try:
        src = data if isinstance(data, Path) else io.BytesIO(data)
        arr = np.load(src, mmap_mode="r" if isinstance(data, Path) else None, allow_pickle=False)
    except ValueError as e:  # memory-mapped, numpy names the objects from the header ("Python objects in dtype")
        if "pickle" in str(e).lower() or "Python objects" in str(e):
            raise DataError(
                f"{path}: the .npy holds Python objects (a pickle); refusing to unpickle it -- "
                "save a plain numeric array instead"
            ) from None
        raise DataError(f"{path}: not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: truncated or corrupt .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        getattr(arr, "close", lambda: None)()  # an .npz archive opened on the file
        raise DataError(f"{path}: expected one array, found {type(arr).__name__}")
    if arr.dtype.names is not None:
        raise DataError(f"{path}: structured (record) arrays are not supported; save a plain numeric array")
    return arr


def _delimiter(line: str) -> str | None:
    for d in (",", ";", "\t"):
        if d in line:
            return d
    return None  # whitespace


def _load_text(path: Path, data: bytes) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: neither a .npy file nor UTF-8 text (CSV)") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise DataError(f"{path}: no rows")
    delim = _delimiter(lines[0][1] if len(lines) == 1 else lines[1][1])

    def cells(ln: str) -> list[str]:
        if delim is None:
            return ln.split()
        return [c.strip() for c in next(csv.reader([ln], delimiter=delim))]

    def floats(row: list[str]) -> list[float] | None:
        try:
            return [float(c) for c in row]
        except ValueError:
            return None

    first = cells(lines[0][1])
    start = 0 if floats(first) is not None else 1  # one header row of channel names is allowed
    rows: list[list[float]] = []
    width = None
    for lineno, ln in lines[start:]:
        row = cells(ln)
        vals = floats(row)
        if vals is None:
            bad = next(c for c in row if floats([c]) is None)
            raise DataError(f"{path}: line {lineno}: {bad!r} is not a number" if bad else f"{path}: line {lineno}: empty cell")
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise DataError(f"{path}: line {lineno} has {len(vals)} columns, the first data row {width}")
        rows.append(vals)
        if width and len(rows) * width > MAX_ELEMENTS:
            raise DataError(f"{path}: more than {MAX_ELEMENTS} values; too large for one series")
    if not rows:
        raise DataError(f"{path}: a header but no data rows")
    return np.asarray(rows, dtype=np.float64).T  # rows are time steps -> (channels, length)


def load_series(path: str | Path) -> np.ndarray:
    """Read one series file (``.npy`` or CSV) to a float64 ``(channels, length)`` array.

    Raises :class:`DataError` naming the file when it is missing, empty,
    unreadable, a pickle, non-numeric, has NaN/inf values or too few steps.
    """
    p = Path(path)
    data = read_series_bytes(p)
    if data.startswith(NPY_MAGIC) or p.suffix.lower() == ".npy":
        arr = load_npy(p, data)
    else:
        arr = _load_text(p, data)
    if arr.size > MAX_ELEMENTS:
        raise DataError(f"{p}: {arr.size} values; too large for one series (max {MAX_ELEMENTS})")
    return as_series(arr, str(p))


# ----------------------------------------------------------------------------- preprocessing

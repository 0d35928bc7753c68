"""Encoders for anything else: a Python callable, or precomputed vectors.

* ``callable:<module>:<function>`` -- ``function(items: list) -> array (n, d)``.
  The modality is taken from the manifest field it is bound to.  The identity
  is the function's qualified name plus a hash of its module's source file, so
  editing the function invalidates cached features.  Set a ``dim`` attribute on
  the function to avoid one probe call, and ``input_kind`` (``"file"``,
  ``"text"`` or ``"key"``) if its items are not file paths; ``reads_arrays = True`` if its file items may
  be ``.npy`` arrays (then the service takes ``.npy`` uploads for it).
* ``vectors:<path>`` -- precomputed features keyed by record id (or by the key
  given in the manifest field): a Parquet file with an ``id`` column and a
  ``vector`` list column (or one numeric column per dimension), an ``.npz``
  with arrays ``ids`` and ``vectors``, or an ``.npy`` matrix with a sidecar
  ``<path>.ids.txt`` (one id per line, in row order).  Nothing is unpickled.
  A relative path is relative to the working directory; a saved space stores it
  relative to the space folder when the file lies inside it, else absolute
  (:func:`spec_for_folder`, :func:`spec_in_folder`).  The identity is the file's
  content hash, not its path, so a space and its vectors can move.  An item may also be the features
  themselves, a numeric array (or tensor, or list of numbers) of the file's width (a query for a record the file
  does not hold: its features computed as the file's were); it is checked by :func:`feature_vector` and cached
  by its content.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EncoderError
from .base import Encoder, sha256_file
from .vectors_files import read_vectors_file

log = logging.getLogger(__name__)
_VECTORS = "vectors:"


class CallableEncoder(Encoder):
    modality = "custom"

    def __init__(self, target: str):
        if target.count(":") != 1:
            raise EncoderError(f"callable encoder spec must be 'callable:<module>:<function>', got {target!r}")
        mod_name, fn_name = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise EncoderError(f"callable:{target}: cannot import module {mod_name!r} ({e})") from None
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise EncoderError(f"callable:{target}: {mod_name}.{fn_name} is not a callable")
        self.fn = fn
        self.spec = f"callable:{target}"
        self.input_kind = getattr(fn, "input_kind", "file")
        self.reads_arrays = bool(getattr(fn, "reads_arrays", False))
        self.batch_size = int(getattr(fn, "batch_size", 32))
        try:
            src = inspect.getsource(mod)
        except (OSError, TypeError):
            src = repr(getattr(mod, "__file__", mod_name))
        self._identity = (
            f"{self.spec}|src={hashlib.sha256(src.encode()).hexdigest()[:16]}"
            f"|version={getattr(fn, 'version', '0')}"
        )
        self.dim = int(getattr(fn, "dim", 0))

    @property
    def identity(self) -> str:
        return self._identity

    def load(self, item: Any) -> Any:
        if self.input_kind == "file" and isinstance(item, (str, Path)):  # in memory (a video's frame): as is
            p = Path(item)
            if not p.is_file():
                raise DataError(f"{p}: file does not exist")
        from PIL import Image

        if isinstance(item, Image.Image):  # the upright picture its cache key names (encoders.base.content_key)
            from ..data.media import upright

            return upright(item)
        return item

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        try:
            out = self.fn(list(batch))
        except DataError:
            raise
        except Exception as e:
            raise EncoderError(f"{self.spec} failed on a batch of {len(batch)}: {type(e).__name__}: {e}") from e
        arr = np.asarray(out, dtype=np.float32)
        if self.dim == 0 and arr.ndim == 2:
            self.dim = arr.shape[1]
        return arr

    def encode(self, items, batch_size=None):
        if self.dim == 0 and len(items):
            self.encode_loaded([self.load(items[0])])  # probe the width
        return super().encode(items, batch_size)


class VectorsEncoder(Encoder):
    """Precomputed features looked up by key (the record id by default)."""

    modality = "custom"
    input_kind = "key"
    batch_size = 4096
    reads_arrays = True  # an item may be a feature vector itself (an array), not only a key

    def __init__(self, path: str):
        self.path = Path(path)
        self.spec = f"vectors:{path}"
        ids, vecs = self._read(self.path)
        if len(ids) != len(vecs):
            raise DataError(f"{self.path}: {len(ids)} ids but {len(vecs)} vectors")
        if len(set(ids)) != len(ids):
            seen, dups = set(), []
            for i in ids:
                if i in seen:
                    dups.append(i)
                seen.add(i)
            raise DataError(f"{self.path}: duplicate ids, e.g. {dups[:3]}")
        if vecs.ndim != 2:
            raise DataError(f"{self.path}: vectors must be a 2-D matrix, got shape {vecs.shape}")
        if not np.isfinite(vecs).all():
            bad = [ids[i] for i in np.where(~np.isfinite(vecs).all(1))[0][:3]]
            raise DataError(f"{self.path}: non-finite values for ids {bad}")
        self.index = {k: i for i, k in enumerate(ids)}
        self.vectors = vecs.astype(np.float32)
        self.dim = vecs.shape[1]
        self._identity = f"vectors|sha256={sha256_file(self.path)[:16]}"  # the content, wherever it lies

    @staticmethod
    def _read(path: Path) -> tuple[list[str], np.ndarray]:
        return read_vectors_file(path)

    @property
    def identity(self) -> str:
        return self._identity

    def matches_identity(self, recorded: str) -> bool:
        # spaces saved before the identity dropped the path recorded "vectors:<path>|sha256=..."
        content = self._identity.rsplit("|", 1)[-1]
        return recorded == self._identity or (recorded.startswith(_VECTORS) and recorded.endswith("|" + content))

    def content_key(self, item: Any) -> str:
        x = _given_features(item)
        if x is not None:  # features given: keyed by their bytes, shape and dtype
            return super().content_key(x)
        return "k:" + str(item)

    def load(self, item: Any) -> int | np.ndarray:
        x = _given_features(item)
        if x is not None:
            return feature_vector(x, self.dim)
        key = str(item)
        if key not in self.index:
            raise DataError(f"no vector for id {key!r} in {self.path}")
        return self.index[key]

    def encode_loaded(self, batch: Sequence[int | np.ndarray]) -> np.ndarray:
        if all(isinstance(b, (int, np.integer)) for b in batch):
            return self.vectors[np.asarray(batch, dtype=np.int64)]
        return np.stack([self.vectors[b] if isinstance(b, (int, np.integer)) else b for b in batch])


def _given_features(item: Any) -> np.ndarray | None:
    """An item that is features, not a key, as an array: an array, a torch tensor, or a list or tuple of numbers
    (None for anything else: a key)."""
    if isinstance(item, np.ndarray):
        return item
    if hasattr(item, "detach") and hasattr(item, "cpu") and hasattr(item, "numpy"):  # a torch tensor
        return item.detach().cpu().numpy()
    if isinstance(item, (list, tuple)):
        try:
            x = np.asarray(item)
        except (ValueError, TypeError):  # ragged
            return None
        return x if x.dtype.kind in "biuf" and x.size else None
    return None


def feature_vector(x: np.ndarray, dim: int, what: str = "a feature vector") -> np.ndarray:
    """Features given in place of a ``vectors:`` key, checked: real numbers, one vector of ``dim`` values (shape
    ``(dim,)`` or ``(1, dim)``), all finite.  Returns it as float32 ``(dim,)``; :class:`DataError` (one line,
    starting with ``what``) otherwise."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{what} of {x.dtype} values: give real numbers")
    v = x[0] if x.ndim == 2 and x.shape[0] == 1 else x
    if v.shape != (dim,):
        raise DataError(f"{what} of shape {x.shape}: this modality's features have {dim} values, give shape ({dim},)")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise DataError(f"{what} holds NaN or infinite values")
    return v


def npy_features(data: bytes | Path, dim: int, what: str, *, several: bool = False) -> np.ndarray:
    """A ``.npy`` file's bytes (an upload) or the file (one a command line names: memory-mapped, a wrong shape is
    refused by its header) holding a ``vectors:`` modality's features,
    loaded (never unpickled, :func:`~anybind.data.series.load_npy`) and checked by :func:`feature_vector`: one
    vector of ``dim`` finite real numbers, float32 ``(dim,)``; with ``several``, a 2-D array is one vector a row,
    each checked, float32 ``(rows, dim)``.  :class:`DataError` (one line, starting with ``what``) otherwise."""
    from ..data.series import load_npy

    x = load_npy(what, data)
    if not (several and x.ndim == 2):
        return feature_vector(x, dim, what + ": an array")
    if not len(x):
        raise DataError(f"{what}: an array of shape {x.shape}: no rows of features")
    return np.stack([feature_vector(row, dim, f"{what}: an array row {i}") for i, row in enumerate(x)])


def spec_for_folder(spec: str, folder: str | Path) -> str:
    """A spec as an artefact saved in ``folder`` stores it.

    A ``vectors:`` path (relative ones are relative to the working directory) becomes
    relative to ``folder`` when the file lies inside it, so the folder can move with
    its vectors, and absolute otherwise, so any working directory finds it.  Other
    specs are returned unchanged.
    """
    if not spec.startswith(_VECTORS):
        return spec
    p = os.path.abspath(spec[len(_VECTORS) :])
    try:
        rel = os.path.relpath(p, os.path.abspath(folder))
    except ValueError:  # another drive
        return _VECTORS + p
    inside = rel != os.pardir and not rel.startswith(os.pardir + os.sep)
    return _VECTORS + (Path(rel).as_posix() if inside else p)


def spec_in_folder(spec: str, folder: str | Path) -> str:
    """The spec to use for one stored in an artefact saved in ``folder`` (inverse of :func:`spec_for_folder`).

    A relative ``vectors:`` path resolves against ``folder``.  A space saved by an
    older anybind stored it relative to the working directory of its fit: when only
    that file exists, it is used and a warning says to save the space again.
    """
    if not isinstance(spec, str) or not spec.startswith(_VECTORS) or os.path.isabs(spec[len(_VECTORS) :]):
        return spec
    rel = spec[len(_VECTORS) :]
    p = os.path.abspath(os.path.join(folder, rel))
    if not os.path.exists(p) and os.path.isfile(rel):
        log.warning("%s: vectors file %s is not in the folder; using %s from the working directory "
                    "(saved by an older anybind: save the space again to store the path correctly)",
                    folder, rel, os.path.abspath(rel))
        p = os.path.abspath(rel)
    return _VECTORS + p


def make_callable_encoder(name: str) -> Encoder:
    """Factory for ``callable:<module>:<function>``."""
    return CallableEncoder(name)


def make_vectors_encoder(name: str) -> Encoder:
    """Factory for ``vectors:<path>``."""
    return VectorsEncoder(name)

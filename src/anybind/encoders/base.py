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

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data.strings import is_blank
from ..data.media import IMAGE_DECODING
from ..errors import AnybindError, DataError, EncoderError
from .keys import content_key, current_key, file_digest, sha256_dir, sha256_file  # noqa: F401 -- re-exported

log = logging.getLogger(__name__)

#: guards the creation of an encoder's load lock (instances make theirs on first use, and again after unpickling)
_LOCK_GUARD = threading.Lock()

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
    #: whether the encoder's items may be numeric arrays: a file encoder's, ``.npy`` files or arrays (a time
    #: series, a plugin's sensor frames); a key encoder's (``vectors:``), the features themselves in place of a
    #: key.  What the service takes an uploaded ``.npy`` for (never a pickle; see :mod:`anybind.serve.sniff`)
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
        encoder's identity inside brackets; only tagged photos decode otherwise now), with one warning; and one whose
        spec wrote an ensemble part as a bare modality (``text:concat(text,text:e5-small)``), recorded as typed
        before the part was spelt as its default spec (:func:`anybind.encoders.spelling.bare_spelt`)."""
        ident = self.identity
        if ident == recorded:
            return True
        if "concat(" in getattr(self, "spec", ""):
            from .spelling import bare_spelt

            ident = bare_spelt(ident, self.spec)
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

    def check_output(self, arr: Any, n: int) -> np.ndarray:
        """``arr`` (what :meth:`encode_loaded` returned for ``n`` items) as a float32 ``(n, dim)`` array, or
        :class:`~anybind.errors.EncoderError` in one line naming the encoder when it has another shape or a
        non-finite value.  Every encode path checks a forward pass with it; so may a caller of
        :meth:`encode_loaded` (a benchmark timing bare forward passes)."""
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

"""Encoding batches that adapt to memory: an out-of-memory forward is retried in halves.

:func:`encode_adaptive` is what every encoding path calls (the feature cache, the Ray encoder actors):
a batch whose forward runs out of memory (``torch.cuda.OutOfMemoryError``, the ``RuntimeError`` "out of
memory" forms of MPS and of the CPU allocator, Python's ``MemoryError``) is split in two halves, each
encoded on its own (and split again if needed); the smaller size is remembered for the encoder, so the
next batches start there.  Every item is encoded exactly once and the rows keep the items' order; one
warning is logged per halving.  A single item that does not fit is an :class:`~anybind.errors.EncoderError`
in one line.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import EncoderError

log = logging.getLogger(__name__)

_OOM_TEXT = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")
#: the batch size each encoder was last seen to fit (after a halving)
_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_oom(e: BaseException) -> bool:
    """Whether an exception says the device (or the host) ran out of memory."""
    if isinstance(e, MemoryError):
        return True
    if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
        return True
    return isinstance(e, RuntimeError) and any(t in str(e).lower() for t in _OOM_TEXT)


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            mps.empty_cache()
    except Exception:  # noqa: BLE001 - freeing is best effort
        pass


def fitted_batch(encoder: Any, batch_size: int) -> int:
    """``batch_size``, or the smaller size an earlier halving found for this encoder."""
    try:
        return max(1, min(batch_size, _FITS.get(encoder, batch_size)))
    except TypeError:  # an encoder that cannot be weakly referenced
        return max(1, batch_size)


def _remember(encoder: Any, n: int) -> None:
    try:
        _FITS[encoder] = n
    except TypeError:
        pass


def encode_adaptive(encoder: Any, loaded: Sequence[Any], batch_size: int | None = None,
                    names: Sequence[str] | None = None) -> np.ndarray:
    """``encoder.encode_loaded`` over ``loaded`` in batches of at most ``batch_size`` (default: all of
    them), halving a batch that runs out of memory (see the module docstring).  Returns the checked
    float32 ``(len(loaded), dim)`` rows in order.  ``names``: how to name each item in an error."""
    items = list(loaded)
    if not items:
        return encoder.check_output(encoder.encode_loaded([]), 0)
    size = fitted_batch(encoder, batch_size or len(items))
    out: list[np.ndarray] = []
    start = 0
    while start < len(items):
        n = min(size, len(items) - start)
        part = items[start : start + n]
        try:
            X = encoder.check_output(encoder.encode_loaded(part), n)
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are handled here
            if not is_oom(e):
                raise
            del e
            _free()
            if n == 1:
                what = names[start] if names is not None else "an item"
                raise EncoderError(
                    f"{encoder.spec}: {what} does not fit in memory even alone (a batch of 1 ran out of "
                    "memory): use a smaller input, another --device or --precision bf16/fp16"
                ) from None
            size = max(1, n // 2)
            _remember(encoder, size)
            log.warning("%s: out of memory on a batch of %d: retrying in batches of %d", encoder.spec, n, size)
            continue
        out.append(X)
        start += n
    return np.concatenate(out, axis=0)

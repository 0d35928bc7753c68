"""CPU numerics: torch's thread count for a block (:func:`torch_threads`), and flushing denormals to zero without
numpy's "smallest subnormal" warning.

Adam's second moments underflow to denormals, which are ~2x slower on CPUs, so every trainer flushes them
while it trains (``torch.set_flush_denormal``) and restores the default after.  numpy computes its float
limits lazily (the first ``np.finfo(...)``, or the first ``np.unique``, which imports ``numpy.ma``);
computed while denormals are flushed, they come out with a smallest subnormal of zero and numpy warns "The
value of the smallest subnormal for <class 'numpy.float32'> type is zero" -- noise on the user's terminal,
and a wrong value cached for the process.  :func:`flush_denormals` computes them first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

_LIMITS_READY = False


def _compute_float_limits() -> None:
    global _LIMITS_READY
    if not _LIMITS_READY:
        for t in (np.float16, np.float32, np.float64, np.longdouble):
            np.finfo(t)
        import numpy.ma  # noqa: F401  (its import reads the limits too)

        _LIMITS_READY = True


def flush_denormals(on: bool = True) -> None:
    """Flush denormals to zero on CPU (``on``) or restore the default; numpy's float limits computed first."""
    if on:
        _compute_float_limits()
    torch.set_flush_denormal(on)


# the blocks open now, in the order they began, and the count from before the first: torch's count is process-wide
# (what every thread started later runs on), and the service encodes (fracast) in several worker threads at once
_THREADS_LOCK = threading.Lock()
_OPEN: list[list[int]] = []
_BEFORE: list[int] = []


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (at least one) for the block; the previous count comes back after,
    even on error.  The one place that sets it for a block: the trainers (:func:`anybind.loop.training_threads`, which
    also flushes denormals) and the encoders that run fastest on few threads at inference (fracast).

    Blocks may nest or overlap in several threads: one that ends while others run sets the latest-begun open one's
    count; the last to end gives back the count from before the first (each restoring what it had read would leave
    the count of a block that ended, when two threads' blocks overlap)."""
    mine = [max(1, int(threads))]  # a list: its identity is this block's
    with _THREADS_LOCK:
        if not _OPEN:
            _BEFORE[:] = [torch.get_num_threads()]
        _OPEN.append(mine)
        torch.set_num_threads(mine[0])
    try:
        yield
    finally:
        with _THREADS_LOCK:
            del _OPEN[next(i for i, o in enumerate(_OPEN) if o is mine)]  # by identity: equal counts are others'
            torch.set_num_threads(_OPEN[-1][0] if _OPEN else _BEFORE[0])

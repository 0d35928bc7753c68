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


# torch's count is per thread (OpenMP's and MKL's, set by the thread that calls torch.set_num_threads) and also
# process-wide for threads started later (each takes the last count set when it first runs torch).  The service
# encodes in several worker threads at once (the image and the text encoder's leaders, fracast), so blocks overlap
# across threads: how many are open, the count from before the first, and each thread's own open counts.
_THREADS_LOCK = threading.Lock()
_OPEN = [0]
_BEFORE: list[int] = []
_MINE = threading.local()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (at least one) for the block; the previous count comes back after,
    even on error.  The one place that sets it for a block: the trainers (:func:`anybind.loop.training_threads`, which
    also flushes denormals) and the encoders that run fastest on few threads at inference (fracast).

    Blocks may nest in one thread and overlap in several: a block that ends gives its thread the count of that
    thread's enclosing block, or, outermost, the count from before the first block of all opened (each restoring what
    it had read would leave a thread started inside another thread's block, which reads that block's count, on it
    for good; and giving the ending thread another thread's open count would leave it on that count)."""
    mine = max(1, int(threads))
    stack = _MINE.__dict__.setdefault("open", [])
    with _THREADS_LOCK:
        now = torch.get_num_threads()  # read first: a thread's first read takes the process-wide count, once
        if not _OPEN[0]:
            _BEFORE[:] = [now]
        _OPEN[0] += 1
        stack.append(mine)
        torch.set_num_threads(mine)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            stack.pop()
            _OPEN[0] -= 1
            torch.set_num_threads(stack[-1] if stack else _BEFORE[0])

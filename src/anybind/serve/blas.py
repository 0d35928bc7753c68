"""numpy's BLAS threads while services are open: one (:func:`one_blas_thread`), so that requests side by side in
worker threads do not spin against each other."""

from __future__ import annotations

import threading
from typing import Any

_BLAS_LOCK = threading.Lock()
_BLAS: dict[str, Any] = {"open": 0, "limit": None}  # services open, and the limit the first of them set


def one_blas_thread(take: bool = True) -> None:
    """numpy's BLAS (OpenBLAS) on one thread while any service is open (``take``: one more open; else one fewer,
    the last giving the process its setting back).  Requests run side by side in worker threads; a lone query's
    product on several BLAS threads made them spin against each other (a 2,022 x 256 product: 0.1 ms of CPU on one
    thread, 8 ms on two, 130 ms with 64 requests at once, at load ~80).  torch's threads (the encoders) are not
    BLAS threads here and are left as they are."""
    from threadpoolctl import threadpool_limits

    with _BLAS_LOCK:
        if take:
            _BLAS["open"] += 1
            if _BLAS["open"] == 1:
                _BLAS["limit"] = threadpool_limits(1, user_api="blas")
        else:
            _BLAS["open"] -= 1
            if _BLAS["open"] == 0:
                _BLAS.pop("limit").restore_original_limits()
                _BLAS["limit"] = None

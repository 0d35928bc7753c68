"""Bootstrap intervals shared by the bench tasks (a module of its own, so that tasks import it without importing
each other)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap(hits: np.ndarray, others: Sequence[np.ndarray] = (), n: int = 1000, seed: int = 0):
    """Mean of ``hits`` with a percentile 95 % interval; with ``others`` (same queries), also the paired
    interval of ``hits - max over others`` of the means (``(lo, hi)`` or None)."""
    hits = np.asarray(hits, np.float64)
    if not len(hits):
        return float("nan"), (float("nan"), float("nan")), None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(n, len(hits)))
    means = hits[idx].mean(1)
    ci = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    diff = None
    if others:
        best = np.max(np.stack([np.asarray(o, np.float64)[idx].mean(1) for o in others]), 0)
        d = means - best
        diff = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    return float(hits.mean()), ci, diff

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


def paired_vs_first(keys: Sequence[str], per_item: dict, seed: int = 0, n: int = 1000) -> dict:
    """Each of ``keys[1:]`` minus ``keys[0]`` per column of ``per_item`` (``{key: {column: 0/1 per item}}``, the
    same items in the same order): ``{key: {column: {"diff", "ci", "wins", "losses"}}}``, the mean difference, its
    paired 95 % bootstrap interval (one resample of items for both rows) and how many items only that row / only
    the first gets right."""
    out: dict = {}
    for k in keys[1:]:
        out[k] = {}
        for c, h0 in per_item[keys[0]].items():
            d = np.asarray(per_item[k][c], np.float64) - np.asarray(h0, np.float64)
            mean, ci, _ = bootstrap(d, (), n, seed)
            out[k][c] = {"diff": mean, "ci": list(ci), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    return out

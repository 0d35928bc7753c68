"""Helpers shared by the search benches: process RSS sampling, clustered test vectors, best-of timing, recall, disk use."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..index.tuning import per_query_recall


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def rss() -> int:
    """Resident set size of this process, bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Samples the process RSS every few ms while active: ``peak`` and ``extra`` (peak - start), in GiB."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss()
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())

    @property
    def peak_gb(self) -> float:
        return self.peak / 2**30

    @property
    def extra_gb(self) -> float:
        return (self.peak - self.start) / 2**30


def clustered_vectors(
    n: int,
    d: int,
    clusters: int,
    rng: np.random.Generator,
    centers: np.ndarray | None = None,
    noise: float = 1.0,
    chunk: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``clusters`` Gaussian centres (isotropic noise of per-dim std ``noise``)."""
    C = centers if centers is not None else rng.standard_normal((clusters, d), dtype=np.float32)
    X = np.empty((n, d), np.float32)
    s = 0
    for x in clustered_batches(n, C, rng, noise=noise, chunk=chunk):
        X[s : s + len(x)] = x
        s += len(x)
    return X, C


def clustered_batches(n: int, centers: np.ndarray, rng: np.random.Generator, noise: float = 1.0,
                      chunk: int = 100_000) -> Iterator[np.ndarray]:
    """:func:`clustered_vectors`' rows around ``centers``, ``chunk`` at a time (the same rows for the same ``rng``
    state): a set larger than memory is generated batch by batch."""
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centers[rng.integers(0, len(centers), m)] + noise * rng.standard_normal((m, centers.shape[1]),
                                                                                     dtype=np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k of ``found`` ids against ``truth`` (each query's exact top-k ids)."""
    return float(np.mean(per_query_recall(found, truth)))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

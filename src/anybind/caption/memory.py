"""DeCap-style projection: a non-text embedding moved onto a memory of training text embeddings before decoding.

Li et al., "DeCap: Decoding CLIP Latents for Zero-shot Captioning via Text-only Training" (ICLR 2023): a mapper
trained on text embeddings only has never seen an image embedding, which sits away from the text ones (the
modality gap).  At inference the query ``x`` is replaced by a softmax-weighted sum of the memory ``M`` of the
training captions' text embeddings::

    w = softmax(M x / T)        x' = normalise(w M)

so the mapper decodes a point of the text region it was trained on.  ``T`` (the temperature) is chosen on the
val split (:func:`choose_projection`): small ``T`` is close to retrieving the nearest caption, large ``T``
averages many.  ``projection="none"`` decodes the embedding as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from .lm import CaptionError
from .retrieval import caption_key

log = logging.getLogger(__name__)

PROJECTIONS = ("none", "memory")
TEMPERATURE_GRID = (0.005, 0.01, 0.02, 0.05, 0.1)


def check_projection(projection: str, memory: np.ndarray | None, temperature: float) -> str:
    """``projection`` if it can be used, else a one-line :class:`CaptionError`."""
    if projection not in PROJECTIONS:
        raise CaptionError(f"unknown projection {projection!r}: use one of {', '.join(PROJECTIONS)}")
    if projection == "memory":
        if memory is None or not len(memory):
            raise CaptionError("projection 'memory' needs a memory of training text embeddings, and this captioner "
                               "holds none (train it again with this anybind)")
        if not np.isfinite(temperature) or temperature <= 0:
            raise CaptionError(f"memory temperature {temperature!r}: give a number > 0")
    return projection


def memory_rows(captions: Sequence[str], max_size: int, seed: int = 0) -> np.ndarray:
    """The rows of the captions the memory keeps: one per distinct caption (the first seen; see
    :func:`anybind.caption.retrieval.caption_key`), at most ``max_size`` of them (a seeded sample beyond it)."""
    seen: dict[str, int] = {}
    for i, c in enumerate(captions):
        seen.setdefault(caption_key(c), i)
    rows = np.fromiter(seen.values(), dtype=np.int64, count=len(seen))
    if len(rows) > max_size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_size, replace=False))
    return rows


def build_memory(X: np.ndarray, captions: Sequence[str], max_size: int, seed: int = 0) -> np.ndarray:
    """The memory: one unit text embedding per distinct caption (the rows of :func:`memory_rows`)."""
    M = np.asarray(X, dtype=np.float32)[memory_rows(captions, max_size, seed)]
    return M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)


def project(X: np.ndarray, memory: np.ndarray, temperature: float, chunk: int = 1024) -> np.ndarray:
    """``normalise(softmax(X M^T / T) M)`` row by row (in chunks: at most ``chunk`` x len(M) scores at once)."""
    X = np.asarray(X, dtype=np.float32)
    M = np.asarray(memory, dtype=np.float32)
    out = np.empty((len(X), M.shape[1]), dtype=np.float32)
    for i in range(0, len(X), chunk):
        S = (X[i : i + chunk] @ M.T) / np.float32(temperature)
        S -= S.max(axis=1, keepdims=True)
        W = np.exp(S)
        W /= W.sum(axis=1, keepdims=True)
        out[i : i + chunk] = W @ M
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def choose_projection(score: Callable[[np.ndarray], float], Xv: np.ndarray, memory: np.ndarray, *,
                      projection: str | None = None, temperature: float | None = None,
                      grid: Sequence[float] = TEMPERATURE_GRID) -> tuple[str, float, dict[str, float]]:
    """Pick the projection (and its temperature) with the lowest ``score`` (val caption NLL) of the val
    embeddings ``Xv`` as decoded.  ``projection`` / ``temperature`` given: only those are tried.

    Returns ``(projection, temperature, scores)``; ``scores`` keys: ``"none"`` and ``"memory@T"``.
    """
    temps = [float(temperature)] if temperature is not None else [float(t) for t in grid]
    if not temps or any(not np.isfinite(t) or t <= 0 for t in temps):
        raise ValueError(f"memory temperatures must be > 0, got {temps}")
    kinds = [projection] if projection is not None else list(PROJECTIONS)
    for k in kinds:
        check_projection(k, memory, temps[0])
    scores: dict[str, float] = {}
    if "none" in kinds:
        scores["none"] = float(score(Xv))
    if "memory" in kinds:
        for t in temps:
            scores[f"memory@{t:g}"] = float(score(project(Xv, memory, t)))
    # a NaN (a diverged decode) counts as +inf, never the best; a tie keeps the embedding as it is
    key = {k: (v if math.isfinite(v) else math.inf) for k, v in scores.items()}
    best = min(scores, key=lambda k: (key[k], k != "none"))
    mem = [k for k in scores if k != "none"]
    # the temperature kept is the best one tried, so that projection="memory" at decoding time uses it
    t_best = float(min(mem, key=lambda k: key[k]).split("@", 1)[1]) if mem else temps[0]
    return ("none" if best == "none" else "memory"), t_best, scores

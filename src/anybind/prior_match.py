"""Prior matching: per-class logit biases that make a classifier's mean softmax prediction on unlabelled items
equal a class prior (the fixed point and its references are in :mod:`anybind.zeroshot`'s docstring).  The
arithmetic of :class:`~anybind.zeroshot.ZeroShotClassifier`'s ``calibrate``, kept apart from the classifier
(its prompts, cache, save and load) so that each can be read alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

#: the softmax temperature of the prior matching (logits = temperature * cosine): chosen on Fashion-MNIST train
#: images 0-999 (labelled, a selection set) with the biases fitted on train images 1000-1999 (5, 10, 20, 30, 50,
#: 100, 200, 1000 tried; 10 best or tied best with both prompt sets the bench uses), never on a test split
DEFAULT_TEMPERATURE = 10.0


def softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(1, keepdims=True)


def check_prior(prior: "str | Mapping[str, float] | Sequence[float]", classes: Sequence[str]) -> np.ndarray:
    """The target class distribution: ``"balanced"`` (uniform), or a share per class (a mapping from every class,
    or a sequence in the classes' order; positive, normalised to sum 1); refused in one line otherwise."""
    k = len(classes)
    if isinstance(prior, str):
        if prior != "balanced":
            raise DataError(f"prior {prior!r}: give 'balanced' or a share per class")
        return np.full(k, 1.0 / k)
    if isinstance(prior, Mapping):
        missing = [c for c in classes if c not in prior]
        extra = [c for c in prior if c not in set(classes)]
        if missing or extra:
            raise DataError(f"prior: {'no share for ' + repr(missing[0]) if missing else 'unknown class ' + repr(extra[0])}"
                            f"; give one share for each of the {k} classes")
        shares = [prior[c] for c in classes]
    else:
        shares = list(np.ravel(np.asarray(prior, dtype=object)))
    bad = [v for v in shares if isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float, np.number))]
    if bad:
        raise DataError(f"prior: {bad[0]!r} is not a number; give one positive share per class")
    p = np.array(shares, dtype=np.float64)
    if not isinstance(prior, Mapping):
        if len(p) != k:
            raise DataError(f"prior has {len(p)} shares for {k} classes")
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise DataError("prior: every class's share must be a positive finite number")
    return p / p.sum()


def check_temperature(temperature: Any) -> float:
    """A positive finite number (Python or numpy, not a bool) as a float; refused in one line otherwise."""
    if (isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating))
            or not np.isfinite(temperature) or temperature <= 0):
        raise DataError(f"temperature is {temperature!r}, expected a positive number")
    return float(temperature)


def mean_softmax(S: np.ndarray, temperature: float, b: np.ndarray, block_floats: int = 1 << 18) -> np.ndarray:
    """``mean_i softmax(temperature * S_i + b)``, a block of rows at a time (at most ``block_floats`` float64s
    held beside ``S``: many items times many classes never makes full-size copies)."""
    rows = max(1, block_floats // max(1, S.shape[1]))
    total = np.zeros(S.shape[1])
    for i in range(0, len(S), rows):
        total += softmax(temperature * np.asarray(S[i:i + rows], np.float64) + b).sum(0)
    return total / len(S)


def fit_bias(scores: np.ndarray, prior: np.ndarray, temperature: float = DEFAULT_TEMPERATURE, *,
             max_iter: int = 1000, tol: float = 1e-6, block_floats: int = 1 << 18) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-class logit biases ``b`` (mean 0) with ``mean_i softmax(temperature * scores_i + b) == prior`` (the
    module docstring's fixed point), and how the fit went (iterations, converged, the largest gap between the mean
    prediction and the prior).  ``scores`` are read a block of rows at a time (:func:`mean_softmax`)."""
    S = np.asarray(scores)
    if S.ndim != 2 or S.shape[1] != len(prior) or S.dtype.kind not in "fiu":
        raise DataError(f"scores of shape {S.shape} ({S.dtype}) for {len(prior)} classes")
    if not np.all(np.isfinite(S)):
        raise DataError("the unlabelled items' class scores hold NaN or infinity (a NaN embedding?)")
    temperature = check_temperature(temperature)
    logp = np.log(prior)
    b = np.zeros(S.shape[1])
    it, gap = 0, np.inf
    for it in range(1, max_iter + 1):
        step = logp - np.log(np.maximum(mean_softmax(S, temperature, b, block_floats), 1e-300))
        b += step
        gap = float(np.abs(step).max())
        if gap < tol:
            break
    b -= b.mean()
    mass = mean_softmax(S, temperature, b, block_floats)
    info = {"iterations": it, "converged": bool(gap < tol), "max_prior_gap": float(np.abs(mass - prior).max())}
    if not info["converged"]:
        log.warning("class prior matching stopped after %d iterations %.2g from the prior (a class no item is near?)",
                    it, info["max_prior_gap"])
    return b, info

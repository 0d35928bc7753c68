"""Calibrated match probabilities: what a score means, as ``P(match)``.

A space's scores (cosine, or Symile's MIP: :mod:`anybind.scoring`) rank well but mean nothing on
their own: "a barking dog" scores ~0.58 against texts and ~0.38 against images.  A
:class:`PairCalibrator` maps the scores of one modality pair to the probability that the two items
belong together, fitted on positive pairs (a record's own items, or items with identical content)
against negative pairs (other records' items) of the val split (:mod:`anybind.calibration`):

* ``"platt"`` (default): ``p = sigmoid(a * score + b)`` -- temperature (``1/a``) plus a bias, fitted by
  weighted logistic regression;
* ``"isotonic"``: a monotone step function (pool-adjacent-violators), with linear interpolation.

**The prior.**  Negatives outnumber positives ``n - 1`` to 1, so a fit on raw counts would answer
"P(match) when one pair in n matches".  Positives and negatives are weighted to equal total
weight instead: the stored probability is ``P(match)`` **at a prior of 0.5** (a pair as likely to
match as not).  ``prior=`` re-states it for another base rate (Bayes: the odds times
``prior / (1 - prior)``), e.g. ``1 / gallery size`` for "is this hit the one partner".

The calibration is not part of the space identity (it does not change an embedding, so indexes
and fusion models stay valid); it is saved beside the space as ``calibration.json``, which names
the identity of the space it was fitted for and a digest of its own content, both checked on
load (:func:`read_calibration`).  Pure numpy; the fitting on a manifest is in :mod:`anybind.calibration`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .artefact_meta import read_meta
from .errors import SpaceError

CALIBRATION_FILE = "calibration.json"
FORMAT = "anybind.calibration"
#: calibration.json's format_version (a file without one, written before it existed, reads as 1)
FORMAT_VERSION = 1
METHODS = ("platt", "isotonic")
PRIOR = 0.5
_EPS = 1e-6


def pair_key(a: str, b: str) -> str:
    """The key of an unordered modality pair (scores are symmetric: ``score(a, b) == score(b, a)``)."""
    return "|".join(sorted((a, b)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Weights giving positives and negatives equal total weight (each class sums to 0.5)."""
    y = np.asarray(labels, bool)
    w = np.zeros(len(y), np.float64)
    for cls in (True, False):
        n = int((y == cls).sum())
        if n:
            w[y == cls] = 0.5 / n
    return w


def fit_platt(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
              l2: float = 1e-6, iters: int = 100) -> tuple[float, float]:
    """``(a, b)`` of ``P(y=1 | s) = sigmoid(a s + b)`` by weighted logistic regression (Newton's method)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.float64)
    w = np.full(len(s), 1.0 / max(len(s), 1)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu, sd = float((w * s).sum()), float(np.sqrt((w * (s - s.mean()) ** 2).sum())) or 1.0
    X = np.stack([(s - mu) / sd, np.ones_like(s)], 1)  # standardised: Newton converges from 0
    beta = np.zeros(2)
    for _ in range(iters):
        p = _sigmoid(X @ beta)
        g = X.T @ (w * (p - y)) + l2 * beta
        H = (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(H, g)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    a = beta[0] / sd
    return float(a), float(beta[1] - a * mu)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
                 knots: int = 200) -> tuple[list[float], list[float]]:
    """A non-decreasing step fit of ``P(y=1 | s)`` (pool adjacent violators), as at most ``knots`` points."""
    s = np.asarray(scores, np.float64)
    order = np.argsort(s, kind="stable")
    s, y = s[order], np.asarray(labels, np.float64)[order]
    w = np.ones(len(s)) if weights is None else np.asarray(weights, np.float64)[order]
    vals, wts, xs = [], [], []  # blocks: mean, weight, mean score
    for si, yi, wi in zip(s, y, w):
        vals.append(yi)
        wts.append(wi)
        xs.append(si * wi)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            v, ww, x = vals.pop(), wts.pop(), xs.pop()
            tot = wts[-1] + ww
            vals[-1] = (vals[-1] * wts[-1] + v * ww) / tot
            xs[-1] += x
            wts[-1] = tot
    x = np.asarray(xs) / np.maximum(np.asarray(wts), 1e-300)
    v = np.asarray(vals)
    if len(x) > knots:
        pick = np.unique(np.linspace(0, len(x) - 1, knots).round().astype(int))
        x, v = x[pick], v[pick]
    return [float(t) for t in x], [float(t) for t in v]


def precision_curve(scores: np.ndarray, labels: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """True and false positive rates of ``score >= t`` at ``points`` thresholds (score quantiles)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    ts = np.unique(np.quantile(s, np.linspace(0, 1, points)))
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tpr = 1 - np.searchsorted(pos, ts, side="left") / max(len(pos), 1)
    fpr = 1 - np.searchsorted(neg, ts, side="left") / max(len(neg), 1)
    return {"score": ts.tolist(), "tpr": tpr.tolist(), "fpr": fpr.tolist()}


def reprior(p: np.ndarray, prior: float) -> np.ndarray:
    """Probabilities at prior 0.5 re-stated at ``prior`` (odds times ``prior / (1 - prior)``)."""
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    if prior == PRIOR:
        return p
    p = np.clip(p, _EPS, 1 - _EPS)
    odds = p / (1 - p) * (prior / (1 - prior))
    return odds / (1 + odds)


@dataclass(frozen=True)
class PairCalibrator:
    """The calibration of one modality pair (see the module doc); ``curve``: the val split's TPR/FPR per
    score threshold, for :meth:`threshold_for_precision`."""

    method: str
    a: float = 1.0
    b: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    n_pos: int = 0
    n_neg: int = 0
    curve: Mapping[str, list[float]] = field(default_factory=dict)

    def probability(self, scores: np.ndarray, prior: float = PRIOR) -> np.ndarray:
        """``P(match)`` of each score, at ``prior`` (default 0.5: see the module doc)."""
        s = np.asarray(scores, np.float64)
        if self.method == "platt":
            p = _sigmoid(self.a * s + self.b)
        else:
            p = np.interp(s, np.asarray(self.xs), np.asarray(self.ys))
        return reprior(p, prior)

    def threshold_for_precision(self, target: float, prior: float = PRIOR) -> dict[str, float] | None:
        """The lowest score threshold whose precision on the val split, at ``prior``, is at least
        ``target``: ``{"score", "probability", "precision", "recall"}``; ``None`` if none reaches it."""
        if not 0 < target <= 1:
            raise ValueError(f"target precision must be in (0, 1], got {target}")
        ts = np.asarray(self.curve.get("score", []))
        tpr, fpr = np.asarray(self.curve.get("tpr", [])), np.asarray(self.curve.get("fpr", []))
        if not len(ts):
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = tpr * prior / (tpr * prior + fpr * (1 - prior))
        prec = np.where(tpr > 0, prec, 0.0)
        ok = np.flatnonzero(prec >= target)
        if not len(ok):
            return None
        i = int(ok[0])
        return {"score": float(ts[i]), "probability": float(self.probability(np.array([ts[i]]), prior)[0]),
                "precision": float(prec[i]), "recall": float(tpr[i])}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "n_pos": self.n_pos, "n_neg": self.n_neg, "curve": dict(self.curve)}
        if self.method == "platt":
            d.update(a=self.a, b=self.b)
        else:
            d.update(xs=list(self.xs), ys=list(self.ys))
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "PairCalibrator":
        if not isinstance(d, dict) or d.get("method") not in METHODS:
            raise SpaceError(f"{where}: expected an object with method {' or '.join(METHODS)}")

        def nums(key: str, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
            v = d.get(key, [])
            if not isinstance(v, list) or not all(_finite_number(x) and lo <= x <= hi for x in v):
                raise SpaceError(f"{where}.{key}: expected a list of finite numbers in [{lo}, {hi}]")
            return [float(x) for x in v]

        for k in ("n_pos", "n_neg"):
            if not isinstance(d.get(k), int) or isinstance(d.get(k), bool) or d[k] < 0:
                raise SpaceError(f"{where}.{k}: expected a count")
        curve_d = d.get("curve", {})
        if not isinstance(curve_d, dict):
            raise SpaceError(f"{where}.curve: expected an object")
        curve = {}
        for k, (lo, hi) in (("score", (-math.inf, math.inf)), ("tpr", (0, 1)), ("fpr", (0, 1))):
            v = curve_d.get(k, [])
            if not isinstance(v, list) or not all(_finite_number(x) and lo <= x <= hi for x in v):
                raise SpaceError(f"{where}.curve.{k}: expected a list of finite numbers in [{lo}, {hi}]")
            curve[k] = [float(x) for x in v]
        if len({len(v) for v in curve.values()}) > 1:
            raise SpaceError(f"{where}.curve: score, tpr and fpr differ in length")
        if d["method"] == "platt":
            for k in ("a", "b"):
                if not _finite_number(d.get(k)):
                    raise SpaceError(f"{where}.{k}: expected a finite number")
            return cls("platt", float(d["a"]), float(d["b"]), n_pos=d["n_pos"], n_neg=d["n_neg"], curve=curve)
        xs, ys = nums("xs"), nums("ys", 0, 1)
        if not xs or len(xs) != len(ys) or any(np.diff(xs) < 0):
            raise SpaceError(f"{where}: xs and ys must be non-empty, of equal length, xs non-decreasing")
        return cls("isotonic", xs=tuple(xs), ys=tuple(ys), n_pos=d["n_pos"], n_neg=d["n_neg"], curve=curve)


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fit_pair(scores: np.ndarray, labels: np.ndarray, method: str = "platt") -> PairCalibrator:
    """Calibrate one modality pair from positive (``labels`` true) and negative pair scores, classes balanced."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: use {' or '.join(METHODS)}")
    y = np.asarray(labels, bool)
    w = balanced_weights(y)
    curve = precision_curve(scores, y)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if method == "platt":
        a, b = fit_platt(scores, y, w)
        return PairCalibrator("platt", a, b, n_pos=n_pos, n_neg=n_neg, curve=curve)
    xs, ys = fit_isotonic(scores, y, w)
    return PairCalibrator("isotonic", xs=tuple(xs), ys=tuple(ys), n_pos=n_pos, n_neg=n_neg, curve=curve)


@dataclass
class Calibration:
    """A space's calibrators, one per modality pair (``pair_key``), and where they were fitted."""

    pairs: dict[str, PairCalibrator]
    method: str = "platt"
    split: str = "val"
    prior: float = PRIOR
    source: str = ""  # the manifest it was fitted on

    def get(self, a: str, b: str) -> PairCalibrator | None:
        return self.pairs.get(pair_key(a, b))

    def probability(self, a: str, b: str, scores: np.ndarray, prior: float = PRIOR) -> np.ndarray:
        """``P(match)`` of scores between modality ``a`` and ``b`` items (see :class:`PairCalibrator`)."""
        cal = self.get(a, b)
        if cal is None:
            raise SpaceError(f"no calibration for the modality pair {a}-{b} (calibrated: {', '.join(self.pairs)}); "
                             "calibrate on a manifest where both modalities share val records")
        return cal.probability(scores, prior)

    def threshold_for_precision(self, a: str, b: str, target: float = 0.9, prior: float = PRIOR):
        """See :meth:`PairCalibrator.threshold_for_precision`."""
        cal = self.get(a, b)
        return None if cal is None else cal.threshold_for_precision(target, prior)

    def content(self) -> dict[str, Any]:
        return {"method": self.method, "split": self.split, "prior": self.prior, "source": self.source,
                "pairs": {k: c.to_dict() for k, c in sorted(self.pairs.items())}}


def _digest(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def write_calibration(folder: str | Path, cal: Calibration, space_identity: str) -> Path:
    """Write ``calibration.json`` into a space folder being saved (before its marker ``space.json``)."""
    content = cal.content()
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "space_identity": space_identity, "digest": _digest(content), **content}
    p = Path(folder) / CALIBRATION_FILE
    p.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return p


def read_calibration(folder: str | Path, space_identity: str) -> Calibration | None:
    """The calibration saved with a space (``None`` when it has none), checked: its format, that it was
    fitted for this space (identity) and that its content is the one written (digest)."""
    p = Path(folder) / CALIBRATION_FILE
    if not p.exists():
        return None
    doc = read_meta(p.parent, CALIBRATION_FILE, None, fmt=FORMAT, version=FORMAT_VERSION, what="calibration file",
                    error=SpaceError, unversioned=1, fix="delete it or run `anybind calibrate`")
    if doc.get("space_identity") != space_identity:
        raise SpaceError(f"{p}: fitted for space {doc.get('space_identity')!r}, not this space ({space_identity}); "
                         "run `anybind calibrate` again or delete it")
    content = {k: doc.get(k) for k in ("method", "split", "prior", "source", "pairs")}
    if doc.get("digest") != _digest(content):
        raise SpaceError(f"{p}: content does not match its digest (edited or damaged); run `anybind calibrate` again")
    if not isinstance(content["pairs"], dict) or content["method"] not in METHODS or content["prior"] != PRIOR:
        raise SpaceError(f"{p}: malformed calibration (pairs, method or prior)")
    pairs = {str(k): PairCalibrator.from_dict(v, f"{p}: pairs.{k}") for k, v in content["pairs"].items()}
    return Calibration(pairs, content["method"], str(content["split"]), PRIOR, str(content["source"]))


# -- measuring calibration ---------------------------------------------------------------------
def reliability(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, bins: int = 10) -> dict[str, list[float]]:
    """Per equal-width probability bin: mean predicted probability, observed match rate, weight share."""
    p = np.clip(np.asarray(p, np.float64), 0, 1)
    y = np.asarray(y, np.float64)
    w = np.ones(len(p)) if w is None else np.asarray(w, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    tot = np.bincount(idx, w, bins)
    conf = np.bincount(idx, w * p, bins) / np.maximum(tot, 1e-300)
    acc = np.bincount(idx, w * y, bins) / np.maximum(tot, 1e-300)
    return {"confidence": conf.tolist(), "accuracy": acc.tolist(), "weight": (tot / max(tot.sum(), 1e-300)).tolist()}


def ece(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, bins: int = 10) -> float:
    """Expected calibration error: the weight-averaged |observed rate - mean probability| over the bins."""
    r = reliability(p, y, w, bins)
    return float(sum(wt * abs(a - c) for c, a, wt in zip(r["confidence"], r["accuracy"], r["weight"])))


def brier(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """The (weighted) mean squared error of the probabilities."""
    w = np.ones(len(p)) if w is None else np.asarray(w, np.float64)
    return float((w * (np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2).sum() / max(w.sum(), 1e-300))


def raw_probability(scores: np.ndarray) -> np.ndarray:
    """The naive reading of a score as a probability (cosine clipped to [0, 1]): the "before" of calibration."""
    return np.clip(np.asarray(scores, np.float64), 0, 1)

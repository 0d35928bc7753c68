"""Choosing encoders before training: how aligned are two frozen encoders already?

On paired data (the training split), two candidate encoders of different
modalities are compared by how similar the *geometry* of their feature spaces
is, before any projector is trained:

* **linear CKA** (Kornblith et al. 2019, "Similarity of Neural Network
  Representations Revisited"): ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``
  on centred features; invariant to orthogonal transforms and isotropic scaling
  of either side, 1 for identical representations.  ``debiased=True`` uses the
  unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021), which is near
  0 for independent features even when the feature width is large compared to
  the number of pairs (the plain estimate is not).
* **mutual k-NN alignment** (Huh et al. 2024, "The Platonic Representation
  Hypothesis"): for each item, the fraction of its k nearest neighbours (cosine,
  itself excluded) that are the same under both encoders, averaged over items.
  1 when both encoders order every neighbourhood alike, about ``k / (n - 1)``
  for unrelated encoders.

:func:`compat` encodes each candidate once (through the feature cache), scores
every pair of candidates reading different manifest fields, and ranks them;
``anybind compat`` prints the ranking.  The ``compat`` bench task checks
whether the ranking predicts which pair binds best.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

METRICS = ("mknn", "cka", "cka_debiased")


# ----------------------------------------------------------------------------- metrics


def _as2d(X: Any, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} has non-finite values")
    return X


def _check_pair(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _as2d(X, "X"), _as2d(Y, "Y")
    if len(X) != len(Y):
        raise ValueError(f"X and Y must pair row by row: {len(X)} vs {len(Y)} rows")
    return X, Y


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    kl = K @ L.sum(1)
    return float(
        ((K * L).sum() + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl.sum()) / (n * (n - 3))
    )


def linear_cka(X: Any, Y: Any, *, debiased: bool = False) -> float:
    """Linear CKA between paired representations ``X`` (n, d1) and ``Y`` (n, d2), in [0, 1]."""
    X, Y = _check_pair(X, Y)
    n = len(X)
    if debiased:
        if n < 4:
            raise ValueError(f"debiased CKA needs at least 4 pairs, got {n}")
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = _hsic_unbiased(K, L), _hsic_unbiased(K, K), _hsic_unbiased(L, L)
        if xx <= 0 or yy <= 0:
            return 0.0
        return float(xy / np.sqrt(xx * yy))
    if n < 2:
        raise ValueError(f"CKA needs at least 2 pairs, got {n}")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    if n <= max(X.shape[1], Y.shape[1]):  # Gram form: n x n
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = (K * L).sum(), np.linalg.norm(K), np.linalg.norm(L)
    else:  # feature form: d1 x d2
        xy = np.linalg.norm(Y.T @ X) ** 2
        xx, yy = np.linalg.norm(X.T @ X), np.linalg.norm(Y.T @ Y)
    if xx == 0 or yy == 0:
        return 0.0
    return float(xy / (xx * yy))


def knn_indices(X: Any, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k nearest other rows by cosine similarity (ties: lower index)."""
    X = _as2d(X, "X")
    n = len(X)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n-1] = [1, {n - 1}], got {k}")
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    # stable ordering: sort by (-sim, index)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def mutual_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Mutual k-NN alignment (Huh et al. 2024): mean fraction of shared k nearest neighbours, in [0, 1]."""
    X, Y = _check_pair(X, Y)
    n = len(X)
    a, b = knn_indices(X, k), knn_indices(Y, k)
    A = np.zeros((n, n), dtype=bool)
    B = np.zeros((n, n), dtype=bool)
    rows = np.arange(n)[:, None]
    A[rows, a] = True
    B[rows, b] = True
    return float((A & B).sum(1).mean() / k)


def scores(X: Any, Y: Any, k: int = 10) -> dict[str, float]:
    """Every compatibility metric of one paired set: ``mknn``, ``cka``, ``cka_debiased``."""
    return {
        "mknn": mutual_knn(X, Y, k),
        "cka": linear_cka(X, Y),
        "cka_debiased": linear_cka(X, Y, debiased=True),
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two equally long sequences of >= 2 values, got {len(x)} and {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# ----------------------------------------------------------------------------- candidates on a manifest


@dataclass
class Candidate:
    field: str  # manifest field it reads
    spec: str  # encoder spec

    @property
    def label(self) -> str:
        return self.spec if self.field == _default_field(self.spec) else f"{self.field}={self.spec}"


def _default_field(spec: str) -> str | None:
    from .encoders.registry import get_encoder

    mod = getattr(get_encoder(spec), "modality", None)
    return None if mod in (None, "custom") else mod


def parse_candidate(text: str) -> Candidate:
    """``"text:minilm"`` (field = the encoder's modality) or ``"text_fr=text:minilm"`` (explicit field)."""
    text = text.strip()
    if "=" in text:
        f, spec = (x.strip() for x in text.split("=", 1))
        if not f or not spec:
            raise DataError(f"candidate {text!r}: use SPEC or FIELD=SPEC")
        return Candidate(f, spec)
    f = _default_field(text)
    if f is None:
        raise DataError(f"candidate {text!r}: its encoder reads no standard modality; give the field: FIELD={text}")
    return Candidate(f, text)


@dataclass
class CompatResult:
    """Every scored candidate pair, best first (by ``by``)."""

    rows: list[dict[str, Any]]
    by: str
    split: str
    k: int
    notes: list[str] = field(default_factory=list)

    def table(self, title: str = "encoder compatibility"):
        from rich.table import Table

        t = Table(title=f"{title} (split {self.split}, ranked by {self.by}, k={self.k})")
        for c in ("rank", "a", "b", "n", *METRICS):
            # encoder specs are identifiers: folded onto a second line when narrow, never cut with an ellipsis
            t.add_column(c, justify="left" if c in ("a", "b") else "right", overflow="fold")
        for r in self.rows:
            t.add_row(str(r["rank"]), r["a"], r["b"], str(r["n"]), *[f"{r[m]:.3f}" for m in METRICS])
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "split": self.split, "k": self.k, "rows": self.rows, "notes": self.notes}


def compat_from_features(
    feats: Mapping[str, tuple[Sequence[str], np.ndarray]],
    fields: Mapping[str, str],
    *,
    pairs: Iterable[tuple[str, str]] | None = None,
    k: int = 10,
    by: str = "mknn",
    min_pairs: int = 12,
) -> list[dict[str, Any]]:
    """Score candidate pairs from ready features: ``feats[label] = (record ids, X)``, ``fields[label]`` its field.

    Default pairs: every two candidates reading different fields.  Each pair is
    scored on the records both have.  Rows come back ranked by ``by`` (best first).
    """
    if by not in METRICS:
        raise ValueError(f"by must be one of {METRICS}, got {by!r}")
    labels = list(feats)
    if pairs is None:
        pairs = [(a, b) for a, b in itertools.combinations(labels, 2) if fields[a] != fields[b]]
    rows = []
    for a, b in pairs:
        ids_a, Xa = feats[a]
        pos_b = {i: j for j, i in enumerate(feats[b][0])}
        common = [(i, pos_b[r]) for i, r in enumerate(ids_a) if r in pos_b]
        if len(common) < max(min_pairs, k + 2):
            raise DataError(f"{a} and {b} share {len(common)} records; need at least {max(min_pairs, k + 2)}")
        ia, ib = (np.asarray(x) for x in zip(*common))
        rows.append({"a": a, "b": b, "n": len(common), **scores(Xa[ia], feats[b][1][ib], k)})
    rows.sort(key=lambda r: -r[by])
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def compat(
    manifest: str | Path | Any,
    candidates: Sequence[str | Candidate],
    *,
    split: str = "train",
    k: int = 10,
    by: str = "mknn",
    cache: Any = None,
    progress: bool = False,
    max_records: int | None = None,
    seed: int = 0,
) -> CompatResult:
    """Rank every pair of candidate encoders (of different fields) by how aligned they already are.

    Parameters
    ----------
    manifest: a JSONL manifest path or a loaded :class:`~anybind.data.manifest.Manifest`.
    candidates: encoder specs (``"image:efficientnet-lite1"``) or ``FIELD=SPEC``.
    split: the records to score on (``train`` by default: what a space would be trained on).
    k: neighbourhood size of the mutual k-NN metric.
    by: ranking metric, one of ``mknn``, ``cka``, ``cka_debiased``.
    max_records: score on a seeded random subset of at most this many records (speed).
    """
    from .cache import FeatureCache
    from .data.manifest import Manifest, load_manifest
    from .encoders.registry import get_encoder

    cands = [c if isinstance(c, Candidate) else parse_candidate(c) for c in candidates]
    labels = [c.label for c in cands]
    if len(set(labels)) != len(labels):
        raise DataError(f"duplicate candidates: {labels}")
    fields = sorted({c.field for c in cands})
    if len(fields) < 2:
        raise DataError(f"candidates all read {fields[0]!r}: compatibility compares encoders of different fields")
    if isinstance(manifest, Manifest):
        man = manifest
    else:
        kinds = {c.field: get_encoder(c.spec).input_kind for c in cands if c.spec.startswith(("vectors:", "callable:"))}
        man = load_manifest(manifest, modalities=fields, kinds=kinds or None, progress=progress)
    recs = man.split(split)
    if max_records is not None and len(recs) > max_records:
        pick = np.sort(np.random.default_rng(seed).choice(len(recs), max_records, replace=False))
        recs = [recs[i] for i in pick]
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    feats: dict[str, tuple[list[str], np.ndarray]] = {}
    for c in cands:
        have = [r for r in recs if r.has(c.field)]
        if not have:
            raise DataError(f"{man.path}: no {split} record has the field {c.field!r} (candidate {c.label})")
        X = fc.encode(get_encoder(c.spec), [r.values[c.field] for r in have], progress=progress,
                      description=f"encoding {c.field} ({c.spec})")
        feats[c.label] = ([r.id for r in have], X)
    rows = compat_from_features(feats, {c.label: c.field for c in cands}, k=k, by=by)
    return CompatResult(rows=rows, by=by, split=split, k=k)

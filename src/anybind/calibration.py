"""Fitting and measuring a space's match probabilities on a manifest (the model: :mod:`anybind.calibrators`).

* :func:`fit_calibration` -- per modality pair, the space's scores (:attr:`~anybind.Space.scorer`) of
  positive pairs against negative pairs of one split (default ``val``), a calibrator each.  A
  positive is a record's own pair; items with identical content (equal content keys, as in
  :func:`anybind.metrics.sim_recalls`) are interchangeable, so such cross-record pairs count as
  positives too, never as negatives.  Negatives: every other cross-record pair (a seeded sample of
  at most ``max_negatives``).  Positives and negatives are weighted to equal total weight: the
  probabilities are ``P(match)`` at a prior of 0.5 (see :mod:`anybind.calibrators`).
* :func:`calibrate` -- the same, attached to the space (saved with it as ``calibration.json``).
* :func:`measure_calibration` -- ECE, Brier score and reliability bins before (the raw score read
  as a probability) and after calibration on another split, and precision / recall at the
  suggested threshold for a target precision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibrators import (
    Calibration,
    balanced_weights,
    brier,
    ece,
    fit_pair,
    pair_key,
    raw_probability,
    reliability,
)
from .data.manifest import Manifest, load_manifest
from .errors import DataError
from .evaluate import embed_records
from .metrics import Embedded, as_embedded, content_groups, paired_rows
from .wording import counted

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

MAX_NEGATIVES = 200_000
MAX_RECORDS = 2000  # a larger split is sampled (seeded): the score matrix is records x records


def load_for(space: "SpaceCore", manifest: "str | Path | Manifest") -> Manifest:
    """``manifest`` loaded with the space's modalities (a loaded one as it is)."""
    if isinstance(manifest, Manifest):
        return manifest
    from .encoders.kinds import manifest_kinds

    return load_manifest(manifest, modalities=space.modalities, kinds=manifest_kinds(space.encoders))


def relevance(keys_a: Any, keys_b: Any, n: int) -> np.ndarray:
    """Which (i, j) pairs of ``n`` paired rows are matches: the diagonal, and rows whose a-items or b-items
    have identical content (as :func:`anybind.metrics.sim_recalls` counts them)."""
    rel = np.eye(n, dtype=bool)
    for keys in (keys_a, keys_b):
        if keys is not None:
            g = content_groups(keys)
            rel |= g[:, None] == g[None, :]
    return rel


def pair_samples(
    space: "SpaceCore", embs: Mapping[str, Embedded], a: str, b: str, *, max_negatives: int = MAX_NEGATIVES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and match labels (positives first, then a seeded sample of negatives) of pair ``a``-``b``."""
    ea, eb = as_embedded(embs[a]), as_embedded(embs[b])
    for x, y, ia, ib in paired_rows({a: ea, b: eb}, [(a, b)]):
        S = space.scorer.pair_scores(ea.vectors[ia], x, eb.vectors[ib], y)
        ka = None if ea.keys is None else [ea.keys[i] for i in ia]
        kb = None if eb.keys is None else [eb.keys[i] for i in ib]
        rel = relevance(ka, kb, len(ia))
        pos, neg = S[rel], S[~rel]
        if len(neg) > max_negatives:
            neg = neg[np.sort(np.random.default_rng(seed).choice(len(neg), max_negatives, replace=False))]
        return np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return np.zeros(0), np.zeros(0, bool)


def split_samples(
    space: "SpaceCore", man: Manifest, split: str, *, modalities: Iterable[str] | None = None,
    cache: "FeatureCache | str | Path | None" = None, max_negatives: int = MAX_NEGATIVES, seed: int = 0,
    progress: bool = False, all_match: list[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``pair_key -> (scores, labels)`` for every modality pair with at least 2 shared records in ``split`` and a
    non-matching pair among them; ``all_match`` (a list, filled in): each pair left out for having none (every pair
    of its records a match: identical content, the diagonal always is)."""
    mods = [m for m in (modalities or space.modalities) if m in space.modalities]
    recs = man.split(split)
    if len(recs) > MAX_RECORDS:
        recs = [recs[i] for i in np.sort(np.random.default_rng(seed).choice(len(recs), MAX_RECORDS, replace=False))]
    embs = embed_records(space, recs, mods, cache=cache, progress=progress)
    out = {}
    for a, b, _, _ in paired_rows(embs):
        s, y = pair_samples(space, embs, a, b, max_negatives=max_negatives, seed=seed)
        if y.any() and (~y).any():
            out[pair_key(a, b)] = (s, y)
        elif all_match is not None and len(y):
            all_match.append(pair_key(a, b))
    return out


#: positive pairs below which a pair's calibration is fitted but called rough (a warning)
FEW_POSITIVES = 10


def fit_calibration(
    space: "SpaceCore", manifest: "str | Path | Manifest", *, split: str = "val", method: str = "platt",
    modalities: Iterable[str] | None = None, cache: "FeatureCache | str | Path | None" = None,
    max_negatives: int = MAX_NEGATIVES, seed: int = 0, progress: bool = False,
) -> Calibration:
    """A :class:`~anybind.calibrators.Calibration` of the space on ``split`` of ``manifest`` (see the module doc)."""
    man = load_for(space, manifest)
    all_match: list[str] = []
    samples = split_samples(space, man, split, modalities=modalities, cache=cache, max_negatives=max_negatives,
                            seed=seed, progress=progress, all_match=all_match)
    why = (f"every pair of the {split!r} records holding {', '.join(all_match)} is a match (identical content, e.g. "
           "the same caption), none a non-match to calibrate against")
    if not samples and all_match:
        raise DataError(f"{man.path}: nothing to calibrate on: {why}")
    if all_match:  # the others calibrate: these are said, not skipped
        log.warning("%s: not calibrated: %s", man.path, why)
    if not samples:
        raise DataError(f"{man.path}: no two modalities of the space share 2 or more {split!r} records: "
                        "nothing to calibrate on")
    pairs = {k: fit_pair(s, y, method) for k, (s, y) in samples.items()}
    for k, c in pairs.items():
        log.info("calibrated %s on %d positive / %s (%s)", k, c.n_pos, counted(c.n_neg, f"negative {split} pair"), method)
        if c.n_pos < FEW_POSITIVES:
            log.warning("%s: %s calibrated on only %s: its match probabilities are rough (give "
                        "%d or more records holding both in the %s split)", man.path, k, counted(c.n_pos, f"positive {split} pair"),
                        FEW_POSITIVES, split)
    return Calibration(pairs, method, split, source=str(man.path))


def calibrate(space: "SpaceCore", manifest: "str | Path | Manifest", **kw: Any) -> "SpaceCore":
    """Fit the space's calibration (:func:`fit_calibration`) and attach it (``space.calibration``); returns the space."""
    space.calibration = fit_calibration(space, manifest, **kw)
    return space


def calibrate_after_fit(space: "SpaceCore", manifests: Iterable[Manifest], **kw: Any) -> None:
    """The fit's hook: calibrate on the first manifest that has a val split; nothing when none has one."""
    for man in manifests:
        if man.split("val"):
            try:
                calibrate(space, man, **kw)
            except DataError as e:  # e.g. val records with one modality each: the space is fine uncalibrated
                log.warning("not calibrated: %s", e)
            return


def match_probability(space: "SpaceCore", a_mod: str, a_items, b_mod: str, b_items, *, prior: float = 0.5,
                      **kw: Any) -> np.ndarray:
    """``P(match)`` (len(a_items), len(b_items)) of items of two modalities, by the space's calibration."""
    return space.match_probability(a_mod, a_items, b_mod, b_items, prior=prior, **kw)


def measure_calibration(
    space: "SpaceCore", manifest: "str | Path | Manifest", *, split: str = "test", target_precision: float = 0.9,
    modalities: Iterable[str] | None = None, cache: "FeatureCache | str | Path | None" = None, bins: int = 10,
) -> dict[str, dict[str, Any]]:
    """Per calibrated modality pair, on ``split`` (classes balanced: the stated prior 0.5):
    ``ece_raw`` / ``brier_raw`` (the score read as a probability), ``ece`` / ``brier`` (calibrated),
    ``reliability`` / ``reliability_raw`` bins, and at the val-suggested threshold for ``target_precision``
    its ``threshold`` and the ``precision`` / ``recall`` reached on ``split``."""
    cal = space.calibration
    if cal is None:
        raise DataError("the space is not calibrated: run `anybind calibrate SPACE MANIFEST` first")
    man = load_for(space, manifest)
    out: dict[str, dict[str, Any]] = {}
    for key, (s, y) in split_samples(space, man, split, modalities=modalities, cache=cache).items():
        if key not in cal.pairs:
            continue
        c = cal.pairs[key]
        w = balanced_weights(y)
        p, raw = c.probability(s), raw_probability(s)
        row: dict[str, Any] = {
            "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
            "ece_raw": ece(raw, y, w, bins), "ece": ece(p, y, w, bins),
            "brier_raw": brier(raw, y, w), "brier": brier(p, y, w),
            "reliability_raw": reliability(raw, y, w, bins), "reliability": reliability(p, y, w, bins),
            "target_precision": target_precision,
        }
        th = c.threshold_for_precision(target_precision)
        if th is not None:
            sel = s >= th["score"]
            tp = float(w[sel & y].sum())
            row.update(threshold=th["score"], threshold_probability=th["probability"],
                       precision=tp / max(float(w[sel].sum()), 1e-300), recall=tp / max(float(w[y].sum()), 1e-300))
        out[key] = row
    return out

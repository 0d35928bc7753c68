"""Fashion-MNIST zero-shot with class biases balanced on unlabelled Fashion-MNIST *train* images (issue 16):
:class:`anybind.zeroshot.ZeroShotClassifier` calibrated on the balancing set (labels never read), then each test
image classified on its own (inductive).  Used by the ``fashion-mnist-zeroshot`` and
``transfer`` tasks; imports no other bench task module (no import circle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import AnybindError


def balance_options(task: str, balance: str, balance_start: str, balance_t: str) -> tuple[int, int, list[float]]:
    """``(images, first image, temperatures)`` of the ``balance=``, ``balance_start=``, ``balance_t=`` options,
    checked before any work (one line each)."""
    try:
        n, start = int(balance), int(balance_start)
        temps = [float(t) for t in balance_t.split(",") if t.strip()]
    except ValueError:
        raise AnybindError(f"{task}: balance={balance!r}, balance_start={balance_start!r}, balance_t={balance_t!r}: "
                           "give whole numbers and comma-separated positive temperatures") from None
    if n < 0 or start < 0 or (n and (not temps or any(not (t > 0 and np.isfinite(t)) for t in temps))):
        raise AnybindError(f"{task}: balance={n}, balance_start={start}, balance_t={balance_t!r}: images and the first "
                           "image >= 0, temperatures positive")
    if len(set(temps)) != len(temps):
        raise AnybindError(f"{task}: balance_t={balance_t!r} repeats a temperature")
    return n, start, temps


def balance_set(fm, n: int, start: int, scored: Sequence[Any], task: str) -> list:
    """Fashion-MNIST train images ``start .. start+n`` (their labels are never read): refused in one line when they
    run out or overlap the scored images (a selection run scores train images too)."""
    train = fm.split("train")
    out = train[start:start + n]
    if len(out) < n:
        raise AnybindError(f"{task}: balance={n} from balance_start={start}: only {len(out)} of the {len(train)} train "
                           "images are left there")
    ids = {r.id for r in scored}
    clash = [r.id for r in out if r.id in ids]
    if clash:
        raise AnybindError(f"{task}: the balancing images overlap the scored ones ({clash[0]} and {len(clash) - 1} more): "
                           "move balance_start past them")
    return out


def refine_option(task: str, refine: str) -> list[float]:
    """The ``refine=`` option: comma-separated prototype weights in (0, 1] (:mod:`anybind.zeroshot_adapt`), checked
    before any work (one line); empty: none."""
    try:
        mixes = [float(m) for m in refine.split(",") if m.strip()]
    except ValueError:
        raise AnybindError(f"{task}: refine={refine!r}: give comma-separated prototype weights in (0, 1]") from None
    if any(not 0 < m <= 1 for m in mixes) or len(set(mixes)) != len(mixes):
        raise AnybindError(f"{task}: refine={refine!r}: each weight in (0, 1], none repeated")
    return mixes


def balanced_hits(space, test, bal, classes: Sequence[str], names: Mapping[str, str], templates, temps, cache,
                  refine: Sequence[float] = ()) -> tuple[np.ndarray, dict[Any, np.ndarray], dict[Any, dict[str, Any]]]:
    """Per-image correctness (0/1, in ``test``'s order) with no bias, and with the biases balanced on ``bal`` at
    each temperature (keyed by it); with ``refine``, also with class vectors refined on ``bal`` (prototype weight
    ``m``) and then balanced (keyed ``(temperature, m)``); and each calibration's record (argmax counts on ``bal``
    before and after, iterations, refinement rounds)."""
    from ..zeroshot import ZeroShotClassifier

    y = np.array([list(classes).index(r.labels["class"]) for r in test])
    clf = ZeroShotClassifier(space, classes, names=dict(names), templates=templates,  # no temps: unbalanced only
                             **({"temperature": temps[0]} if len(temps) else {}))
    X = clf.embed_items(test, cache)
    S = clf.raw_scores(X, cache)
    plain = (S.argmax(1) == y).astype(np.float64)
    out, info = {}, {}
    Xb = clf.embed_items(bal, cache) if bal else None
    for t in temps:
        for key, m in [(t, 0.0), *(((t, m), m) for m in refine)]:
            c = ZeroShotClassifier(space, classes, names=dict(names), templates=templates, temperature=t, refine=m)
            c.calibrate(Xb, cache)
            out[key] = (c.decision_function(X, cache).argmax(1) == y).astype(np.float64)
            info[key] = {"bias": [round(float(b), 3) for b in c.bias_], **c.calibration_}
    return plain, out, info


def balanced_on_val(space, parts: Mapping[str, Sequence[Any]], label: str, names: Mapping[str, str], templates,
                    temps: Sequence[float], cache, modality: str = "audio",
                    mixes: Sequence[float] = (0.0,)) -> dict[str, Any]:
    """Biases balanced on the unlabelled ``parts["train"]`` items at each temperature, after class vectors refined
    there with each prototype weight of ``mixes`` (0: not refined; :mod:`anybind.zeroshot_adapt`); the pair with the
    best ``val`` accuracy chosen (ties: the lower weight, then the lower temperature), then ``test`` scored once:
    ``{"T", "m", "val", "test_hits", "plain_hits"}`` (per-item 0/1 in test order)."""
    from ..zeroshot import ZeroShotClassifier

    classes = sorted(names)
    ys = {p: np.array([classes.index(str(r.labels[label])) for r in parts[p]]) for p in ("val", "test")}
    base = ZeroShotClassifier(space, classes, names=dict(names), templates=templates, modality=modality)
    X = {p: base.embed_items(parts[p], cache) for p in ("train", "val", "test")}
    best = None
    for m in sorted(mixes):
        for t in sorted(temps):
            clf = ZeroShotClassifier(space, classes, names=dict(names), templates=templates, modality=modality,
                                     temperature=t, refine=m).calibrate(X["train"], cache)
            val = float((clf.decision_function(X["val"], cache).argmax(1) == ys["val"]).mean())
            if best is None or val > best[2]:
                best = (m, t, val, clf)
    m, t, val, clf = best
    return {"T": t, "m": m, "val": val,
            "test_hits": (clf.decision_function(X["test"], cache).argmax(1) == ys["test"]).astype(np.float64),
            "plain_hits": (base.raw_scores(X["test"], cache).argmax(1) == ys["test"]).astype(np.float64)}

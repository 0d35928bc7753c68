"""Best-epoch selection and early stopping, one rule for every trainer (fit, bind, streaming / Ray fit).

With a val split, each epoch's val score is compared with the best so far: the best
epoch's weights are kept, and training stops after ``patience`` epochs without an
improvement.  With no val split there is nothing to select on or stop by: every epoch
runs, the last one is kept, and the val score is recorded as ``None`` -- never a
train-loss stand-in that reads like a score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .wording import counted

NO_VAL = "no val split"


def se_of(items: Any) -> float:
    """The standard error of the mean of per-item val scores (0.0 for fewer than 2 items or a NaN mean)."""
    v = np.atleast_1d(np.asarray(items, dtype=np.float64))
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 and not np.isnan(v.mean()) else 0.0


def nearest_within_se(items: Sequence[Any], k: float) -> tuple[int, dict[str, Any]]:
    """The standard-error rule (Breiman et al. 1984; ESL 7.10, "one-SE rule") over candidates ordered nearest the
    training-free start first: ``(index, record)``, the first candidate whose mean per-item val score is at least the
    best mean minus ``k`` standard errors of the best's items (ties for the best: the nearest the start).  A NaN mean
    is never the best; all NaN: index 0 (the start).  The record: the best's index, mean and standard error, ``k``
    and the index chosen (``TrainConfig.select_se``)."""
    means = [float(np.mean(np.asarray(x, dtype=np.float64))) for x in items]
    if not means:
        raise ValueError("nearest_within_se: no candidates")
    scored = [i for i, m in enumerate(means) if not math.isnan(m)]
    if not scored:
        return 0, {"k": k, "note": "no val score: the start kept", "chosen": 0}
    best = max(scored, key=lambda i: (means[i], -i))
    se = se_of(items[best])
    chosen = next(i for i in scored if means[i] >= means[best] - k * se)
    return chosen, {"k": k, "best": best, "best_val": round(means[best], 6), "best_se": round(se, 6),
                    "chosen": chosen, "chosen_val": round(means[chosen], 6)}


class EpochSelection:
    """Which epoch's weights to keep, and when to stop."""

    def __init__(self, use_val: bool, patience: int):
        self.use_val = use_val
        self.patience = patience
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, score: float | None) -> bool:
        """Record ``epoch``'s val score (``None`` without val); True when its weights are the ones to keep."""
        if not self.use_val:
            self.best_epoch = epoch
            return True
        if score is not None and not math.isnan(score) and (self.best is None or score > self.best + 1e-6):
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.use_val and self.bad_epochs >= self.patience

    def progress(self, loss: float, score: float | None) -> str:
        """The progress-bar note of one epoch."""
        if not self.use_val:
            return f"loss {loss:.3f} ({NO_VAL})"
        best = "-" if self.best is None else f"{self.best:.3f}"
        return f"loss {loss:.3f} val {score:.3f} best {best}"


def selection_record(use_val: bool, best_val: float | None, val_metric: str) -> dict[str, Any]:
    """The training-record fields on how the kept epoch was chosen (``val_metric``: what the score is)."""
    if not use_val:
        return {"best_val": None, "val_metric": f"none ({NO_VAL})",
                "selection": f"{NO_VAL}: last epoch, no early stopping"}
    return {"best_val": best_val, "val_metric": val_metric, "selection": "best val epoch, early stopping"}


def describe_training(training: Mapping[str, Any]) -> str:
    """One line on how a run ended: its best epoch and val score, or that there was no val split."""
    run = training.get("epochs_run", 0)
    if training.get("best_val") is None:
        return f"{NO_VAL}: trained for {counted(run, 'epoch')}, no early stopping / selection"
    return f"best epoch {training.get('best_epoch')} of {run}, val score {training['best_val']:.3f}"


def describe_se_rule(ridge: Mapping[str, Any] | None, epoch: Mapping[str, Any] | None,
                     wise: Mapping[str, Any] | None) -> str:
    """One line on what the standard-error rule (``TrainConfig.select_se``) chose: per modality the start guard
    (kept, best ridge val +- se vs the start's), the ridge alpha, the kernel keep; the epoch; the WiSE-FT alpha."""
    parts = []
    for m, r in (ridge or {}).items():
        g, k = r.get("guard") or {}, r.get("kernel") or {}
        if "rule" in g:
            parts.append(f"{m}: guard kept the {g['kept']} (best ridge {g['best_val']:.3f} +- {g['best_se']:.3f}, "
                         f"start {g['start_val']:.3f}), alpha {r.get('alpha')}")
        if "rule" in k:
            parts.append(f"{m}: kernel {'kept' if k.get('kept') else 'not kept'} (best {max(k['grid'].values()):.3f} "
                         f"+- {k['best_se']:.3f} vs {k['base_val']:.3f})")
    for name, r in (("epoch", epoch), ("wise alpha", wise)):
        if r and "best_val" in r:
            parts.append(f"{name} {r['chosen']} (best {r['best']}: {r['best_val']:.3f} +- {r['best_se']:.3f}, "
                         f"chosen {r['chosen_val']:.3f})")
    return "; ".join(parts) or "nothing to choose"


def _se_words(rec: Mapping[str, Any]) -> str:
    """``"1 standard error"`` from a record's standard-error rule (``"1se"``, ``"0.5se"``)."""
    k = str(rec["rule"]).removesuffix("se")
    return f"{k} standard error{'' if k == '1' else 's'}"


def kept_start_words(guard: Mapping[str, Any]) -> str:
    """Why a start guard (:func:`anybind.ridge.prior_ridge`'s record) kept the training-free start: its val was at
    least the ridge's, or, under the standard-error rule (``rule`` in the record), below it but within the rule."""
    if "rule" in guard and guard["start_val"] < guard["ridge_val"]:
        return (f"val {guard['start_val']:.4f} < the ridge's {guard['ridge_val']:.4f}, within {_se_words(guard)} "
                f"({guard['best_se']:.4f}) of the best: the standard-error rule keeps the training-free start")
    return (f"val {guard['start_val']:.4f} >= the ridge's {guard['ridge_val']:.4f}: the training pairs do not beat "
            "the training-free start")


def kernel_miss_words(kernel: Mapping[str, Any], best: float) -> str:
    """Why a kernel branch whose best finite grid val is ``best`` was not kept (the record of
    :func:`anybind.ridge_kernel.kernel_start`): it does not beat the linear start's val, or, under the standard-error
    rule, by too little."""
    if "rule" in kernel and best > kernel["base_val"]:
        return (f"its best val {best} beats {kernel['base_val']:.4f} by less than {_se_words(kernel)} "
                f"({kernel['best_se']:.4f})")
    return f"its best val {best} does not beat {kernel['base_val']:.4f}"

"""Best-epoch selection and early stopping, one rule for every trainer (fit, bind, streaming / Ray fit).

With a val split, each epoch's val score is compared with the best so far: the best
epoch's weights are kept, and training stops after ``patience`` epochs without an
improvement.  With no val split there is nothing to select on or stop by: every epoch
runs, the last one is kept, and the val score is recorded as ``None`` -- never a
train-loss stand-in that reads like a score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NO_VAL = "no val split"


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
        return f"{NO_VAL}: trained for {run} epochs, no early stopping / selection"
    return f"best epoch {training.get('best_epoch')} of {run}, val score {training['best_val']:.3f}"

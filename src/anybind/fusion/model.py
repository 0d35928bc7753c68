"""The fusion tasks on :class:`~anybind.fusion.base.FusionModel`: :class:`FusionClassifier` and
:class:`FusionRegressor` (targets, loss, OGM confidence, metrics, predictions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.manifest import Record
from ..errors import DataError
from .base import FusionModel


class FusionClassifier(FusionModel):
    """A classifier over any subset of a space's bound modalities.

    Parameters
    ----------
    space: the :class:`~anybind.Space` whose projected embeddings are the inputs.
    modalities: the bound modalities to fuse (any of them may be absent per record).
    kind: ``late`` | ``concat`` | ``gated`` | ``attention``.
    dropout: modality dropout probability during training (never drops every present one).
    dropout_schedule: ``constant`` | ``ramp`` (0 -> dropout over the first half of the epochs) |
        ``anneal`` (dropout -> 0 over the second half).
    reconstruct: train the reconstruction decoder and use it to fill absent modalities.
    balance: ``"ogm-ge"`` (gradient modulation + Gaussian noise), ``"ogm"``, ``"agm"`` or ``None``.
    alpha: modulation strength (OGM and AGM).
    full_weight: weight of an extra loss on every batch with all of its modalities (no dropout),
        so that the all-modality path is trained as much as the dropped ones.
    optimizer: ``adamw`` (default) or ``sgd`` (momentum 0.9, as in the OGM-GE and AGM papers; give
        it a larger ``lr``, e.g. 0.05): Adam's per-parameter normalisation undoes much of a steady
        gradient scale, so modulation acts more strongly under SGD.
    """

    task = "classification"
    metric = "accuracy"
    short = "acc"

    def __init__(self, space: Any, modalities: Sequence[str], **kw: Any):
        super().__init__(space, modalities, **kw)
        self.classes_: list[str] = []

    @property
    def loss_name(self) -> str:
        return "ce"

    def _n_out(self) -> int:
        return len(self.classes_)

    def _fit_targets(self, records: Sequence[Record]) -> np.ndarray:
        ytxt = [str(v) for v in self._raw_labels(records)]
        self.classes_ = sorted(set(ytxt))
        if len(self.classes_) < 2:
            raise DataError(f"label {self.label_key!r} has a single class {self.classes_} in the training records")
        return self._targets(records)

    def _targets(self, records: Sequence[Record]) -> np.ndarray:
        cidx = {c: i for i, c in enumerate(self.classes_)}
        return np.array([cidx.get(str(v), -1) for v in self._raw_labels(records)], dtype=np.int64)

    def _usable_for_val(self, records: Sequence[Record]) -> list[Record]:
        cls = set(self.classes_)
        return [r for r in records if self.label_key in r.labels and str(r.labels[self.label_key]) in cls]

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(out, y, reduction=reduction)

    def _confidence(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out, -1).gather(-1, y[..., None].clamp_min(0))[..., 0]

    def _metrics(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        acc = float((out.argmax(-1) == y).mean()) if len(y) else float("nan")
        return {"accuracy": acc}

    def _task_json(self) -> dict[str, Any]:
        return {"classes": self.classes_}

    def _load_task_json(self, meta: dict[str, Any]) -> None:
        self.classes_ = list(meta["classes"])

    def predict_proba(self, records: Any, *, cache=None, reconstruct: bool | None = None) -> np.ndarray:
        X, mask = self.branch_inputs(self._records(records), cache)
        return torch.softmax(torch.from_numpy(self._outputs(X, mask, reconstruct)), -1).numpy()

    def predict(self, records: Any, *, cache=None, reconstruct: bool | None = None) -> list[str]:
        """Class names; a record with none of the classifier's modalities raises DataError."""
        X, mask = self.branch_inputs(self._records(records), cache)
        return [self.classes_[i] for i in self._outputs(X, mask, reconstruct).argmax(1)]


class FusionRegressor(FusionModel):
    """A regressor of a numeric label over any subset of a space's bound modalities.

    Same parameters as :class:`FusionClassifier` plus ``loss``: ``"mse"`` or ``"huber"`` (delta 1
    on the standardised target).  The target is standardised with the training mean and standard
    deviation (saved with the model); predictions and metrics (R^2, MAE, RMSE) are in its units.
    For OGM, a modality's confidence on an item is ``exp(-err^2 / 2)`` of its unimodal probe
    (standardised units), the regression analogue of the true class's probability.

    Example::

        reg = FusionRegressor(space, ["image", "text"], kind="concat").fit("m.jsonl", "n_languages")
        reg.evaluate(test, metric="all")     # {"image": {"r2": .., "mae": .., "rmse": ..}, ...}
    """

    task = "regression"
    metric = "r2"
    short = "r2"
    LOSSES = ("mse", "huber")

    def __init__(self, space: Any, modalities: Sequence[str], *, loss: str = "mse", **kw: Any):
        if loss not in self.LOSSES:
            raise ValueError(f"unknown regression loss {loss!r}: use one of {', '.join(self.LOSSES)}")
        super().__init__(space, modalities, **kw)
        self.loss = loss
        self.target_mean_ = 0.0
        self.target_std_ = 1.0

    @property
    def target_key(self) -> str | None:
        return self.label_key

    @property
    def loss_name(self) -> str:
        return self.loss

    def params(self) -> dict[str, Any]:
        return {**super().params(), "loss": self.loss}

    def _n_out(self) -> int:
        return 1

    def _values(self, records: Sequence[Record]) -> np.ndarray:
        vals, bad = [], []
        for r, v in zip(records, self._raw_labels(records)):
            f = float("nan")
            if not isinstance(v, bool):
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    pass
            if not math.isfinite(f):
                bad.append(f"{r.id!r} ({v!r})")
            vals.append(f)
        if bad:
            raise DataError(f"{len(bad)} record(s) have a non-numeric or non-finite target {self.label_key!r}: "
                            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
        return np.array(vals, dtype=np.float64)

    def _fit_targets(self, records: Sequence[Record]) -> np.ndarray:
        v = self._values(records)
        if len(v) < 2 or float(v.std()) == 0.0:
            raise DataError(f"target {self.label_key!r} is constant in the training records ({v[:1].tolist()}); nothing to regress")
        self.target_mean_, self.target_std_ = float(v.mean()), float(v.std())
        return self._targets(records)

    def _targets(self, records: Sequence[Record]) -> np.ndarray:
        return ((self._values(records) - self.target_mean_) / self.target_std_).astype(np.float32)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        pred = out[..., 0]
        if self.loss == "huber":
            return F.huber_loss(pred, y, reduction=reduction, delta=1.0)
        return F.mse_loss(pred, y, reduction=reduction)

    def _confidence(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * (out[..., 0] - y) ** 2)

    def _metrics(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if not len(y):
            return {"r2": float("nan"), "mae": float("nan"), "rmse": float("nan")}
        pred = out[..., 0].astype(np.float64) * self.target_std_ + self.target_mean_
        true = y.astype(np.float64) * self.target_std_ + self.target_mean_
        err = pred - true
        sst = float(((true - true.mean()) ** 2).sum())
        r2 = 1.0 - float((err**2).sum()) / sst if sst > 0 else float("nan")
        return {"r2": r2, "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}

    def _selection(self, conditions: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Minus the mean squared error (standardised) over every item of every condition: R^2 of a
        small subset (a rare modality's few val records) is too noisy and unbounded below to be
        averaged with the others; pooled squared error is 1 - pooled R^2 up to constants."""
        err = np.concatenate([(o[..., 0] - y) ** 2 for o, y in conditions])
        return -float(err.mean())

    def _task_json(self) -> dict[str, Any]:
        return {"target_mean": self.target_mean_, "target_std": self.target_std_}

    def _load_task_json(self, meta: dict[str, Any]) -> None:
        self.target_mean_, self.target_std_ = float(meta["target_mean"]), float(meta["target_std"])

    def predict(self, records: Any, *, cache=None, reconstruct: bool | None = None) -> np.ndarray:
        """Predicted values in the target's units; a record with none of the regressor's
        modalities raises DataError."""
        X, mask = self.branch_inputs(self._records(records), cache)
        return self._outputs(X, mask, reconstruct)[:, 0].astype(np.float64) * self.target_std_ + self.target_mean_


def load_fusion(path: str | Path, space: Any) -> FusionClassifier | FusionRegressor:
    """Load a saved fusion classifier or regressor (whichever the folder holds)."""
    return FusionModel.load(path, space)

"""Classification and regression over any subset of a space's modalities: fusion that survives
missing ones, with balanced training.

Inputs are the space's projected unit vectors (``space.project(m, space.features(m, ...))``):
every modality then lives in the same ``dim``-wide sphere, so one fusion network can take any
subset of them, the features come from the feature cache, and the model is tied to a space
(its identity is checked on load).

* :mod:`.net`      the network: per-modality branches, late / concat / gated / attention fusion,
                   an ActionMAE-style reconstruction decoder, unimodal probe heads.
* :mod:`.balance`  OGM / OGM-GE and AGM gradient modulation, Shapley mono-modal outputs.
* :mod:`.base`     :class:`FusionModel`, what every task shares: inputs, the task's hooks, ``fit``,
                   evaluation per subset of present modalities, JSON + safetensors persistence;
                   composed of the two parts below, each given exactly what it works on.
* :mod:`.training` :class:`~.training.FusionTrainer`: modality dropout and the training loop with
                   reconstruction, OGM-GE / AGM balancing and epoch selection; returns the network
                   and the history, which the model keeps.
* :mod:`.scoring`  :class:`~.scoring.FusionScorer`: the forward with reconstruction, validation
                   scores, inference, contributions, evaluation per subset of present modalities.
* :mod:`.identity` the saved format's name and version, the model's identity and its check on load.
* :mod:`.model`    the tasks on it: :class:`FusionClassifier` and :class:`FusionRegressor`.
* :mod:`.lego`     :func:`merge_fusion` (LegoMerge: ``late`` heads trained apart, one per modality
                   or subset, stacked into one model over all of them) and :func:`lego_fuse`
                   (LegoFuse: its brief fine-tune on paired records, epochs chosen on val).

Absent modalities are masked (learned missing token + presence mask for concat, softmax over
present gates, key padding mask for the transformer), never zero-filled; with ``reconstruct=True``
the decoder's predictions fill them.  A record with none of the model's modalities is a
:class:`~anybind.errors.DataError` naming it, never a default prediction.

Example::

    clf = FusionClassifier(space, ["image", "text", "audio"], kind="attention").fit("m.jsonl", "top")
    clf.evaluate(load_manifest(...).split("test"), missing="all-subsets")   # {"image+text": 0.8, ...}
    reg = FusionRegressor(space, ["image", "text"], balance="agm").fit("m.jsonl", "n_languages")
    reg.evaluate(test, metric="all")                                       # {"image": {"r2": ..}, ...}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .balance import agm_coefficients, full_outputs, ogm_coefficients, scale_grad, shapley_values, subset_outputs
from .base import BALANCE, FORMAT, FORMAT_VERSION, OPTIMIZERS, SCHEDULES, FusionModel
from .lego import check_mergeable, head_temperatures, lego_fuse, merge_fusion, merge_summary
from .model import FusionClassifier, FusionRegressor, load_fusion
from .net import KINDS, FusionNet

__all__ = [
    "BALANCE", "FORMAT", "FORMAT_VERSION", "KINDS", "OPTIMIZERS", "SCHEDULES", "FusionClassifier", "FusionModel", "FusionNet",
    "FusionRegressor",
    "agm_coefficients", "check_mergeable", "full_outputs", "head_temperatures", "lego_fuse", "load_fusion", "merge_fusion", "merge_summary",
    "ogm_coefficients", "scale_grad", "shapley_values", "subset_outputs",
    "subsets_table",
]


def subsets_table(res: Mapping[str, Any], cnt: Mapping[str, int] | None = None, title: str = "", metric: str = "accuracy") -> Any:
    """A Rich table of the score per subset: ``res`` maps subset -> value (one ``metric`` column)
    or subset -> {metric: value} (a column per metric)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("modalities")
    t.add_column("n", justify="right")
    first = next(iter(res.values()), None)
    cols = list(first) if isinstance(first, Mapping) else [metric]
    for c in cols:
        t.add_column("R²" if c == "r2" else c, justify="right")
    for k, v in sorted(res.items(), key=lambda kv: (kv[0].count("+"), kv[0])):
        vals = [v[c] for c in cols] if isinstance(v, Mapping) else [v]
        t.add_row(k, str((cnt or {}).get(k, "")), *("-" if math.isnan(x) else f"{x:.3f}" for x in vals))
    return t

"""Val pairs held out of the training records where the data has no val split (issue 16, session 27).

Every choice a trained fit makes on val -- the ridge start's shrinkage, the start guard against the label bridge, the
kernel branch, the base-encoder gate's reference, the epoch, the WiSE-FT mix -- falls back to a blind default where
the data has fewer than 2 val pairs (every record ``"split": "train"``): the least-shrunk ridge, unchecked against
the bridge, no kernel, no gate, every fine-tuning epoch.  Measured on the five corpora of the transfer bench with
their val records dropped, that space lost to the better of the label bridge and Procrustes in 34 of 40 off-diagonal
val cells (Fashion-MNIST 0.21, the bridge's level).  Recipe ``auto`` therefore holds :data:`~anybind.recipe.HOLDOUT`
of the training records out as val (``TrainConfig.val_holdout``), each by a salted hash of its id (:func:`share`:
the same records whatever their order, stable as records are added), and the fit chooses on them as on a val split
(BENCHMARKS.md, transfer: a fit with no val split).  Nothing else changes: records of other splits, and every
training record not held out, are the user's as given; the lineage records what was held out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from .base_gate import finite_number
from .errors import DataError
from .recipe import HOLDOUT
from .wording import counted

log = logging.getLogger(__name__)

#: the hash's salt: a held-out record's share is not the manifest's own hash split of the same id
SALT = "anybind-val-holdout:"
#: the largest share that may be held out
MAX_HOLDOUT = 0.5


def share(record_id: str) -> float:
    """A record's place in [0, 1) by a salted SHA-256 of its id: it is held out where this is below the share."""
    return int(hashlib.sha256((SALT + record_id).encode()).hexdigest()[:12], 16) / 16 ** 12


def holdout_problem(x: Any) -> str | None:
    """Why ``val_holdout`` cannot be used (a number in [0, :data:`MAX_HOLDOUT`]), or None."""
    if not finite_number(x) or not 0 <= x <= MAX_HOLDOUT:
        return f"val_holdout must be a number in [0, {MAX_HOLDOUT}] (the share of training records held out as val), got {x!r}"
    return None


def held_out(manifests: list[Any], fraction: float) -> tuple[list[Any], int]:
    """Copies of ``manifests`` whose training records with :func:`share` below ``fraction`` are val records, and how
    many were moved (the manifests given are left as they are)."""
    out, moved = [], 0
    for man in manifests:
        recs = [dataclasses.replace(r, split="val") if r.split == "train" and share(r.id) < fraction else r
                for r in man.records]
        moved += sum(a is not b for a, b in zip(recs, man.records))
        out.append(dataclasses.replace(man, records=recs))
    return out, moved


def kept_train(plan: Any) -> int:
    """The training records left in ``plan``'s manifests."""
    return sum(r.split == "train" for man in plan.manifests for r in man.records)


def hold_out_val(plan: Any, select_data: Any, val_count: Callable[[Any], int]) -> dict[str, Any] | None:
    """Recipe ``auto``'s hold-out (see the module doc) on ``plan`` (a :class:`~anybind.fitting.FitPlan`), before any
    record is encoded: where a trained fit from a ridge start would choose on its own val split and that split has
    fewer than 2 pairs (``val_count(plan)``: :func:`anybind.fitting.val_pairs`' count), ``plan.manifests`` become
    copies with :data:`~anybind.recipe.HOLDOUT` of their training records as val (``TrainConfig.val_holdout`` given:
    that share; 0: none).  Recorded in ``plan.config`` / ``plan.chosen`` and returned (``fraction``, ``moved``,
    ``val_pairs``), logged in one line; None where nothing was held out.  A share given where it cannot apply (a val
    split there, ``select_data``, a training-free method) is refused in one line; too few training records to hold
    out 2 val pairs and keep 3: nothing held out, said in one line."""
    given = "val_holdout" in plan.config
    f = plan.config.get("val_holdout", HOLDOUT)
    if given and (problem := holdout_problem(f)) is not None:
        raise DataError(problem)
    if given and not f:
        return None
    where = ", ".join(str(m.path) for m in plan.manifests)
    if plan.method != "contrastive" or select_data is not None:
        if given:
            raise DataError(f"val_holdout={f!r} holds training records out as the val split a trained fit chooses on; "
                            + ("select_data chooses on another corpus' val: drop one of them" if select_data is not None
                               else f"method={plan.method!r} chooses nothing on them: drop val_holdout"))
        return None
    if not given and (plan.recipe != "auto" or plan.config.get("init") != "ridge"):
        return None
    n = val_count(plan)
    if n < 0:  # nothing trained: the trainer says so
        return None
    if n >= 2:
        if given:
            raise DataError(f"{where}: val_holdout={f!r} holds training records out where the data has no val split, "
                            f"and it has {counted(n, 'val pair')}: drop val_holdout (or the val records)")
        return None
    kept = plan.manifests
    plan.manifests, moved = held_out(kept, float(f))
    m = val_count(plan)
    if m < 2 or kept_train(plan) < 3:
        plan.manifests = kept
        log.warning("%s: no val split, and too few training records to hold %.0f%% of them out as val "
                    "(%s of the trained pair): every choice on val falls back to its default", where, 100 * f,
                    counted(m, "val pair"))
        return None
    plan.config["val_holdout"] = float(f)
    if not given:
        plan.chosen["val_holdout"] = float(f)
    log.info("%s: no val split: %d of its %s (%.0f%%, by a hash of their ids; %s of the trained pair) held out as "
             "val for the fit's choices (val_holdout=0 trains on all of them and chooses blind)", where, moved,
             counted(moved + kept_train(plan), "training record"), 100 * f, counted(m, "val pair"))
    return {"fraction": float(f), "moved": moved, "val_pairs": m}


__all__ = ["MAX_HOLDOUT", "SALT", "held_out", "hold_out_val", "holdout_problem", "kept_train", "share"]

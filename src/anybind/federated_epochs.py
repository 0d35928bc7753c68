"""How many epochs a federation's clients train each round, chosen on their own val pairs (issue 19).

``federate(local_epochs="auto" | "1,3,5" | [1, 3, 5])`` (``anybind federate --local-epochs``) runs one federation per
count, each with the same seed, and keeps the one whose kept round scores highest on the clients' val pairs: the
count-weighted mean of each client's val score, the number and count every client already sends to choose the round
(no record, feature or test item leaves a client, and no test split is read).  A tie goes to the fewer epochs (the
cheaper federation).  Why a choice and not a default: 1 and 5 local epochs rank CreamFL (with FedAvg's step, kd 1)
and FedAvg + public the other way round (BENCHMARKS.md, federated: "5 local epochs ... three seeds").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

#: the counts ``local_epochs="auto"`` tries
AUTO_LOCAL_EPOCHS = (1, 3, 5)
#: val scores closer than this are a tie (float rounding of the same count-weighted mean)
TIE = 1e-9
#: how the count is chosen (recorded in the lineage's ``local_epochs_search``)
LOCAL_EPOCHS_RULE = ("one federation per count, the same seed; the highest clients' val score of its kept round (each "
                     "client's val score and count: aggregates, no record or feature leaves a client); a tie goes to "
                     "the fewer local epochs (scores within 1e-9: float rounding)")


def local_epoch_grid(value: Any) -> tuple[int, ...]:
    """The local-epoch counts a federation tries, ascending: ``(n,)`` for a whole number ``n``,
    :data:`AUTO_LOCAL_EPOCHS` for ``"auto"``, the numbers of ``"1,3,5"`` or of a list; each a whole number >= 1, once
    (else a ValueError naming the value)."""
    items = value
    if isinstance(value, str):
        text = value.strip()
        try:
            items = AUTO_LOCAL_EPOCHS if text == "auto" else [int(p) for p in text.split(",")]
        except ValueError:
            items = None
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if (not items or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in items)
            or len(set(items)) < len(items)):
        raise ValueError(f"local_epochs takes a whole number >= 1, several of them once each ('1,3,5', chosen on the "
                         f"clients' val pairs) or 'auto' ({','.join(map(str, AUTO_LOCAL_EPOCHS))}), got {value!r}")
    return tuple(sorted(int(n) for n in items))


def choose_local_epochs(grid: Sequence[int], vals: Sequence[float | None]) -> int:
    """The place in ``grid`` (ascending counts) of the highest clients' val score ``vals`` (one per count: its
    federation's kept round); a count without a finite score never wins, a tie (within :data:`TIE`) keeps the fewer
    epochs."""
    scored = [(v, n, i) for i, (n, v) in enumerate(zip(grid, vals)) if v is not None and math.isfinite(v)]
    if not scored:
        raise DataError(f"none of the local-epoch counts {','.join(map(str, grid))} could be scored on the clients' val "
                        "pairs (NaN on every one): give one count (local_epochs=N)")
    top = max(v for v, _, _ in scored)
    # equal up to float rounding is a tie (the same val queries right, summed in another order: seed 0 of the bench
    # scored 1 and 3 local epochs 0.7799352750809062 and ...061)
    best = min((n, i) for v, n, i in scored if v >= top - TIE)[1]
    for i, (n, v) in enumerate(zip(grid, vals)):
        log.info("federate: %d local epoch%s: clients' val %s%s", n, "s" if n > 1 else "", v,
                 " (chosen)" if i == best else "")
    return best

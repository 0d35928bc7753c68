"""Grouped splits of a manifest for benchmarks and model selection: k folds whose groups (e.g. records that
share a caption) never straddle folds, and the val/test exchange.

Every assignment is a pure function of the group key (SHA-256), so it is the same on every machine and run,
and adding records never moves the others between folds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

from ..errors import DataError


def unit_hash(key: str) -> float:
    """``key`` -> a number in [0, 1), uniform over keys, from the first 8 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def grouped_folds(manifest: Any, k: int, group: Callable[[Any], str], val_fraction: float = 1 / 8) -> list[Any]:
    """``k`` copies of ``manifest`` over the same records: in copy ``i`` the records whose group hashes to fold
    ``i`` are ``test``; of the rest, the groups whose second hash falls under ``val_fraction`` are ``val``, the
    others ``train``.  ``group(record)`` names a record's group: records of one group always share a split."""
    if k < 2:
        raise DataError(f"grouped_folds: k must be at least 2, got {k}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"grouped_folds: val_fraction must be in [0, 1), got {val_fraction}")
    keys = {r.id: str(group(r)) for r in manifest.records}
    out = []
    for i in range(k):
        recs = []
        for r in manifest.records:
            key = keys[r.id]
            if int(unit_hash(key) * k) == i:
                split = "test"
            else:
                split = "val" if unit_hash(key + "#val") < val_fraction else "train"
            recs.append(dataclasses.replace(r, split=split))
        out.append(dataclasses.replace(manifest, records=recs))
    return out


def swap_val_test(manifest: Any) -> Any:
    """The manifest with its val and test splits exchanged (train untouched)."""
    sw = {"val": "test", "test": "val"}
    return dataclasses.replace(
        manifest, records=[dataclasses.replace(r, split=sw.get(r.split, r.split)) for r in manifest.records]
    )

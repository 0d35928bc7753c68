"""Grouped splits of a manifest for benchmarks and model selection: k folds whose groups (e.g. records that
share a caption) never straddle folds, the val/test exchange, and a train/val/test split by whole group
stratified over a coarser label.

Every fold assignment is a pure function of the group key (SHA-256), so it is the same on every machine and run,
and adding records never moves the others between folds; the stratified split ranks the groups of a stratum by
a seeded SHA-256, so it too is the same everywhere.
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


def stratified_group_split(manifest: Any, group: Callable[[Any], str], stratum: Callable[[Any], str], seed: int = 0,
                           fractions: tuple[float, float] = (0.1, 0.2)) -> Any:
    """The manifest regrouped into train/val/test by whole group, stratified: within each stratum (e.g. an
    instrument family) its groups (e.g. instruments), ordered by a seeded hash, give ``round(n * test)`` to test,
    ``round(n * val)`` to val and the rest to train, at least one each to test and val when the stratum has 3
    groups or more (2 groups: train and test; 1: train), so every stratum reaches every split where it can.
    ``fractions`` = (val, test).  A group whose records fall in several strata is an error."""
    f_val, f_test = fractions
    if f_val < 0 or f_test < 0 or f_val + f_test >= 1:
        raise DataError(f"stratified_group_split: fractions (val, test) must be >= 0 and sum below 1, got {fractions}")
    of: dict[str, str] = {}
    for r in manifest.records:
        g, s = str(group(r)), str(stratum(r))
        if of.setdefault(g, s) != s:
            raise DataError(f"stratified_group_split: record {r.id!r}: group {g!r} lies in strata {of[g]!r} and {s!r}")
    split_of: dict[str, str] = {}
    for s in sorted(set(of.values())):
        gs = sorted((g for g, x in of.items() if x == s), key=lambda g: (unit_hash(f"{seed}:{g}"), g))
        n = len(gs)
        n_test = max(round(n * f_test), 1 if n >= 2 else 0)
        n_val = max(round(n * f_val), 1 if n >= 3 else 0)
        for i, g in enumerate(gs):
            split_of[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return dataclasses.replace(
        manifest, records=[dataclasses.replace(r, split=split_of[str(group(r))]) for r in manifest.records]
    )

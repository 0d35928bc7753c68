"""Passage-level rows (``anybind index --chunk-rows``): a long text indexed as one row per chunk.

A text longer than its encoder's limit is embedded as the pooled mean of its chunks
(:mod:`anybind.encoders.chunks`); with chunk rows each chunk is a row of its own instead, so a search finds
the passage that matches, not only the document.  The record ``doc7`` whose text has three chunks gives the
rows ``doc7#0``, ``doc7#1``, ``doc7#2`` (source: the passage's text, the record's labels); its other
modalities keep the row ``doc7``.  A text within the limit stays one row under its record id.  When a text
changes, the rows of passages it no longer has are deleted (:func:`stale_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

SEP = "#"


def passage_records(records: Sequence[Any], space: Any, modalities: Iterable[str]) -> tuple[list, dict]:
    """(records with every long text split into passage records, ``{modality: {record id: passages}}``, 0
    for a text that stays whole).  Encoders without ``passages`` (images, sounds...) are left as they are."""
    splitters = {m: space.encoder(m).passages for m in modalities if hasattr(space.encoder(m), "passages")}
    out: list = []
    counts: dict[str, dict[str, int]] = {m: {} for m in splitters}
    for r in records:
        values = dict(r.values)
        extra = []
        for m, split in splitters.items():
            if m not in values:
                continue
            parts = split(values[m])
            counts[m][r.id] = len(parts) if len(parts) > 1 else 0
            if len(parts) > 1:
                del values[m]
                extra += [replace(r, id=f"{r.id}{SEP}{k}", values={m: p}) for k, p in enumerate(parts)]
        if values:
            out.append(replace(r, values=values) if len(values) != len(r.values) else r)
        out += extra
    return out, counts


def stale_rows(existing: Iterable[tuple[str, str]], counts: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """``{modality: [row ids]}`` to delete before adding: a record's whole-text row when it now has passages,
    and the passage rows beyond its passages now (all of them when its text is whole again)."""
    stale: dict[str, list[str]] = {}
    for rid, m in existing:
        n = counts.get(m, {})
        base, sep, k = rid.rpartition(SEP)
        if rid in n:  # a record of this run (never mistaken for a passage, whatever its id)
            if n[rid] > 0:
                stale.setdefault(m, []).append(rid)
        elif sep and k.isdigit() and base in n and int(k) >= n[base]:
            stale.setdefault(m, []).append(rid)
    return stale

"""Calibrated match probabilities on search and classify results (issue 20; see :mod:`anybind.calibrators`).

When the index's space is calibrated and the query is of one modality (one or several items of it, no
raw vector), every hit gets ``probability``: ``P(match)`` of its score for the pair (query modality,
hit modality), at the calibration's stated prior 0.5.  Scores re-scored by a hubness correction
(``rerank``) are no longer the space's scores: such hits get no probability.

``rank_by="probability"`` ranks a search returning several modalities by that probability instead of
the raw score, so that the modality gap (texts scoring ~0.58 and images ~0.38 for the same query)
no longer decides which modality fills the top: each target modality is searched for ``k`` hits,
then the lists are merged by probability.  A hit whose modality pair with the query was not calibrated
(no val records pair them: e.g. text hits for a text query, where "match" has no ground truth) has no
probability and follows the calibrated hits, by score; restrict ``modality=`` to leave such hits out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .errors import QueryError
from .results import Hit

if TYPE_CHECKING:
    from ..space import Space

RANK_BY = ("score", "probability")


def query_modality(space: "Space | None", query_mods: Sequence[str], has_vector: bool, rerank: str | None) -> str | None:
    """The one modality whose calibration scores this query's hits, or ``None`` (no probabilities)."""
    if space is None or space.calibration is None or has_vector or len(query_mods) != 1:
        return None
    from ..errors import DataError
    from ..rerank import check_method

    try:
        reranked = check_method(rerank) is not None
    except DataError:  # an unknown method: the search refuses it
        reranked = True
    return None if reranked else query_mods[0]


def check_rank_by(rank_by: str, qmod: str | None, space: "Space | None") -> str:
    """``rank_by`` checked: ``"probability"`` needs a calibrated space and a one-modality query."""
    if rank_by not in RANK_BY:
        raise QueryError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    if rank_by == "probability" and qmod is None:
        why = ("the space is not calibrated (anybind calibrate SPACE MANIFEST)"
               if space is None or space.calibration is None else
               "the query must be of one modality, without a raw vector or a rerank")
        raise QueryError(f"rank_by='probability': {why}")
    return rank_by


def probabilities(space: "Space", qmod: str, target: str, scores: np.ndarray) -> np.ndarray | None:
    """``P(match)`` of scores of ``qmod`` queries against ``target`` items; ``None`` for an uncalibrated pair."""
    cal = space.calibration.get(qmod, target) if space.calibration is not None else None
    return None if cal is None else cal.probability(np.asarray(scores, np.float64))


def rank_hits(space: "Space | None", hits: list[Hit], qmod: str | None, k: int, rank_by: str = "score") -> list[Hit]:
    """Hits with their probabilities (when ``qmod`` is given), best ``k`` by ``rank_by``, ranks renumbered."""
    if qmod is not None:
        out = []
        for h in hits:
            p = probabilities(space, qmod, h.modality, np.array([h.score]))
            out.append(h if p is None else replace(h, probability=float(p[0])))
        hits = out
    if rank_by == "probability":
        hits = sorted(hits, key=lambda h: (0, -h.probability) if h.probability is not None else (1, -h.score))
    else:
        hits = sorted(hits, key=lambda h: -h.score)
    return [h if h.rank == r + 1 else replace(h, rank=r + 1) for r, h in enumerate(hits[:k])]  # copied to renumber


def with_class_probabilities(space: "Space | None", row: dict, text_modality: str) -> dict:
    """A classify result row (``{"id", "modality", "classes": [(name, score), ...]}``) with ``probabilities``:
    each class's calibrated ``P(match)`` (item modality vs ``text_modality``), when the space has it."""
    if space is None or space.calibration is None:
        return row
    p = probabilities(space, row["modality"], text_modality, np.array([s for _, s in row["classes"]]))
    if p is not None:
        row["probabilities"] = [float(x) for x in p]
    return row

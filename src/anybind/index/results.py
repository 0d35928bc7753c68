"""What index calls hand back: :class:`Hit` (one search result) and :class:`AddStats` (what an add did)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Hit:
    """One search result (slotted: a search makes ``k`` of them per query, and a slotted one is made faster)."""

    id: str
    modality: str
    score: float
    source: str
    labels: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    #: P(match) when the space is calibrated (:mod:`anybind.index.calibrated`); absent from to_dict() when None
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["probability"] is None:
            del d["probability"]
        return d


@dataclass
class AddStats:
    """What :meth:`Index.add` did: rows added, content-updated, relabelled, unchanged; items embedded."""

    added: int = 0
    updated: int = 0
    relabelled: int = 0
    unchanged: int = 0
    embedded: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (record id, why): not decodable, skipped

    @property
    def total_embedded(self) -> int:
        return sum(self.embedded.values())

"""What an encode run did (:class:`EncodeReport`) and the encoder it runs (:func:`cached_encoder`), shared by
the single-process path (:mod:`anybind.scale.encode`) and the Ray path (:mod:`anybind.scale.encode_ray`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoders.base import Encoder, derived_parts
from ..encoders.registry import get_encoder
from ..errors import EncoderError


@dataclass
class EncodeReport:
    """What one encode run did."""

    spec: str
    identity: str
    mode: str  # "local" | "ray"
    requested: int = 0
    unique: int = 0  # distinct contents
    hits: int = 0  # already in the cache
    encoded: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    shards: int = 0  # shards written by the Ray path
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        s = (
            f"{self.spec} ({self.mode}): {self.requested} items, {self.unique} distinct, {self.hits} already cached, "
            f"{self.encoded} encoded in {self.seconds:.1f} s"
        )
        if self.encoded:
            s += f" ({self.items_per_second:.1f} items/s)"
        if self.failed:
            s += f", {len(self.failed)} failed"
        return s


def cached_encoder(encoder: Encoder | str) -> Encoder:
    """The encoder whose features the cache stores (a derived ``+bridge`` encoder caches its base's).

    An ensemble (``image:concat(...)``) is cached as its parts, each under its own identity: it is refused in
    one line naming them (encode each part on its own; the ensemble then reads them from the cache)."""
    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    parts = derived_parts(enc)
    if parts and len(parts) > 1:
        raise EncoderError(f"{enc.spec}: an ensemble is cached as its parts; encode each on its own "
                           f"({', '.join(p.spec for p in parts)})")
    return cached_encoder(parts[0]) if parts else enc

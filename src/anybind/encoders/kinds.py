"""What a manifest field holds, as the encoder bound to it says (a path, a text, a lookup key)."""

from __future__ import annotations

from collections.abc import Mapping

from ..data.manifest import modality_kind
from .registry import get_encoder


def manifest_kinds(encoders: Mapping[str, str] | None) -> dict[str, str]:
    """Manifest field kinds implied by encoder specs (a ``vectors:`` modality holds keys, ...)."""
    kinds = {}
    for m, spec in (encoders or {}).items():
        enc_kind = None
        if spec.startswith("vectors:"):
            enc_kind = "key"
        elif spec.startswith("text:"):
            enc_kind = "text"
        elif spec.startswith("callable:") or modality_kind(m) is None:
            # a user's encoder (a plugin, a callable) says what its manifest values are
            enc_kind = getattr(get_encoder(spec), "input_kind", "file")
        if enc_kind:
            kinds[m] = enc_kind
    return kinds

"""Loading the manifests a fit, a merge or a binding reads: the fields to bind, their kinds from the encoders,
bad records reported (one warning per manifest) and the manifests already loaded passed through."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .data.fields import fields_to_bind
from .data.manifest import Manifest, Record, load_manifest
from .encoders.kinds import manifest_kinds

log = logging.getLogger(__name__)


def fit_manifests(manifest, modalities, encoders, strict, progress) -> tuple[list[Manifest], list[str]]:
    """What a fit reads: the manifests, loaded with only the fields it binds, and those fields (``modalities``
    checked against the manifests, else the base modalities: :func:`~anybind.data.fields.fields_to_bind`)."""
    items = list(manifest) if isinstance(manifest, (list, tuple)) else [manifest]
    mods = fields_to_bind(items, modalities, manifest_kinds(encoders), named=encoders or ())
    return as_manifests(items, mods, encoders, strict, progress), mods


def as_manifests(manifest, modalities, encoders, strict, progress) -> list[Manifest]:
    items = manifest if isinstance(manifest, (list, tuple)) else [manifest]
    kinds = manifest_kinds(encoders)
    out = []
    for it in items:
        if isinstance(it, Manifest):
            out.append(it)
        else:
            man = load_manifest(it, strict=strict, modalities=modalities, kinds=kinds, progress=progress)
            if man.bad:
                log.warning(man.report())
            out.append(man)
    return out


def records_with(records: Sequence[Record], *modalities: str) -> list[Record]:
    return [r for r in records if all(r.has(m) for m in modalities)]

"""Encoding a corpus into the feature cache: in this process, or as a Ray Data pipeline.

Both paths write the same thing: shards of the :class:`~anybind.cache.FeatureCache`
(``<cache>/<identity hash>/shards/*.safetensors``, a ``vectors`` matrix and its rows'
content keys), so ``fit``, ``eval`` and ``index`` read them whichever path wrote them.

The Ray pipeline (:func:`encode_items` with ``ray=True``)::

    content keys (map tasks, file hashing)  ->  driver: drop what the cache already has
    -> decode (map tasks, ``Encoder.load``)  ->  encode (actor pool, ``encode_loaded``)
    -> each actor commits one shard per batch of ``shard_size`` rows (atomic rename)

A worker that dies loses at most the shard it was filling (Ray restarts it and retries
that batch); a job that fails keeps every committed shard, and a rerun encodes only
what is missing.  Items that cannot be decoded are reported by name and counted, the
others still get encoded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cache import FeatureCache
from ..encoders.base import Encoder
from ..errors import DataError
from . import ray_session
from .encode_report import EncodeReport, cached_encoder

#: rows per shard the Ray path commits (the single-process path uses the cache's chunk_size)
DEFAULT_SHARD_SIZE = 256
#: the single-process path hands the cache at most this many items at a time (bounded memory)
LOCAL_CHUNK_ITEMS = 50_000


def encode_items(
    encoder: Encoder | str,
    items: Sequence[Any],
    cache: FeatureCache | str | Path | None = None,
    *,
    ray: bool | str = False,
    batch_size: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    concurrency: int = 2,
    num_gpus: float = 0.0,
    cpus_per_actor: float | None = None,
    progress: bool = True,
) -> EncodeReport:
    """Encode ``items`` (texts, file paths or keys) into the feature cache; nothing is returned but a report.

    ``ray``: ``False`` encodes here (decoding overlapped with the forward pass, chunks
    committed as they finish); ``True``/``"local"`` a local Ray, or a cluster address
    (``"auto"``, ``"head:6379"``; not ``ray://``: Ray Data needs a real driver).  Ray options:
    ``batch_size`` (items per forward pass, default the encoder's), ``shard_size`` (rows per committed shard),
    ``concurrency`` (encoder actors), ``num_gpus`` (per actor: Ray reserves them and sets
    ``CUDA_VISIBLE_DEVICES``; default one when the process's device is CUDA, see
    :mod:`anybind.encoders.device`, whose device and precision the actors run with), ``cpus_per_actor`` (default: one, or a share of the CPUs that leaves room
    for decoding).
    """
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    enc = cached_encoder(encoder)
    if ray is False or ray is None:
        return _encode_local(enc, items, fc, progress)
    address = None if ray is True else str(ray)
    from .encode_ray import encode_ray  # Ray is imported only when asked for

    with ray_session(address):
        return encode_ray(
            enc, items, fc, batch_size=batch_size, shard_size=shard_size, concurrency=concurrency,
            num_gpus=num_gpus, cpus_per_actor=cpus_per_actor, progress=progress,
        )


# ----------------------------------------------------------------------------- single process
def _encode_local(enc: Encoder, items: Sequence[Any], fc: FeatureCache, progress: bool) -> EncodeReport:
    t0 = time.perf_counter()
    rep = EncodeReport(spec=enc.spec, identity=enc.identity, mode="local", requested=len(items))
    uniq = list(dict.fromkeys(str(x) if isinstance(x, Path) else x for x in items))
    n_chunks = max(1, math.ceil(len(uniq) / LOCAL_CHUNK_ITEMS))
    for c in range(n_chunks):
        chunk = uniq[c * LOCAL_CHUNK_ITEMS : (c + 1) * LOCAL_CHUNK_ITEMS]
        desc = f"encoding {enc.spec}" + (f" ({c + 1}/{n_chunks})" if n_chunks > 1 else "")
        bad: dict[int, str] = {}
        fc.encode(enc, chunk, progress=progress, description=desc, bad=bad)
        rep.failed += [(str(chunk[i]), why) for i, why in sorted(bad.items())]
        fc.unload()  # bounded memory: the vectors are on disk
        st = fc.last_stats
        rep.unique += st.unique
        rep.hits += st.hits + st.derived  # cached, or computed from the cached source (a clip's frame sequence)
        rep.encoded += st.encoded
    rep.seconds = time.perf_counter() - t0
    return rep


# ----------------------------------------------------------------------------- manifests
def manifest_items(manifest, modality: str) -> tuple[list[str], dict[str, list[str]]]:
    """The values of one modality field, and for each value the ids of the records holding it."""
    items: list[str] = []
    owners: dict[str, list[str]] = {}
    for r in manifest.records:
        if modality in r.values:
            v = r.values[modality]
            if v not in owners:
                items.append(v)
            owners.setdefault(v, []).append(r.id)
    return items, owners


def default_modality(spec: str, fields: Sequence[str]) -> str:
    """The manifest field an encoder reads when ``--modality`` is not given (``image:...`` -> ``image``)."""
    prefix = spec.split(":", 1)[0]
    if prefix in fields:
        return prefix
    raise DataError(
        f"which field should {spec} encode? the manifest has {', '.join(fields) or 'no modality fields'}: "
        "give --modality NAME"
    )


def encode_manifest(
    manifest: str | Path,
    encoder: str,
    modality: str | None = None,
    cache: FeatureCache | str | Path | None = None,
    *,
    ray: bool | str = False,
    strict: bool = False,
    progress: bool = True,
    **kw: Any,
):
    """Encode one modality field of a manifest into the cache; returns ``(report, manifest, owners)``.

    The manifest is validated first (bad records reported and skipped, or fatal with
    ``strict``); in Ray mode media are decoded by the workers only (undecodable files
    come back in ``report.failed``), not once more on the driver.
    """
    from ..data.manifest import load_manifest
    from ..encoders.kinds import manifest_kinds

    path = Path(manifest)
    if modality is None:
        head = load_manifest(path, check_media=False, kinds=manifest_kinds({}))
        modality = default_modality(encoder, head.modalities)
    kinds = manifest_kinds({modality: encoder})
    man = load_manifest(path, strict=strict, modalities=[modality], kinds=kinds,
                        check_media=ray is False or ray is None, progress=progress)
    items, owners = manifest_items(man, modality)
    if not items:
        raise DataError(f"{path}: no valid record has the field {modality!r}")
    rep = encode_items(encoder, items, cache, ray=ray, progress=progress, **kw)
    return rep, man, owners

"""Writing training shards (:mod:`anybind.scale.stream` reads them): :class:`ShardWriter`, the one streaming
pass over manifests and the feature cache (:func:`write_training_shards`), and synthetic shards for benches
(:func:`write_synthetic_shards`)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..progress import progress_bar
from .stream import DEFAULT_ROWS_PER_SHARD, FORMAT, FORMAT_VERSION, META, SPLIT_CODES, TrainingShards, combo


def _counts(split: np.ndarray, has: Mapping[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Rows per split having each modality and each pair of modalities (what streams and epochs need)."""
    out: dict[str, dict[str, int]] = {}
    mods = sorted(has)
    for name, code in SPLIT_CODES.items():
        s = split == code
        c = {"rows": int(s.sum())}
        for m in mods:
            c[m] = int((s & has[m]).sum())
        for a, b in itertools.combinations(mods, 2):
            c[combo((a, b))] = int((s & has[a] & has[b]).sum())
        out[name] = c
    return out


# ----------------------------------------------------------------------------- writing
class ShardWriter:
    """Writes shards of joined features into a folder, then its ``shards.json``."""

    def __init__(self, folder: Path, dims: Mapping[str, int], dtype: str = "float32"):
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        self.folder = Path(folder)
        self.dims = dict(dims)
        self.dtype = dtype
        self.shards: list[dict[str, Any]] = []

    def add(self, ids: Sequence[str], split: np.ndarray, feats: Mapping[str, np.ndarray], has: Mapping[str, np.ndarray]) -> None:
        from safetensors.numpy import save_file

        n = len(ids)
        if n == 0:
            return
        tensors: dict[str, np.ndarray] = {"split": np.asarray(split, np.uint8)}
        for m, d in self.dims.items():
            X = np.asarray(feats[m])
            if X.shape != (n, d):
                raise DataError(f"modality {m!r}: features of shape {X.shape}, expected ({n}, {d})")
            tensors[f"x.{m}"] = np.ascontiguousarray(X, dtype=self.dtype)
            tensors[f"has.{m}"] = np.asarray(has[m], np.uint8)
        name = f"{len(self.shards):06d}.safetensors"
        save_file(tensors, str(self.folder / name), metadata={"ids": json.dumps(list(ids))})
        self.shards.append({
            "file": name, "rows": n,
            "counts": _counts(tensors["split"], {m: tensors[f"has.{m}"] > 0 for m in self.dims}),
        })

    def finish(self, **extra: Any) -> dict[str, Any]:
        from ..io import atomic_write_bytes

        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "modalities": sorted(self.dims),
            "dims": self.dims, "dtype": self.dtype, "shards": self.shards, **extra,
        }
        atomic_write_bytes(self.folder / META, json.dumps(meta, indent=1, sort_keys=True).encode())
        return meta


def _records(manifests) -> list:
    """Every record of every manifest; an id used by two corpora is disambiguated (as FeatureSet does)."""
    out, seen = [], set()
    for man in manifests:
        for r in man.records:
            if r.id in seen:
                r = copy.copy(r)
                r.id = f"{man.path.parent.name}:{r.id}"
            seen.add(r.id)
            out.append(r)
    return out


def write_training_shards(
    manifests: Sequence,
    specs: Mapping[str, str],
    cache=None,
    out: str | Path | None = None,
    *,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    dtype: str = "float32",
    progress: bool = True,
) -> TrainingShards:
    """Join the cached features of loaded manifests into training shards (bounded memory); reuse them when unchanged.

    ``specs``: modality -> encoder spec.  Features missing from the cache are encoded
    here (single process; encode them first with :func:`anybind.scale.encode.encode_items`
    to do that on Ray).  ``out`` defaults to ``<cache>/training/<hash>``, the hash
    covering the manifests' content, the encoder identities and the layout.
    """
    from ..cache import FeatureCache
    from ..encoders.registry import get_encoder
    from ..io import atomic_write_dir

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    mods = sorted(specs)
    encs = {m: get_encoder(specs[m]) for m in mods}
    identities = {m: encs[m].identity for m in mods}
    h = hashlib.sha256(json.dumps({
        "data": [man.fingerprint(mods) for man in manifests], "identities": identities,
        "rows_per_shard": rows_per_shard, "dtype": dtype, "format_version": FORMAT_VERSION,
    }, sort_keys=True).encode()).hexdigest()[:20]
    out = Path(out) if out is not None else fc.root / "training" / h
    if (out / META).is_file():
        try:
            ts = TrainingShards.open(out)
            if ts.meta.get("source_hash") == h:
                return ts
        except DataError:
            pass  # damaged: rebuilt below
    records = _records(manifests)
    if not records:
        raise DataError("no valid records to train on")
    for m in mods:
        if not any(m in r.values for r in records):
            raise DataError(f"no valid record has modality {m!r}")
    dims = {}  # from one item each: a callable encoder knows its width only once it ran
    for m in mods:
        first = next(r.values[m] for r in records if m in r.values)
        dims[m] = int(fc.encode(encs[m], [first], progress=False).shape[1])

    def write(tmp: Path) -> None:
        writer = ShardWriter(tmp, dims, dtype=dtype)
        with progress_bar(progress, "writing training shards", len(records)) as bar:
            for c0 in range(0, len(records), rows_per_shard):
                chunk = records[c0 : c0 + rows_per_shard]
                feats, has = {}, {}
                for m in mods:
                    sel = [i for i, r in enumerate(chunk) if m in r.values]
                    X = fc.encode(encs[m], [chunk[i].values[m] for i in sel], progress=False) if sel else None
                    fc.unload()
                    full = np.zeros((len(chunk), dims[m]), np.float32)
                    if X is not None:
                        full[sel] = X
                    feats[m] = full
                    has[m] = np.isin(np.arange(len(chunk)), sel)
                split = np.array([SPLIT_CODES[r.split] for r in chunk], np.uint8)
                writer.add([r.id for r in chunk], split, feats, has)
                bar.advance(len(chunk))
        writer.finish(specs=dict(specs), identities=identities, source_hash=h,
                      sources=[str(man.path) for man in manifests])

    atomic_write_dir(out, write, kind="training-shards", overwrite=True)  # stale shards are replaced, nothing else
    return TrainingShards.open(out)


def write_synthetic_shards(
    out: str | Path,
    rows: int,
    *,
    dims: Mapping[str, int] | None = None,
    latent: int = 16,
    noise: float = 0.5,
    val_rows: int = 1000,
    rows_per_shard: int = 65536,
    dtype: str = "float16",
    seed: int = 0,
    progress: bool = False,
) -> TrainingShards:
    """A deterministic synthetic paired feature set on disk (for scale benchmarks).

    Row ``i`` has a latent ``z_i ~ N(0, I_latent)``; modality ``m``'s features are
    ``z_i @ W_m + noise * eps`` with a fixed random ``W_m``: learnable, alignable pairs.
    The first ``val_rows`` rows are the val split, the rest train.  Generated shard by
    shard (each from its own seeded generator): memory is one shard.
    """
    from ..io import atomic_write_dir

    dims = dict(dims or {"a": 64, "b": 64})
    rng = np.random.default_rng(seed)
    W = {m: (rng.normal(size=(latent, d)) / math.sqrt(latent)).astype(np.float32) for m, d in sorted(dims.items())}
    n_shards = max(1, math.ceil(rows / rows_per_shard))

    def write(tmp: Path) -> None:
        writer = ShardWriter(tmp, dims, dtype=dtype)
        with progress_bar(progress, "writing synthetic shards", rows) as bar:
            for s in range(n_shards):
                r0, r1 = s * rows_per_shard, min(rows, (s + 1) * rows_per_shard)
                g = np.random.default_rng([seed, s])
                z = g.standard_normal((r1 - r0, latent), dtype=np.float32)
                feats = {m: z @ W[m] + noise * g.standard_normal((r1 - r0, d), dtype=np.float32) for m, d in sorted(dims.items())}
                has = {m: np.ones(r1 - r0, bool) for m in dims}
                split = np.where(np.arange(r0, r1) < val_rows, SPLIT_CODES["val"], SPLIT_CODES["train"]).astype(np.uint8)
                writer.add([f"r{i}" for i in range(r0, r1)], split, feats, has)
                bar.advance(r1 - r0)
        writer.finish(specs={m: f"synthetic:{m}" for m in dims}, identities={m: f"synthetic:{m}|seed={seed}" for m in dims},
                      synthetic={"rows": rows, "latent": latent, "noise": noise, "seed": seed})

    atomic_write_dir(Path(out), write, kind="training-shards", overwrite=True)
    return TrainingShards.open(out)


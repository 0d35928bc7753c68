"""The feature cache: each (encoder identity, item content) is encoded once.

Layout on disk::

    <root>/<sha256(identity)[:20]>/identity.txt
    <root>/<sha256(identity)[:20]>/shards/<n>-<random>.safetensors

A shard holds a ``vectors`` float32 matrix and, in its safetensors metadata,
the content keys of its rows (``"f:<sha256 of file bytes>"``,
``"s:<sha256 of text>"`` or ``"k:<lookup key>"``).  Shards are written to a
temporary name and renamed into place, so a killed encode loses at most the
chunk it was working on and a rerun encodes only what is missing.  Another
encoder identity (new weights, new preprocessing) gets its own folder: old
entries are never served for it.  Shards are also what distributed encoding
writes and what training reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoders.base import Encoder
from .errors import DataError
from .io import default_cache_dir  # noqa: F401  (re-exported: it was defined here)
from .io import atomic_write_bytes, atomic_write_dir  # noqa: F401 -- re-exported (they used to live here)


@dataclass
class EncodeStats:
    requested: int = 0
    unique: int = 0
    hits: int = 0
    encoded: int = 0
    failed: int = 0


class FeatureCache:
    """On-disk cache of encoder features, keyed by encoder identity and item content.

    >>> cache = FeatureCache("~/.cache/anybind/features")
    >>> X = cache.encode(get_encoder("text:minilm"), ["a dog", "a cat"])
    """

    def __init__(self, root: str | Path | None = None, chunk_size: int = 256):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.chunk_size = chunk_size
        self._index: dict[str, dict[str, tuple[Path, int]]] = {}
        self._shard_data: dict[Path, np.ndarray] = {}
        self.last_stats = EncodeStats()

    # -- layout ---------------------------------------------------------
    def folder(self, identity: str) -> Path:
        return self.root / hashlib.sha256(identity.encode()).hexdigest()[:20]

    def _load_index(self, identity: str) -> dict[str, tuple[Path, int]]:
        if identity in self._index:
            return self._index[identity]
        idx: dict[str, tuple[Path, int]] = {}
        shards = self.folder(identity) / "shards"
        if shards.is_dir():
            from safetensors import safe_open

            for p in sorted(shards.glob("*.safetensors")):
                try:
                    with safe_open(str(p), "np") as f:
                        keys = json.loads((f.metadata() or {}).get("keys", "[]"))
                except Exception:  # a shard damaged by the disk, not by us: ignore, it is re-encoded
                    continue
                for row, k in enumerate(keys):
                    idx.setdefault(k, (p, row))
        self._index[identity] = idx
        return idx

    def _write_shard(self, identity: str, keys: list[str], vectors: np.ndarray) -> Path:
        from safetensors.numpy import save

        folder = self.folder(identity)
        idfile = folder / "identity.txt"
        if not idfile.exists():
            atomic_write_bytes(idfile, identity.encode())
        n = len(list((folder / "shards").glob("*.safetensors"))) if (folder / "shards").is_dir() else 0
        path = folder / "shards" / f"{n:06d}-{uuid.uuid4().hex[:8]}.safetensors"
        blob = save({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, metadata={"keys": json.dumps(keys)})
        atomic_write_bytes(path, blob)
        idx = self._load_index(identity)
        for row, k in enumerate(keys):
            idx.setdefault(k, (path, row))
        self._shard_data[path] = np.asarray(vectors, dtype=np.float32)
        return path

    def _vector(self, path: Path, row: int) -> np.ndarray:
        if path not in self._shard_data:
            from safetensors.numpy import load_file

            self._shard_data[path] = load_file(str(path))["vectors"]
        return self._shard_data[path][row]

    def count(self, identity: str) -> int:
        return len(self._load_index(identity))

    def keys(self, identity: str) -> "set[str]":
        """The content keys cached for an encoder identity (as of the last scan of its shards)."""
        return set(self._load_index(identity))

    def write_shard(self, identity: str, keys: list[str], vectors: np.ndarray) -> Path:
        """Commit one shard of finished vectors (atomically), without keeping it in memory.

        What distributed encoding (:mod:`anybind.scale`) calls from its workers: the
        shard has exactly the layout and keys :meth:`encode` writes.
        """
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        path = self._write_shard(identity, list(keys), vectors)
        self._shard_data.pop(path, None)
        return path

    def unload(self) -> None:
        """Drop the shard data held in memory (bounded-memory readers call it between chunks)."""
        self._shard_data.clear()

    def rescan(self, identity: str | None = None) -> None:
        """Forget the in-memory index so the next lookup sees shards written by other processes."""
        if identity is None:
            self._index.clear()
        else:
            self._index.pop(identity, None)

    # -- the main entry point -------------------------------------------
    def encode(
        self,
        encoder: Encoder,
        items: Sequence[Any],
        *,
        progress: bool = True,
        description: str | None = None,
        workers: int = 2,
    ) -> np.ndarray:
        """Features for ``items`` (texts, paths or keys), encoding only what is missing.

        Items are deduplicated by content.  Misses are encoded chunk by chunk;
        each finished chunk is committed to disk before the next starts, and
        decoding of the next batch overlaps with the model's forward pass.
        Returns float32 ``(len(items), encoder.dim)``; ``last_stats`` says how
        many items were served from the cache and how many were encoded.
        """
        base = getattr(encoder, "base_encoder", None)
        if base is not None and hasattr(encoder, "derive"):
            # a derived encoder (e.g. +bridge): cache the base features, recompute the cheap derivation
            return encoder.derive(self.encode(base, items, progress=progress, description=description, workers=workers))
        identity = encoder.identity
        idx = self._load_index(identity)
        keys = [encoder.content_key(it) for it in items]
        stats = EncodeStats(requested=len(items))
        first: dict[str, Any] = {}
        for k, it in zip(keys, items):
            first.setdefault(k, it)
        stats.unique = len(first)
        missing = [k for k in first if k not in idx]
        stats.hits = stats.unique - len(missing)
        if missing:
            self._encode_missing(encoder, identity, missing, first, progress, description, workers)
        stats.encoded = len(missing)
        self.last_stats = stats
        if not items:
            return np.zeros((0, encoder.dim), np.float32)
        return np.stack([self._vector(*idx[k]) for k in keys]).astype(np.float32, copy=False)

    def _encode_missing(self, encoder, identity, missing, first, progress, description, workers) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bs = max(1, encoder.batch_size)
        desc = description or f"encoding {encoder.spec}"
        cols = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} items/s"),
            TimeRemainingColumn(),
        ]
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="anybind-decode")
        import time

        t0 = time.perf_counter()
        done = 0
        with Progress(*cols, disable=not progress, transient=False) as prog:
            task = prog.add_task(desc, total=len(missing), rate="-")
            for c0 in range(0, len(missing), self.chunk_size):
                chunk = missing[c0 : c0 + self.chunk_size]
                batches = [chunk[i : i + bs] for i in range(0, len(chunk), bs)]
                # decode batch i+1 while the model works on batch i
                futures = [pool.submit(self._load_batch, encoder, b, first) for b in batches[:1]]
                outs = []
                for bi, b in enumerate(batches):
                    if bi + 1 < len(batches):
                        futures.append(pool.submit(self._load_batch, encoder, batches[bi + 1], first))
                    loaded = futures[bi].result()
                    outs.append(encoder._check(encoder.encode_loaded(loaded), len(loaded)))
                    done += len(b)
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    prog.update(task, advance=len(b), rate=f"{rate:.1f}")
                self._write_shard(identity, list(chunk), np.concatenate(outs, axis=0))
        pool.shutdown()

    @staticmethod
    def _load_batch(encoder: Encoder, keys: list[str], first: dict[str, Any]) -> list[Any]:
        out = []
        for k in keys:
            try:
                out.append(encoder.load(first[k]))
            except DataError as e:
                raise DataError(f"{encoder.spec}: cannot decode {first[k]!s}: {e}") from None
        return out

"""The feature cache: each (encoder identity, item content) is encoded once.

Layout on disk::

    <root>/<sha256(identity)[:20]>/identity.txt
    <root>/<sha256(identity)[:20]>/shards/<n>-<time ns>-<random>.safetensors

A shard holds a ``vectors`` float32 matrix and, in its safetensors metadata,
the content keys of its rows (``"f:<sha256 of file bytes>"``,
``"s:<sha256 of text>"`` or ``"k:<lookup key>"``).  Shards are written to a
temporary name and renamed into place, so a killed encode loses at most the
chunk it was working on and a rerun encodes only what is missing.  Another
encoder identity (new weights, new preprocessing) gets its own folder: old
entries are never served for it.  Shards are also what distributed encoding
writes and what training reads.  Two processes encoding the same items side by
side both write them, not always to the same bits (kernels depend on thread
counts and batch shapes); the first shard by name (the order they were written)
serves a key, to every reader and to the run that encoded it.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoders.base import Encoder, cache_source, derived_parts
from .encoders.batching import encode_adaptive
from .encoders.device import cache_identity
from .errors import DataError, Reason
from .io import default_cache_dir  # noqa: F401  (re-exported: it was defined here)
from .io import atomic_write_bytes, atomic_write_dir  # noqa: F401 -- re-exported (they used to live here)
from .progress import progress_bar


@dataclass
class EncodeStats:
    requested: int = 0
    unique: int = 0
    hits: int = 0
    encoded: int = 0
    failed: int = 0
    #: computed from another encoder's cached features (a video clip's mean from its frame sequence), not encoded
    derived: int = 0


class FeatureCache:
    """On-disk cache of encoder features, keyed by encoder identity and item content.

    >>> cache = FeatureCache("~/.cache/anybind/features")
    >>> X = cache.encode(get_encoder("text:minilm"), ["a dog", "a cat"])
    """

    def __init__(self, root: str | Path | None = None, chunk_size: int = 256):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.chunk_size = chunk_size
        #: items per forward pass at least (when that many are missing); 0: the encoder's own ``batch_size``
        self.min_forward_batch = 0
        self._index: dict[str, dict[str, tuple[Path, int]]] = {}
        self._seen: dict[str, set[Path]] = {}  # the shard files each identity's index has read or written
        self._shard_data: dict[Path, np.ndarray] = {}
        self.last_stats = EncodeStats()

    # -- layout ---------------------------------------------------------
    def folder(self, identity: str) -> Path:
        return self.root / hashlib.sha256(identity.encode()).hexdigest()[:20]

    def _load_index(self, identity: str) -> dict[str, tuple[Path, int]]:
        if identity in self._index:
            return self._index[identity]
        idx: dict[str, tuple[Path, int]] = {}
        seen = self._seen[identity] = set()
        shards = self.folder(identity) / "shards"
        if shards.is_dir():
            from safetensors import safe_open

            for p in sorted(shards.glob("*.safetensors")):
                seen.add(p)
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
        blob = save({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, metadata={"keys": json.dumps(keys)})
        # named when written (the clock after the count): shards sort in the order they were written, even two
        # that counted the same n side by side, so "the first shard holding a key serves it" is one stable rule
        path = folder / "shards" / f"{n:06d}-{time.time_ns():019d}-{uuid.uuid4().hex[:8]}.safetensors"
        atomic_write_bytes(path, blob)
        idx = self._load_index(identity)
        self._seen[identity].add(path)
        for row, k in enumerate(keys):
            idx.setdefault(k, (path, row))
        self._shard_data[path] = np.asarray(vectors, dtype=np.float32)
        return path

    def _settle(self, identity: str) -> dict[str, tuple[Path, int]]:
        """The index to serve from after encoding: rescanned when shards this index has not read appeared
        meanwhile.  Another process may have written some of the same items (its own encoding: not always the
        same bits, the kernels depend on threads and batch shapes); the first shard holding a key is what every
        later run reads, so the run that encoded serves it too, and its numbers are the cached reruns'."""
        shards = self.folder(identity) / "shards"
        now = set(shards.glob("*.safetensors")) if shards.is_dir() else set()
        if now - self._seen.get(identity, set()):
            self.rescan(identity)
        return self._load_index(identity)

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

    def vectors(self, identity: str) -> dict[str, np.ndarray]:
        """Every vector cached for an encoder identity, by content key (as of the last scan of its shards; the
        first shard holding a key serves it, as for :meth:`cached`): e.g. to compare two caches of one encoder."""
        return {k: self._vector(p, r) for k, (p, r) in self._load_index(identity).items()}

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

    def cached(self, encoder: Encoder, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Features of content ``keys`` (``encoder.content_key`` values) from the cache only, never encoding:
        float32 ``(len(keys), dim)`` and the positions of the keys not cached (their rows are NaN).
        A derived encoder (``+bridge``) looks up its base's features and derives them."""
        parts = derived_parts(encoder)
        if parts:
            found = [self.cached(p, keys) for p in parts]
            missing = sorted(set().union(*(m for _, m in found)))
            X = np.full((len(keys), encoder.dim), np.nan, np.float32)
            ok = np.setdiff1d(np.arange(len(keys)), missing)
            if len(ok):
                X[ok] = encoder.derive(*(B[ok] for B, _ in found))
            return X, missing
        idx = self._load_index(cache_identity(encoder))  # as encode: the precision's own entries
        X = np.full((len(keys), encoder.dim), np.nan, np.float32)
        missing = []
        for i, k in enumerate(keys):
            if k in idx:
                X[i] = self._vector(*idx[k])
            else:
                missing.append(i)
        if missing:  # a video clip's mean from its cached frame sequence (cache_source)
            rows = self._from_source(encoder, [keys[i] for i in missing])
            for i in missing:
                if keys[i] in rows:
                    X[i] = rows[keys[i]]
            missing = [i for i in missing if keys[i] not in rows]
        return X, missing

    def fill_from_source(self, encoder: Encoder, keys: Sequence[str]) -> set[str]:
        """Commit, under ``encoder``'s own cache identity, the features of those ``keys`` (not cached for it) that
        its cache source holds (:func:`~anybind.encoders.base.cache_source`: a video clip's mean from its cached
        frame sequence), computed from the source's rows; returns the keys filled.  What every encode path
        (:meth:`encode`, the Ray encoder) does before encoding what is missing, so a clip is encoded once."""
        rows = self._from_source(encoder, keys)
        if rows:  # later lookups (and shard readers) find them under the encoder's own identity
            self._write_shard(cache_identity(encoder), list(rows), np.stack(list(rows.values())))
        return set(rows)

    def _from_source(self, encoder: Encoder, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Features of those ``keys`` that ``encoder``'s cache source (:func:`~anybind.encoders.base.cache_source`,
        e.g. a video clip's frame sequence for its mean) holds, computed from the source's cached rows; never
        encodes."""
        src = cache_source(encoder)
        if src is None or not keys:
            return {}
        sidx = self._load_index(cache_identity(src))
        have = [k for k in dict.fromkeys(keys) if k in sidx]
        if not have:
            return {}
        rows = encoder.from_source(np.stack([self._vector(*sidx[k]) for k in have]))
        return dict(zip(have, rows))

    # -- the main entry point -------------------------------------------
    def encode(
        self,
        encoder: Encoder,
        items: Sequence[Any],
        *,
        progress: bool = True,
        description: str | None = None,
        workers: int = 2,
        bad: dict[int, str] | None = None,
    ) -> np.ndarray:
        """Features for ``items`` (texts, paths or keys), encoding only what is missing.

        Items are deduplicated by content.  Misses are encoded chunk by chunk;
        each finished chunk is committed to disk before the next starts, and
        decoding of the next batch overlaps with the model's forward pass.
        Returns float32 ``(len(items), encoder.dim)``; ``last_stats`` says how
        many items were served from the cache and how many were encoded.

        An item that cannot be decoded (a :class:`DataError` from the encoder) never stops
        the others: they are all encoded and cached.  Then, without ``bad``, DataError names
        the first such item; with a dict ``bad``, ``bad[i]`` gets the reason for every
        position ``i`` holding one and its row is NaN (the caller skips and reports those).
        Either way the file's remembered media check (:mod:`anybind.data.checks`) is dropped,
        so ``validate`` decodes it again.
        """
        parts = derived_parts(encoder)
        if parts:
            # a derived encoder (+bridge, concat(...)): cache its bases' features, recompute the cheap derivation
            Xs = [self.encode(p, items, progress=progress, description=description, workers=workers, bad=bad)
                  for p in parts]
            return encoder.derive(*Xs)
        identity = cache_identity(encoder)  # the identity, plus the precision when it is not fp32
        idx = self._load_index(identity)
        keys = [encoder.content_key(it) for it in items]
        stats = EncodeStats(requested=len(items))
        first: dict[str, Any] = {}
        for k, it in zip(keys, items):
            first.setdefault(k, it)
        stats.unique = len(first)
        missing = [k for k in first if k not in idx]
        derived = self.fill_from_source(encoder, missing)
        if derived:
            missing = [k for k in missing if k not in derived]
            stats.derived = len(derived)
        stats.hits = stats.unique - len(missing) - stats.derived
        failed: dict[str, str] = {}
        if missing:
            failed = self._encode_missing(encoder, identity, missing, first, progress, description, workers)
        if missing or derived:  # what it committed: served as every rerun will (another writer's may come first)
            idx = self._settle(identity)
        stats.encoded = len(missing) - len(failed)
        stats.failed = len(failed)
        self.last_stats = stats
        if failed:
            if encoder.input_kind == "file":
                from .data.checks import forget

                forget([Path(first[k]) for k in failed])
            if bad is None:
                k = next(iter(failed))
                why = failed[k]  # a Reason: raised as its own kind (a refusal, a file not read), not a plain DataError
                kind = why.error if isinstance(why, Reason) and issubclass(why.error, DataError) else DataError
                item = str(first[k])  # a file's reason already starts with the file: named once
                raise kind(f"{encoder.spec}: cannot decode {why if str(why).startswith(item) else f'{item}: {why}'}")
            for i, k in enumerate(keys):
                if k in failed:
                    bad[i] = failed[k]
        if not items:
            return np.zeros((0, encoder.dim), np.float32)
        nan = np.full(encoder.dim, np.nan, np.float32)
        X = np.stack([nan if k in failed else self._vector(*idx[k]) for k in keys])
        return X.astype(np.float32, copy=False)

    def _forward_batch(self, encoder, identity: str) -> int:
        """Items per forward pass: the encoder's ``batch_size``, or ``min_forward_batch`` if larger."""
        return max(1, encoder.batch_size, self.min_forward_batch)

    def _encode_missing(self, encoder, identity, missing, first, progress, description, workers) -> dict:
        """Encode and commit ``missing`` (content keys); returns ``{key: why}`` for those not decodable."""
        bs = self._forward_batch(encoder, identity)
        desc = description or f"encoding {encoder.spec}"
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="anybind-decode")
        failed: dict[str, str] = {}
        with progress_bar(progress, desc, len(missing), "rate") as bar:
            for c0 in range(0, len(missing), self.chunk_size):
                chunk = missing[c0 : c0 + self.chunk_size]
                batches = [chunk[i : i + bs] for i in range(0, len(chunk), bs)]
                # decode batch i+1 while the model works on batch i
                # each decoding runs in a copy of this thread's context (the media limits in force here)
                futures = [
                    pool.submit(copy_context().run, self._load_batch, encoder, b, first) for b in batches[:1]
                ]
                ok_keys: list[str] = []
                outs = []
                for bi, b in enumerate(batches):
                    if bi + 1 < len(batches):
                        nxt = batches[bi + 1]
                        futures.append(pool.submit(copy_context().run, self._load_batch, encoder, nxt, first))
                    loaded = futures[bi].result()
                    good, X = _encode_batch(encoder, loaded, failed, first)
                    ok_keys += good
                    if X is not None:
                        outs.append(X)
                    bar.advance(len(b))
                if ok_keys:
                    self._write_shard(identity, ok_keys, np.concatenate(outs, axis=0))
        pool.shutdown()
        return failed

    @staticmethod
    def _load_batch(encoder: Encoder, keys: list[str], first: dict[str, Any]) -> list[tuple]:
        """``(key, decoded item or None, why it could not be decoded or None)`` for each key."""
        out: list[tuple[str, Any, str | None]] = []
        for k in keys:
            try:
                out.append((k, encoder.load(first[k]), None))
            except DataError as e:
                out.append((k, None, Reason.of(e)))
        return out


def _encode_batch(
    encoder: Encoder, loaded: list[tuple[str, Any, str | None]], failed: dict[str, str],
    first: dict[str, Any] | None = None,
) -> tuple[list[str], np.ndarray | None]:
    """Encode the decoded items of a batch: (their keys, features); undecodable ones go to ``failed``.

    An encoder that decodes inside its forward pass (a ``callable:``) raises DataError for the whole
    batch: it is then encoded item by item, so only the bad item fails.  A batch that runs out of memory
    is encoded in halves (:func:`~anybind.encoders.batching.encode_adaptive`)."""
    for k, _, why in loaded:
        if why is not None:
            failed[k] = why
    good = [(k, x) for k, x, why in loaded if why is None]
    if not good:
        return [], None
    try:
        names = [str(first[k]) if first and k in first else k for k, _ in good]
        return [k for k, _ in good], encode_adaptive(encoder, [x for _, x in good], names=names)
    except DataError as e:
        if len(good) == 1:
            failed[good[0][0]] = Reason.of(e)
            return [], None
    keys, outs = [], []
    for k, x in good:
        ks, X = _encode_batch(encoder, [(k, x, None)], failed, first)
        if X is not None:
            keys += ks
            outs.append(X)
    return keys, (np.concatenate(outs, axis=0) if outs else None)

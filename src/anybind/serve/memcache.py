"""The service's feature cache: reads the on-disk cache, keeps what it encodes in a bounded in-memory LRU
(nothing written to disk), and can batch encodes across concurrent requests (:mod:`anybind.serve.batching`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..cache import FeatureCache
from .batching import Batcher
from .config import ServeConfig

#: a batched call hands the encoder up to this many items per forward pass, even one whose batch_size is smaller
#: (EfficientNet-Lite's 8): 32 images went through it 1.5x faster per image than 8 on the loaded 2-core bench
#: machine (channels-last, 2 torch threads); never more than the batch limit in force (see :func:`forward_batch`)
FORWARD_BATCH = 32


def forward_batch(limit: int) -> int:
    """The items per forward pass a batched call hands an encoder under a batch limit of ``limit``."""
    return min(FORWARD_BATCH, limit)


class MemoryFeatureCache(FeatureCache):
    """A feature cache that reads the on-disk cache but keeps what it encodes in memory only.

    Corpus items already on disk are hits; queries (texts, uploaded files, class
    prompts) are encoded once and kept in an LRU of ``max_items`` entries, so a
    running service never writes a shard per query into the user's cache.
    Encoder calls are serialised per encoder identity (a tokenizer or a model
    shared by worker threads is never entered twice at once).
    """

    def __init__(self, root: str | Path | None = None, max_items: int = 4096, batch_wait: float | None = None,
                 max_batch: int = ServeConfig.max_batch, limits: dict[str, int] | None = None,
                 torch_threads: int | None = None):
        super().__init__(root)
        # batch_wait not None (and max_batch, or an encoder's own limit in limits, > 1): concurrent calls for one
        # encoder are encoded together, a new batch gathering for up to batch_wait seconds (see .batching)
        on = batch_wait is not None and max(max_batch, *(limits or {}).values(), 1) > 1
        self.batcher = Batcher(batch_wait, max_batch, limits) if on else None
        self.torch_threads = torch_threads  # torch's threads in each encoder call (None: as they are)
        if self.batcher is not None:  # informational (FeatureCache's own is 0): _forward_batch decides per encoder
            self.min_forward_batch = forward_batch(max_batch)
        self.max_items = int(max_items)
        self._mem: OrderedDict[Path, tuple[str, list[str]]] = OrderedDict()
        self._mem_items = 0
        self._lock = threading.RLock()
        self._encoder_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # per encoder identity: encoder calls made, items they encoded, seconds spent in them
        self.encoder_stats: defaultdict[str, dict[str, float]] = defaultdict(
            lambda: {"calls": 0, "items": 0, "seconds": 0.0})

    def _load_index(self, identity: str):
        with self._lock:
            return super()._load_index(identity)

    def _settle(self, identity: str):
        # what it encoded lives in memory only (in this index): no rescan, which would drop it
        return self._load_index(identity)

    def _forward_batch(self, encoder, identity: str) -> int:
        # an encoder with its own limit (max_batch_for) gets the passes max_batch would give at that limit
        if self.batcher is None:
            return super()._forward_batch(encoder, identity)
        return max(1, encoder.batch_size, forward_batch(self.batcher.limit(identity)))

    def _encode_missing(self, encoder, identity, missing, first, progress, description, workers) -> dict:
        if self.batcher is not None:
            return self.batcher.run(identity, missing, first,
                                    lambda keys, fst: self._encode_now(encoder, identity, keys, fst, description))
        return self._encode_now(encoder, identity, missing, first, description)

    def _encode_now(self, encoder, identity, missing, first, description) -> dict:
        with self._lock:
            lock = self._encoder_locks[identity]
        with lock:
            idx = self._load_index(identity)
            still = [k for k in missing if k not in idx]  # another thread may have encoded them meanwhile
            if not still:
                return {}
            from ..numerics import torch_threads  # set in the calling (worker) thread: a setting made in another
            # thread does not reach one that already ran torch (its OpenMP count is its own)

            t0 = time.perf_counter()
            try:
                with torch_threads(self.torch_threads) if self.torch_threads else nullcontext():
                    return super()._encode_missing(encoder, identity, still, first, False, description, 1)
            finally:
                st = self.encoder_stats[identity]
                st["calls"] += 1
                st["items"] += len(still)
                st["seconds"] += time.perf_counter() - t0

    def _write_shard(self, identity: str, keys: list[str], vectors: np.ndarray) -> Path:
        path = Path(f"<memory>/{uuid.uuid4().hex}")
        with self._lock:
            idx = self._load_index(identity)
            self._shard_data[path] = np.asarray(vectors, dtype=np.float32)
            for row, k in enumerate(keys):
                idx[k] = (path, row)
            self._mem[path] = (identity, list(keys))
            self._mem_items += len(keys)
            while self._mem_items > self.max_items and len(self._mem) > 1:
                old, (ident, old_keys) = self._mem.popitem(last=False)
                old_idx = self._index.get(ident, {})
                for k in old_keys:
                    if old_idx.get(k, (None,))[0] == old:
                        del old_idx[k]
                self._shard_data.pop(old, None)
                self._mem_items -= len(old_keys)
        return path

    def __len__(self) -> int:
        return self._mem_items

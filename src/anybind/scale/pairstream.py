"""Streaming pairs out of training shards (:class:`PairStream`): seeded shard order, a bounded shuffle
buffer, one shard in memory at a time; :mod:`anybind.scale.stream` writes the shards."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .stream import SPLIT_CODES, TrainingShards, combo


# ----------------------------------------------------------------------------- streaming
def _offsets(shards: TrainingShards) -> list[int]:
    """The global row number of each shard's first row."""
    out, n = [], 0
    for e in shards.meta["shards"]:
        out.append(n)
        n += int(e["rows"])
    return out


class PairStream:
    """Endless batches ``(xa, xb)`` (float32) of the ``split`` records having both ``a`` and ``b``.

    Memory: a shuffle buffer of ``shuffle_buffer`` rows plus one shard.  Each pass over
    the shards visits them in a fresh seeded order; rows enter the buffer and leave it
    in random batches (without replacement), the rows left at the end of a pass that
    do not fill a batch are dropped (like the in-memory trainer's permutation tail),
    so a batch never holds a row twice.  A buffer as large as the data is a full
    shuffle.  Distributed: worker ``rank`` of ``world`` reads its own whole shards
    (balanced by rows), or, when that would leave a worker short of a batch, every
    ``world``-th row of every shard.
    """

    def __init__(
        self,
        shards: TrainingShards,
        a: str,
        b: str,
        *,
        batch_size: int,
        split: str = "train",
        shuffle_buffer: int = 16384,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        for m in (a, b):
            if m not in shards.dims:
                raise DataError(f"modality {m!r} is not in the training shards ({', '.join(shards.modalities)})")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.shards, self.a, self.b, self.split = shards, a, b, split
        self.batch_size = int(batch_size)
        key = combo((a, b))
        entries = [(shards.path / e["file"], int(e["counts"][split].get(key, 0)), off)
                   for e, off in zip(shards.meta["shards"], _offsets(shards))]
        entries = [e for e in entries if e[1] > 0]
        if not entries:
            raise DataError(f"no {split} record has both {a!r} and {b!r}")
        self.rank, self.world = rank, world
        # whole shards per worker, balanced by rows; with too few shards for that, every world-th row
        loads, bins = [0] * world, [[] for _ in range(world)]
        for e in sorted(entries, key=lambda e: -e[1]):
            w = loads.index(min(loads))
            bins[w].append(e)
            loads[w] += e[1]
        self.row_stride = world > 1 and min(loads) < self.batch_size
        if self.row_stride:
            self.entries = entries
            self.rows = sum(int(self._mask(f, off).sum()) for f, _, off in entries)
        else:
            self.entries = sorted(bins[rank], key=lambda e: e[2])
            self.rows = loads[rank]
        self.files = [e[0] for e in self.entries]
        if self.rows < self.batch_size:
            raise DataError(
                f"pair {a}-{b}: worker {rank} holds {self.rows} {split} rows, fewer than its batch of {self.batch_size}"
            )
        self.buffer = max(self.batch_size, min(int(shuffle_buffer), self.rows))
        self.rng = np.random.default_rng([seed, rank, zlib.crc32(key.encode())])
        self.passes = 0
        self._it = self._batches()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._it)

    def _mask(self, file: Path, offset: int, t: dict | None = None) -> np.ndarray:
        """This worker's rows of ``split`` having both modalities, in one shard."""
        a, b = self.a, self.b
        if t is None:
            t = self.shards.read(file, [f"has.{a}", f"has.{b}", "split"])
        mask = (t["split"] == SPLIT_CODES[self.split]) & (t[f"has.{a}"] > 0) & (t[f"has.{b}"] > 0)
        if self.row_stride:
            mask &= (offset + np.arange(len(mask))) % self.world == self.rank
        return mask

    def _shard_rows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        a, b = self.a, self.b
        for i in self.rng.permutation(len(self.entries)):
            f, _, off = self.entries[i]
            t = self.shards.read(f, [f"x.{a}", f"x.{b}", f"has.{a}", f"has.{b}", "split"])
            sel = np.nonzero(self._mask(f, off, t))[0]
            if len(sel):
                yield t[f"x.{a}"][sel], t[f"x.{b}"][sel]

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        bs, K = self.batch_size, self.buffer
        da, db = self.shards.dims[self.a], self.shards.dims[self.b]
        cap = K + max(int(s["rows"]) for s in self.shards.meta["shards"])
        ba, bb = np.empty((cap, da), np.float32), np.empty((cap, db), np.float32)
        while True:
            n = 0
            for xa, xb in self._shard_rows():
                k = len(xa)
                ba[n : n + k], bb[n : n + k] = xa, xb
                n += k
                while n >= max(K, bs):
                    yield self._take(ba, bb, n)
                    n -= bs
            while n >= bs:  # end of the pass: what is left, in full batches
                yield self._take(ba, bb, n)
                n -= bs
            self.passes += 1

    def _take(self, ba: np.ndarray, bb: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A random batch out of the first ``n`` buffered rows; the rows after it fill the holes."""
        bs = self.batch_size
        idx = np.sort(self.rng.choice(n, size=bs, replace=False))
        out = ba[idx].copy(), bb[idx].copy()
        tail = np.arange(n - bs, n)
        holes = idx[idx < n - bs]
        fillers = tail[~np.isin(tail, idx)]
        ba[holes], bb[holes] = ba[fillers], bb[fillers]
        return out

"""Quantised vectors with exact rescoring: int8 (scalar, per-dimension calibrated ranges) or binary
(sign bits, Hamming distance) codes in memory; the top candidates are rescored with the float
vectors, read from a disk-backed copy (a memory-mapped scratch file), so the floats need not stay
in memory.

Built in one streamed pass over the table (bounded memory: one batch of floats at a time), for
one table version; a search on a newer version rebuilds it first, so it never answers stale.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .store import Snapshot, objects_of, one_chunk, vectors_of

if TYPE_CHECKING:
    import pyarrow as pa

QUANT_KINDS = ("int8", "binary")
#: candidates rescored per hit asked for (k=10 -> 40 int8 or 500 binary candidates).  Sign bits rank
#: coarsely: on 50k clustered 256-d vectors, recall@10 after rescoring 200 / 500 / 1000 Hamming candidates
#: was 0.74 / 0.95 / 0.9995 (the ``search-scale`` bench chooses the factor on its tuning queries).
DEFAULT_RESCORE = {"int8": 4, "binary": 50}
_BLOCK = 65536
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)  # numpy < 2 has no bitwise_count


def hamming(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamming distance of each row of packed sign bits ``codes`` (n, b) uint8 to ``q`` (b,) uint8."""
    x = codes ^ q
    if hasattr(np, "bitwise_count"):
        pad = (-x.shape[1]) % 8  # 64 bits at a time
        x = np.ascontiguousarray(np.pad(x, ((0, 0), (0, pad))) if pad else x).view(np.uint64)
        return np.bitwise_count(x).sum(1, dtype=np.int32)
    return _POPCOUNT[x].sum(1, dtype=np.int32)


def _int8_scores(Qs, C):
    """``Qs @ C.T`` for float queries and an int8 block: a few queries through torch's int8 weight
    kernel where it has one (no float copy of the block), more through one float block and a matmul
    (that kernel is slow for many rows)."""
    import torch

    if len(Qs) <= 4:
        try:
            return torch.ops.aten._weight_int8pack_mm(Qs, C, torch.ones(len(C), dtype=torch.float32))
        except (AttributeError, RuntimeError, NotImplementedError):  # an older torch, or a shape it refuses
            pass
    return Qs @ C.to(torch.float32).T


def int8_topk(Qs: np.ndarray, codes: np.ndarray, pool: int) -> np.ndarray:
    """Per query, the rows of the largest ``pool`` scores ``Qs . code`` (unordered), a block of codes at a time."""
    import torch

    Qt = torch.from_numpy(np.ascontiguousarray(Qs, np.float32))
    C = torch.from_numpy(np.ascontiguousarray(codes))
    vals, idxs = [], []
    with torch.inference_mode():
        for s0 in range(0, len(C), _BLOCK):
            S = _int8_scores(Qt, C[s0 : s0 + _BLOCK])
            v, i = torch.topk(S, min(pool, S.shape[1]), dim=1)
            vals.append(v)
            idxs.append(i + s0)
        if len(vals) > 1:
            _, j = torch.topk(torch.cat(vals, 1), pool, dim=1)
            return torch.gather(torch.cat(idxs, 1), 1, j).numpy()
    return idxs[0].numpy()


@dataclass
class QuantStore:
    """The codes of one table version and what rescoring needs."""

    kind: str
    version: int
    codes: np.ndarray  # int8 (n, d), or uint8 sign bits (n, ceil(d/8))
    lo: np.ndarray | None  # int8: per-dimension range start and step
    step: np.ndarray | None
    floats: np.ndarray  # (n, d) float32, memory-mapped from a scratch file
    meta: "pa.Table"
    modality: np.ndarray
    rescore: int
    _file: Any = None
    _snap: Snapshot | None = None

    @property
    def code_bytes(self) -> int:
        return int(self.codes.nbytes)

    def snapshot(self) -> Snapshot:
        """For the filters (modality, labels) and the hits: the metadata, without vectors (made once)."""
        if self._snap is None:
            self._snap = Snapshot(self.version, self.meta, np.zeros((0, self.floats.shape[1]), np.float32),
                                  self.modality)
        return self._snap

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, table, dim: int, kind: str, rescore: int | None = None, sample: int = 100_000,
              seed: int = 0) -> "QuantStore":
        import pyarrow as pa

        if kind not in QUANT_KINDS:
            raise ValueError(f"unknown quantisation {kind!r} (use one of {', '.join(QUANT_KINDS)})")
        version = table.version
        n = table.count_rows()
        f = tempfile.TemporaryFile(prefix="anybind-rescore-")
        cap = max(1, n)
        f.truncate(cap * dim * 4)
        floats = np.memmap(f, np.float32, "r+", shape=(cap, dim))
        cols = [x.name for x in table.schema if x.name != "vector"]
        metas, pos = [], 0
        for b in table.search().limit(None).to_batches(_BLOCK):
            m = b.num_rows
            if pos + m > cap:  # rows appeared since count_rows(): grow the file
                cap = max(pos + m, int(cap * 1.5))
                floats.flush()
                f.truncate(cap * dim * 4)
                floats = np.memmap(f, np.float32, "r+", shape=(cap, dim))
            floats[pos : pos + m] = vectors_of(b.column("vector"), dim)
            metas.append(b.select(cols))
            pos += m
        floats = floats[:pos]
        schema = pa.schema([x for x in table.schema if x.name != "vector"])
        meta = one_chunk(pa.Table.from_batches(metas, schema=schema)) if metas else schema.empty_table()
        del metas
        lo = step = None
        if kind == "int8":
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(pos, min(pos, sample), replace=False)) if pos else np.zeros(0, np.int64)
            S = np.asarray(floats[pick]) if pos else np.zeros((1, dim), np.float32)
            lo, hi = np.quantile(S, 0.0005, axis=0), np.quantile(S, 0.9995, axis=0)
            step = np.maximum(hi - lo, 1e-8) / 255.0
            lo, step = lo.astype(np.float32), step.astype(np.float32)
            codes = np.empty((pos, dim), np.int8)
            for s0 in range(0, pos, _BLOCK):
                x = (np.asarray(floats[s0 : s0 + _BLOCK]) - lo) / step
                codes[s0 : s0 + _BLOCK] = (np.clip(np.rint(x), 0, 255) - 128).astype(np.int8)
        else:
            codes = np.empty((pos, (dim + 7) // 8), np.uint8)
            for s0 in range(0, pos, _BLOCK):
                codes[s0 : s0 + _BLOCK] = np.packbits(np.asarray(floats[s0 : s0 + _BLOCK]) > 0, axis=1)
        floats = np.memmap(f, np.float32, "r", shape=(pos, dim)) if pos else np.zeros((0, dim), np.float32)
        mods = objects_of(meta.column("modality"))
        return cls(kind, version, codes, lo, step, floats, meta, mods,
                   int(rescore or DEFAULT_RESCORE[kind]), f)

    # -- searching ------------------------------------------------------------------------------
    def _approx(self, Q: np.ndarray, rows: np.ndarray | None, pool: int) -> np.ndarray:
        """Per query, the ``pool`` best rows by the codes (unordered)."""
        codes = self.codes if rows is None else self.codes[rows]
        n = len(codes)
        out = np.empty((len(Q), pool), np.int64)
        if self.kind == "int8":
            Qs = (Q * self.step).astype(np.float32)  # score = Q.(lo + (c + 128) step) = Qs.c + const
            for q0 in range(0, len(Q), 256):
                out[q0 : q0 + 256] = int8_topk(Qs[q0 : q0 + 256], codes, pool)
        else:
            qc = np.packbits(Q > 0, axis=1)
            for i in range(len(Q)):
                ham = hamming(codes, qc[i])
                out[i] = np.argpartition(ham, pool - 1)[:pool] if n > pool else np.arange(n)
        return out if rows is None else rows[out]

    def search(self, Q: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: candidates by the codes, rescored exactly with the float vectors."""
        n = len(self.codes) if rows is None else len(rows)
        kk = min(int(k), n)
        if kk <= 0:
            return np.zeros((len(Q), 0), np.float32), np.zeros((len(Q), 0), np.int64)
        pool = min(n, max(kk, kk * self.rescore))
        cand = self._approx(Q, rows, pool)
        out_s = np.empty((len(Q), kk), np.float32)
        out_r = np.empty((len(Q), kk), np.int64)
        for i in range(len(Q)):
            c = np.sort(cand[i])  # sorted: the memory-mapped reads go forward
            s = np.asarray(self.floats[c]) @ Q[i]
            top = np.argsort(-s, kind="stable")[:kk]
            out_s[i], out_r[i] = s[top], c[top]
        return out_s, out_r


def memory_of(store: QuantStore) -> dict[str, float]:
    """Bytes of the codes against the float vectors they stand for."""
    n, d = store.floats.shape
    return {"code_bytes": float(store.code_bytes), "float_bytes": float(n * d * 4),
            "ratio": float(n * d * 4) / max(1, store.code_bytes)}


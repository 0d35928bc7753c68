"""Training shards, and streams that read them in bounded memory whatever the corpus size.

Training needs, per record, the features of each of its modalities: the feature
cache stores them per encoder and content, so they are joined once, record by
record, into *training shards*::

    <dir>/shards.json           format, modalities, dims, encoder specs + identities, per-shard counts
    <dir>/000000.safetensors    x.<m>  (rows, dim) features (zeros where a record lacks m)
                                has.<m> (rows,) uint8, split (rows,) uint8 (0 train, 1 val, 2 test)
                                metadata "ids": the records' ids, in row order

Built in one streaming pass (:func:`anybind.scale.shard_write.write_training_shards`, a few thousand rows per
shard, the folder swapped in atomically and reused while manifests and encoders are
unchanged).  :class:`~anybind.scale.pairstream.PairStream` then yields endless batches of one modality pair,
reading one shard at a time through a shuffle buffer; memory is the buffer plus one
shard, so a corpus far larger than RAM streams through an epoch.  With ``rank`` and
``world`` each distributed worker reads its own subset of the shards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artefact_meta import read_meta
from ..errors import DataError
from ..projectors import standard_scale

FORMAT = "anybind.training-shards"
FORMAT_VERSION = 1
META = "shards.json"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_ROWS_PER_SHARD = 4096


def combo(mods: Sequence[str]) -> str:
    return "+".join(sorted(mods))


class TrainingShards:
    """A training-shards folder (see the module doc).  :meth:`open` it, or build one with
    :func:`anybind.scale.shard_write.write_training_shards`."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta

    @classmethod
    def open(cls, path: str | Path) -> "TrainingShards":
        from ..io import recover_dir

        path = Path(path)
        recover_dir(path, "training-shards")
        mp = path / META
        if not mp.is_file():
            raise DataError(f"{path}: not a training-shards folder (no {META})")
        meta = read_meta(path, META, None, fmt=FORMAT, version=FORMAT_VERSION, what="training-shards folder",
                         error=DataError)
        for s in meta["shards"]:
            if not (path / s["file"]).is_file():
                raise DataError(f"{path}: shard {s['file']} is missing (rebuild the training shards)")
        return cls(path, meta)

    # -- description -------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.meta["dims"].items()}

    @property
    def specs(self) -> dict[str, str]:
        return dict(self.meta.get("specs", {}))

    @property
    def identities(self) -> dict[str, str]:
        return dict(self.meta.get("identities", {}))

    @property
    def rows(self) -> int:
        return sum(int(s["rows"]) for s in self.meta["shards"])

    def __len__(self) -> int:
        return len(self.meta["shards"])

    def __repr__(self) -> str:
        return f"<TrainingShards {self.path} rows={self.rows} shards={len(self)} modalities={self.modalities}>"

    def count(self, split: str, mods: Sequence[str] | str) -> int:
        """Rows of ``split`` having every modality in ``mods`` (one modality or a pair)."""
        key = mods if isinstance(mods, str) else (mods[0] if len(mods) == 1 else combo(mods))
        return sum(int(s["counts"][split].get(key, 0)) for s in self.meta["shards"])

    def files(self, split: str, mods: Sequence[str] | str) -> list[Path]:
        """The shards holding at least one row of ``split`` with ``mods``, in order."""
        key = mods if isinstance(mods, str) else (mods[0] if len(mods) == 1 else combo(mods))
        return [self.path / s["file"] for s in self.meta["shards"] if int(s["counts"][split].get(key, 0)) > 0]

    # -- reading -----------------------------------------------------------
    def read(self, file: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Some tensors of one shard (features as float32)."""
        from safetensors import safe_open

        out = {}
        try:
            with safe_open(str(file), "np") as f:
                for n in names:
                    a = f.get_tensor(n)
                    out[n] = a.astype(np.float32, copy=False) if n.startswith("x.") else a
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            raise DataError(f"{file}: unreadable training shard ({type(e).__name__}: {e})") from None
        return out

    def ids(self, file: Path) -> list[str]:
        from safetensors import safe_open

        with safe_open(str(file), "np") as f:
            return json.loads((f.metadata() or {}).get("ids", "[]"))

    def standardisation(self, modality: str, split: str = "train", frames: int = 0) -> tuple[np.ndarray, float, int]:
        """``(mean, scale, n)`` of a modality's features over a split, in one streaming pass.

        The statistics :meth:`anybind.projectors.Projector.fit_stats` computes in memory:
        per-dimension mean, one global scale ``sqrt(mean ||x - mean||^2 / dim)``.  ``frames > 0``: the features
        are frame sequences (``frames`` rows of a frame's features and a validity flag, a ``pool=attn`` video
        spec): the statistics are over every valid frame (``n`` counts frames), as ``fit_stats`` computes them.
        """
        d = self.dims[modality]
        if frames:
            if d % frames or d // frames < 2:
                raise DataError(f"modality {modality!r}: {d} features are not {frames} frames of features + a flag")
            d = d // frames - 1
        s1, s2, n = np.zeros(d, np.float64), 0.0, 0
        for f in self.files(split, modality):
            t = self.read(f, [f"x.{modality}", f"has.{modality}", "split"])
            sel = (t["split"] == SPLIT_CODES[split]) & (t[f"has.{modality}"] > 0)
            x = t[f"x.{modality}"][sel].astype(np.float64)
            if frames:  # every valid frame of the split's clips
                seq = x.reshape(len(x), frames, d + 1)
                x = seq[..., :-1][seq[..., -1] > 0.5]
            s1 += x.sum(0)
            s2 += float((x * x).sum())
            n += len(x)
        if n == 0:
            return np.zeros(d, np.float32), 1.0, 0
        mean = s1 / n
        var = max(s2 / n - float(mean @ mean), 0.0) / d
        return mean.astype(np.float32), standard_scale(math.sqrt(var), n, modality, math.sqrt(s2 / n / d)), n

    def feature_set(self, split: str):
        """One split in memory as a :class:`~anybind.featureset.FeatureSet` (for validation: splits that fit in RAM)."""
        from ..data.manifest import Record
        from ..train import FeatureSet

        mods = self.modalities
        ids: list[str] = []
        feats: dict[str, list[np.ndarray]] = {m: [] for m in mods}
        has: dict[str, list[np.ndarray]] = {m: [] for m in mods}
        for f in self.files(split, "rows"):
            t = self.read(f, [f"x.{m}" for m in mods] + [f"has.{m}" for m in mods] + ["split"])
            sel = t["split"] == SPLIT_CODES[split]
            ids += [i for i, s in zip(self.ids(f), sel) if s]
            for m in mods:
                feats[m].append(t[f"x.{m}"][sel])
                has[m].append(t[f"has.{m}"][sel] > 0)
        n = len(ids)
        records = [Record(id=i, split=split, values={}) for i in ids]
        F, R = {}, {}
        for m in mods:
            h = np.concatenate(has[m]) if has[m] else np.zeros(0, bool)
            X = np.concatenate(feats[m]) if feats[m] else np.zeros((0, self.dims[m]), np.float32)
            F[m] = np.ascontiguousarray(X[h])
            r = np.full(n, -1, np.int64)
            r[np.nonzero(h)[0]] = np.arange(int(h.sum()))
            R[m] = r
            for rec, ok in zip(records, h):
                if ok:
                    rec.values[m] = "1"
        return FeatureSet(records=records, specs=self.specs, identities=self.identities, feats=F, rows=R,
                          corpus=np.zeros(n, np.int64))

"""Cached encoder features for every record and modality of a fit (:class:`FeatureSet`), and the selection set a
fit may choose its epoch, WiSE-FT alpha and ridge shrinkage on instead of its own val split (:func:`selection_set`:
the records of another corpus, so that selection measures transfer rather than in-domain fit)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cache import FeatureCache
from .data.manifest import BadRecord, Manifest, Record
from .encoders.registry import get_encoder
from .errors import DataError, unusable_file
from .wording import counted

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Cached encoder features for every record and modality, plus splits."""

    records: list[Record]
    specs: dict[str, str]
    identities: dict[str, str]
    feats: dict[str, np.ndarray]  # modality -> (n_with_modality, dim)
    rows: dict[str, np.ndarray]  # modality -> (n_records,) row into feats or -1
    corpus: np.ndarray  # (n_records,) index of the manifest each record came from
    weights: np.ndarray = field(default_factory=lambda: np.ones(1))
    sources: list[str] = field(default_factory=list)
    skipped: list[BadRecord] = field(default_factory=list)  # undecodable when encoded (each logged)

    @property
    def modalities(self) -> list[str]:
        return sorted(self.feats)

    def split_idx(self, split: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.records) if r.split == split], dtype=np.int64)

    def with_pair(self, idx: np.ndarray, a: str, b: str) -> np.ndarray:
        return idx[(self.rows[a][idx] >= 0) & (self.rows[b][idx] >= 0)]

    def get(self, modality: str, idx: np.ndarray) -> np.ndarray:
        r = self.rows[modality][idx]
        if (r < 0).any():
            raise DataError(f"some records lack {modality!r}")
        return self.feats[modality][r]

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[Manifest],
        specs: Mapping[str, str],
        cache: FeatureCache,
        *,
        progress: bool = True,
        weights: Sequence[float] | None = None,
    ) -> "FeatureSet":
        records: list[Record] = []
        corpus: list[int] = []
        seen: set[str] = set()
        for ci, man in enumerate(manifests):
            for r in man.records:
                if r.id in seen:  # same id in two corpora: keep both, disambiguated
                    r = copy.copy(r)
                    r.id = f"{man.path.parent.name}:{r.id}"
                seen.add(r.id)
                records.append(r)
                corpus.append(ci)
        if weights is not None and len(weights) != len(manifests):
            raise DataError(f"{len(weights)} weights for {len(manifests)} manifests")
        encoded, identities = {}, {}
        skipped: dict[int, BadRecord] = {}  # records whose file is undecodable now (changed since validated)
        for m, spec in specs.items():
            enc = get_encoder(spec)
            have = [i for i, r in enumerate(records) if r.has(m)]
            if not have:
                raise DataError(f"no valid record has modality {m!r}")
            bad: dict[int, str] = {}
            items = [records[i].values[m] for i in have]
            X = cache.encode(enc, items, progress=progress, description=f"encoding {m} ({spec})", bad=bad)
            for j, why in bad.items():
                r = records[have[j]]
                skipped.setdefault(have[j], BadRecord(r.line, r.id, unusable_file(m, why)))
            encoded[m] = (have, X)
            identities[m] = enc.identity
        for i, b in skipped.items():
            log.warning("%s: %s (skipped)", manifests[corpus[i]].path, b)
        keep = np.asarray([i for i in range(len(records)) if i not in skipped], dtype=np.int64)
        new_row = np.full(len(records), -1, dtype=np.int64)
        new_row[keep] = np.arange(len(keep))
        feats, rows = {}, {}
        for m, (have, X) in encoded.items():
            sel = np.asarray([j for j, i in enumerate(have) if i not in skipped], dtype=np.int64)
            if not len(sel):
                raise DataError(f"no valid record has modality {m!r}")
            feats[m] = X[sel]
            rr = np.full(len(keep), -1, dtype=np.int64)
            rr[new_row[np.asarray(have)[sel]]] = np.arange(len(sel))
            rows[m] = rr
        records = [records[i] for i in keep]
        corpus = [corpus[i] for i in keep]
        w = np.asarray(weights if weights is not None else [1.0] * len(manifests), dtype=np.float64)
        return cls(
            skipped=list(skipped.values()),
            records=records,
            specs=dict(specs),
            identities=identities,
            feats=feats,
            rows=rows,
            corpus=np.asarray(corpus, dtype=np.int64),
            weights=w,
            sources=[str(m.path) for m in manifests],
        )


def selection_set(manifests: Sequence[Manifest], specs: Mapping[str, str], cache: FeatureCache, *,
                  split: str | None = "val", progress: bool = True) -> FeatureSet:
    """The features of ``manifests``' ``split`` records (None: every record outside a test split), relabelled
    ``"val"``: what a fit scores its epochs, WiSE-FT mixtures and ridge shrinkages on instead of its own val split
    (``Space.fit(select_data=...)``).  Only the fit's modalities that these records have are encoded.  Test
    records are never used: nothing is chosen on a test split."""
    return encode_selection(selection_records(manifests, specs, split), specs, cache, progress)


def encode_selection(picked: tuple[list[Manifest], set[str]], specs: Mapping[str, str], cache: FeatureCache,
                     progress: bool = True) -> FeatureSet:
    """The features of :func:`selection_records`' records, the fit's modalities they have only."""
    mans, have = picked
    return FeatureSet.from_manifests(mans, {m: s for m, s in specs.items() if m in have}, cache, progress=progress)


def selection_records(manifests: Sequence[Manifest], specs: Mapping[str, str],
                      split: str | None = "val") -> tuple[list[Manifest], set[str]]:
    """:func:`selection_set` before it encodes anything: the manifests holding the ``split`` records (relabelled
    ``"val"``) and the fit's modalities they have; a bad ``split``, or fewer than 2 such records with 2 of the
    modalities, refused in one line (a fit calls it before encoding its own training records)."""
    if split == "test":
        raise DataError("select_split='test': nothing is chosen on a test split; use 'val', 'train' or None "
                        "(every record outside the test split; 'all' in anybind fit)")
    if split not in (None, "val", "train"):
        raise DataError(f"select_split={split!r} is not a split: use 'val', 'train' or None (every record outside "
                        "the test split; 'all' in anybind fit)")
    mans, n = [], 0
    for man in manifests:
        keep = [r for r in man.records if (r.split != "test" if split is None else r.split == split)]
        recs = []
        for r in keep:
            r = copy.copy(r)
            r.split = "val"
            recs.append(r)
        m2 = copy.copy(man)
        m2.records = recs
        mans.append(m2)
        n += len(recs)
    have = {m for man in mans for r in man.records for m in specs if r.has(m)}
    if n < 2 or len(have) < 2:
        held = counted(n, f"{split or 'any'}-split record")
        raise DataError(f"select_data ({', '.join(str(m.path) for m in manifests)}): {held} with {len(have)} of the "
                        f"fit's modalities ({', '.join(specs)}); selection needs at least 2 records with 2 of them")
    return mans, have


def featureset_pairs(fs: "FeatureSet", split: str, lock: str | None):
    """``pairs(m)``: the ``split`` records' features of (``m``, ``lock``), for :func:`~anybind.ridge.locked_ridge_start`
    (train: one block; val: ``None`` below 2 pairs)."""
    idx = fs.split_idx(split)

    def pairs(m: str):
        if m not in fs.rows or lock not in fs.rows:  # a selection set without this pair
            return [] if split == "train" else None
        sel = fs.with_pair(idx, m, lock)
        if split == "train":
            return [(fs.get(m, sel), fs.get(lock, sel))]
        return (fs.get(m, sel), fs.get(lock, sel)) if len(sel) >= 2 else None

    return pairs

"""Library pieces the benches used to keep to themselves: grouped folds (anybind.data.folds), the in-memory
feature memo (anybind.memo.MemoSpace) and split embeddings from cached features (anybind.evaluate.embed_split)."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.data.folds import grouped_folds, swap_val_test, unit_hash
from anybind.data.manifest import Manifest, Record
from anybind.errors import DataError


def _manifest(groups: list[str], splits: list[str] | None = None) -> Manifest:
    recs = [Record(id=f"r{i}", values={"text": g}, split=(splits[i] if splits else "train"))
            for i, g in enumerate(groups)]
    return Manifest(path=Path("m.jsonl"), records=recs, bad=[], kinds={"text": "text"})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([f"caption {c}" for c in "abcdefghijklmnop"]), min_size=1, max_size=60),
       st.integers(2, 6))
def test_folds_test_every_record_once_and_never_split_a_group(groups, k):
    folds = grouped_folds(_manifest(groups), k, lambda r: r.values["text"])
    assert len(folds) == k
    tested = [sum(r.split == "test" for r in f.records) for f in folds]
    assert sum(tested) == len(groups)  # every record is test in exactly one fold
    for f in folds:
        assert [r.id for r in f.records] == [f"r{i}" for i in range(len(groups))]  # same records, same order
        by_group: dict[str, set] = {}
        for r in f.records:
            by_group.setdefault(r.values["text"], set()).add(r.split)
        assert all(len(s) == 1 for s in by_group.values())  # one group, one split
    again = grouped_folds(_manifest(groups), k, lambda r: r.values["text"])
    assert [[r.split for r in f.records] for f in folds] == [[r.split for r in f.records] for f in again]


def test_adding_records_never_moves_the_others_between_folds():
    base = [f"g{i % 40}" for i in range(120)]
    small = grouped_folds(_manifest(base), 5, lambda r: r.values["text"])
    big = grouped_folds(_manifest(base + [f"new{i}" for i in range(50)]), 5, lambda r: r.values["text"])
    for a, b in zip(small, big):
        assert [r.split for r in a.records] == [r.split for r in b.records[: len(base)]]


def test_val_fraction_is_roughly_kept_and_validated():
    folds = grouped_folds(_manifest([f"g{i}" for i in range(4000)]), 4, lambda r: r.values["text"])
    non_test = [r for r in folds[0].records if r.split != "test"]
    frac = sum(r.split == "val" for r in non_test) / len(non_test)
    assert 0.10 < frac < 0.15
    with pytest.raises(DataError, match="k must be at least 2"):
        grouped_folds(_manifest(["a"]), 1, lambda r: "a")
    with pytest.raises(DataError, match="val_fraction"):
        grouped_folds(_manifest(["a"]), 3, lambda r: "a", val_fraction=1.0)


def test_swap_val_test_exchanges_only_val_and_test():
    m = _manifest(["a", "b", "c"], ["train", "val", "test"])
    assert [r.split for r in swap_val_test(m).records] == ["train", "test", "val"]
    assert [r.split for r in m.records] == ["train", "val", "test"]  # the original is untouched


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_unit_hash_is_in_the_unit_interval(key):
    assert 0.0 <= unit_hash(key) < 1.0 and unit_hash(key) == unit_hash(key)


# ----------------------------------------------------------------------------- MemoSpace and embed_split
def _vectors_corpus(d: Path, n: int = 60):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 6))
    ids = [f"r{i}" for i in range(n)]
    specs = {}
    for name, dim in (("text", 12), ("b", 10)):
        X = z @ rng.normal(size=(6, dim)) + 0.3 * rng.normal(size=(n, dim))
        if name == "b":
            X[1] = X[0]  # two records with identical content
        np.savez(d / f"{name}.npz", ids=np.array(ids), vectors=X.astype(np.float32))
        specs[name] = f"vectors:{d / f'{name}.npz'}"
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    (d / "m.jsonl").write_text("".join(json.dumps({"id": r, "split": "test" if i < 2 else splits[i % 10],
                                                   "text": True, "b": True}) + "\n" for i, r in enumerate(ids)))
    return d / "m.jsonl", specs


def test_memo_space_reads_features_once_and_answers_the_same(tmp_path):
    from anybind import Space
    from anybind.memo import MemoSpace

    man, specs = _vectors_corpus(tmp_path)
    sp = Space.fit(man, encoders=specs, recipe="plain", epochs=2, seed=0, progress=False)
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(sp, name)

        def features(self, modality, values, cache=None, **kw):
            calls.append(len(values))
            return sp.features(modality, values, cache=cache, **kw)

    memo = MemoSpace(Counting())
    ids = ["r0", "r1", "r2", "r0"]
    first = memo.features("b", ids)
    second = memo.features("b", ids[::-1])
    assert calls == [3]  # three distinct values, read once; the second call is answered from memory
    assert np.array_equal(first, sp.features("b", ids)) and np.array_equal(second, first[::-1])
    assert memo.dim == sp.dim and memo.modalities == sp.modalities  # everything else is the space's


def test_embed_split_equals_embedding_through_the_encoders(tmp_path):
    from anybind import Space
    from anybind.cache import FeatureCache
    from anybind.evaluate import embed_split
    from anybind.space import as_manifests
    from anybind.train import FeatureSet

    man, specs = _vectors_corpus(tmp_path)
    sp = Space.fit(man, encoders=specs, recipe="plain", epochs=2, seed=0, progress=False)
    [m] = as_manifests(man, None, specs, False, False)
    fs = FeatureSet.from_manifests([m], specs, FeatureCache(tmp_path / "c"), progress=False)
    embs = embed_split(sp, fs, "test")
    test_ids = [r.id for r in m.records if r.split == "test"]
    assert set(embs) == {"text", "b"}
    for mod, e in embs.items():
        assert e.ids == test_ids
        assert np.allclose(e.vectors, sp.embed(mod, test_ids), atol=1e-5)
    keys = embs["b"].keys
    assert keys[0] == keys[1] and len(set(keys)) == len(keys) - 1  # identical content, identical key

"""Cluster bootstrap intervals (issue 16's transfer bench): queries that share a caption are resampled together, so
a corpus where several images share one caption (KTuberling) gets intervals as wide as its captions warrant."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.bench.stats import bootstrap, group_index, paired_vs_first

hit_lists = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None)
@given(hit_lists, st.integers(0, 5), st.randoms(use_true_random=False))
def test_groups_of_one_give_the_per_query_result_exactly(hits, seed, rnd):
    """All-distinct labels (in any order, of any type) resample exactly as the per-query bootstrap does."""
    h = np.array(hits)
    other = np.array([rnd.choice([0.0, 1.0]) for _ in hits])
    labels = rnd.sample(range(10 * len(hits)), len(hits))
    for others in ((), (other,), (other, 1 - h)):
        assert bootstrap(h, others, 300, seed, labels) == bootstrap(h, others, 300, seed)
    per = {"a": {"c": other}, "b": {"c": h}}
    assert paired_vs_first(["a", "b"], per, seed, 300, {"c": labels}) == paired_vs_first(["a", "b"], per, seed, 300)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=8, max_size=30).filter(lambda x: 0 < sum(x) < len(x)),
       st.integers(3, 6), st.integers(0, 5))
def test_duplicated_groups_widen_the_interval(per_group, copies, seed):
    """Every caption's queries hit or miss together (``copies`` each): resampling captions gives a wider interval
    (and a wider paired one) than resampling queries as if independent; the point estimate is the same mean."""
    h = np.repeat(per_group, copies)
    words = np.repeat([f"word {i}" for i in range(len(per_group))], copies)
    rng = np.random.default_rng(seed)
    base = np.repeat(rng.integers(0, 2, len(per_group)).astype(float), copies)
    m_q, (lo_q, hi_q), d_q = bootstrap(h, [base], 1000, seed)
    m_g, (lo_g, hi_g), d_g = bootstrap(h, [base], 1000, seed, words)
    assert m_g == m_q == h.mean()
    assert hi_g - lo_g > hi_q - lo_q
    assert d_g[1] - d_g[0] >= d_q[1] - d_q[0] or np.array_equal(h, base)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.integers(0, 6)), min_size=2, max_size=40),
       st.integers(0, 5))
def test_cluster_bootstrap_is_seeded_and_keeps_the_per_query_mean(items, seed):
    """Unequal group sizes: the point estimate is still the per-query mean; one seed, one answer; renaming the
    groups (same partition, same order of first appearance) changes nothing."""
    h = np.array([x[0] for x in items])
    g = [x[1] for x in items]
    got = bootstrap(h, [1 - h], 200, seed, g)
    assert got == bootstrap(h, [1 - h], 200, seed, g)
    assert got == bootstrap(h, [1 - h], 200, seed, [f"caption {x * 7 + 1}" for x in g])
    assert got[0] == h.mean() and got[1][0] <= h.mean() <= got[1][1]
    assert list(group_index(["b", "a", "b", "c", "a"])) == [0, 1, 0, 2, 1]
    assert list(group_index(["a", "a\x00", "a "])) == [0, 1, 2]  # numpy's str arrays drop trailing NULs


def test_label_count_must_match_the_queries():
    import pytest

    with pytest.raises(ValueError, match="3 group labels for 2 queries"):
        bootstrap(np.array([1.0, 0.0]), (), 10, 0, ["a", "b", "c"])
    for groups in (None, ["a", "b"]):  # a baseline of other queries: refused, not truncated or a numpy message
        with pytest.raises(ValueError, match=r"^bootstrap: others\[1\] has 3 values for 2 queries$"):
            bootstrap(np.array([1.0, 0.0]), [np.array([0.0, 1.0]), np.array([1.0, 1.0, 0.0])], 10, 0, groups)


def test_caption_groups_follow_the_retrieval_queries(tmp_path):
    """On a real (helper-encoder) text + image space: one label per scored query, in their order (a record
    without its image scores no query and gets no label), records of one caption in one group, and the clustered
    interval of the cell at least as wide as the per-query one there."""
    from index_helpers import make_space, write_corpus

    from anybind.bench.tasks_transfer import caption_groups, retrieval_hits_ids
    from anybind.data.manifest import load_manifest

    path = write_corpus(tmp_path, n=40, text=lambda i: f"stamp number {i % 7}")  # 7 captions, ~5 images each
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for i, r in enumerate(recs):
        r["split"] = "test"
    del recs[5]["image"]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    man = load_manifest(path)
    hits, ids = retrieval_hits_ids(make_space(seed=2), man, "test", tmp_path / "c")  # seed 3: no t->i hit at all
    assert ids == [r["id"] for r in recs if "image" in r]  # the scored queries' records, in their order
    groups = caption_groups(man, "test", ids)
    assert len(groups) == 39 == len(hits["t->i"]) == len(hits["i->t"])
    assert groups == [r["text"] for r in recs if "image" in r] and len(set(groups)) == 7
    for g in set(groups):  # t->i: one caption, one query vector, one relevant set: its queries hit or miss together
        assert len({hits["t->i"][i] for i, x in enumerate(groups) if x == g}) == 1
    assert all(0 < h.sum() < len(groups) for h in hits.values())  # neither direction constant: nothing vacuous
    for h in hits.values():
        lo_q, hi_q = bootstrap(h, (), 1000, 0)[1]
        lo_g, hi_g = bootstrap(h, (), 1000, 0, groups)[1]
        assert hi_g - lo_g > hi_q - lo_q


def test_tux_paint_test_split_has_shared_captions(tux_dir):
    """The real Tux Paint manifest: its test queries' groups are their captions, and some captions are shared
    (stamps of one thing), so the clusters differ from single queries there."""
    from anybind.bench.tasks_transfer import caption_groups
    from anybind.data.manifest import load_manifest

    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["text", "image"], progress=False)
    pairs = [r for r in man.split("test") if r.has("text") and r.has("image")]
    groups = caption_groups(man, "test", [r.id for r in pairs])
    assert len(groups) == len(pairs) > 20
    assert all(g == r.values["text"] for g, r in zip(groups, pairs))
    assert len(set(groups)) < len(groups)
    assert group_index(groups).max() + 1 == len(set(groups))


def test_the_transfer_bench_clusters_every_retrieval_cell(tux_dir, shared_cache, tmp_path, monkeypatch):
    """The wiring: on a real Tux Paint slice (one caption shared by two test pairs), every interval the transfer
    bench computes (no Fashion-MNIST cells) resamples the captions of that cell's queries -- a cell key the groups
    miss would silently fall back to per-query intervals."""
    from anybind.bench import tasks_transfer
    from anybind.bench.tasks_transfer import caption_groups
    from anybind.data.manifest import load_manifest

    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text"], progress=False)
    want, lines = {"train": 24, "val": 8, "test": 8}, []
    for r in man.records:
        if want[r.split] > 0 and r.has("image") and r.has("text") and not str(r.values["image"]).endswith(".svg"):
            want[r.split] -= 1
            text = "A shared caption." if r.split == "test" and want["test"] < 2 else r.values["text"]
            lines.append({"id": r.id, "split": r.split, "text": text, "image": str(r.values["image"])})
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    small = load_manifest(path, modalities=["image", "text"], progress=False)
    expected = {s: caption_groups(small, s, [r.id for r in small.split(s)]) for s in ("test", "val")}
    assert len(set(expected["test"])) == 7 == len(expected["test"]) - 1
    calls = []

    def recording(hits, others=(), n=1000, seed=0, groups=None):
        calls.append((len(hits), None if groups is None else groups.index.tolist(), id(groups)))
        return bootstrap(hits, others, n, seed, groups)

    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: {"tuxpaint": lambda w: path})
    monkeypatch.setattr(tasks_transfer, "bootstrap", recording)
    tasks_transfer.transfer(tmp_path / "work", cache=shared_cache, corpora="tuxpaint", train="each",
                            systems="defaults", fm="0", center="0", boot="20")
    assert len(calls) == 3 * 4  # label bridge, Procrustes, defaults; t->i, i->t on test and val
    want = {s: group_index(expected[s]).tolist() for s in expected}
    assert sorted(c[:2] for c in calls) == sorted([(8, want["test"])] * 6 + [(8, want["val"])] * 6)
    assert len({c[2] for c in calls}) == 2  # the clusters numbered once per split, shared by every row and direction


def test_clusters_compare_and_hash_by_identity():
    """Clusters holds numpy arrays: the dataclass-generated == raised (the truth value of an array is ambiguous) and
    so did hash; they are compared by identity (numbered once per cell, shared by every row), usable as dict keys."""
    from anybind.bench.stats import Clusters

    a, b = Clusters.of(["x", "y", "x"]), Clusters.of(["x", "y", "x"])
    assert a == a and a != b and not (a == b) and a != "x"
    assert {a: 1, b: 2}[a] == 1 and hash(a) == hash(a) and len({a, b, a}) == 2
    assert a.index.tolist() == b.index.tolist() == [0, 1, 0] and a.sizes.tolist() == [2.0, 1.0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 5), st.randoms(use_true_random=False))
def test_paired_wins_and_losses_count_seed_averaged_hits(n_seeds, n, seed, rnd):
    """With --opt seeds the rows' hits are seed means (fractions): a query is won where the row is right on more
    of the seeds than the first row, lost where on fewer, neither where on as many; one seed: only that row /
    only the first gets it right.  The difference is the difference of the seed-mean cells."""
    from anybind.bench.stats import seed_mean

    per = {r: [np.array([float(rnd.random() < 0.5) for _ in range(n)]) for _ in range(n_seeds)] for r in "ab"}
    right = {r: np.sum(per[r], 0) for r in per}  # seeds on which each query is right
    hits = {r: {"c": seed_mean(per[r])} for r in per}
    got = paired_vs_first(["a", "b"], hits, seed, 100)["b"]["c"]
    assert got["wins"] == int((right["b"] > right["a"]).sum()) and got["losses"] == int((right["b"] < right["a"]).sum())
    assert got["diff"] == pytest.approx(hits["b"]["c"].mean() - hits["a"]["c"].mean(), abs=1e-12)
    if n_seeds == 1:
        assert got["wins"] == int(((per["b"][0] == 1) & (per["a"][0] == 0)).sum())

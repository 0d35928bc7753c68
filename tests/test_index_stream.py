"""Bounded-memory paths for tables larger than memory (issue 21's 10M build): the streamed append, the exact
top-k accumulated block by block, tuning the LanceDB ANN on given truth, the seeded batch generator and the
bench's streamed part -- each against the in-memory path it stands in for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.errors import DataError
from anybind.index import Index, RunningTopK, exact_topk
from anybind.index.table import IndexTable


def _rows(index: Index) -> dict:
    t = index.table.to_arrow().sort_by("id")
    return {c: t.column(c).to_pylist() for c in t.column_names}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), block=st.integers(1, 120), k=st.integers(1, 15), nq=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_running_topk_equals_exact_topk_of_the_stacked_blocks(n, block, k, nq, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8)).astype(np.float32)
    Q = rng.standard_normal((nq, 8)).astype(np.float32)
    run = RunningTopK(Q, k)
    for s in range(0, n, block):
        run.add(X[s : s + block])
    S, I = run.result()
    S_ex, I_ex = exact_topk(Q, X, k)
    assert I.shape == I_ex.shape == (nq, min(k, n))
    np.testing.assert_array_equal(I, I_ex)  # continuous random scores: no ties
    np.testing.assert_allclose(S, S_ex, rtol=1e-6, atol=1e-6)


def _batches(X, ids, size, index=None, pulled=None):
    """``X`` in batches; with ``index``: asserts each batch is asked for only after the previous one is committed."""
    for s in range(0, len(X), size):
        if index is not None:
            assert len(index) == s, "the next batch was pulled before the previous one was written"
            pulled.append(s)
        yield ids[s : s + size], X[s : s + size]


def test_append_batches_stores_what_add_vectors_stores_one_batch_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((530, 16)).astype(np.float32) * 3  # not unit: both normalise
    ids = [f"r{i}" for i in range(530)]
    a = Index.create(tmp_path / "a", dim=16, identity="t")
    a.add_vectors(ids, X, "vec")
    b = Index.create(tmp_path / "b", dim=16, identity="t")
    pulled: list[int] = []
    stats = b.append_vector_batches(_batches(X, ids, 100, b, pulled), "vec", progress=True, total=530)
    assert pulled == [0, 100, 200, 300, 400, 500]
    assert (stats.added, stats.commits, stats.updated) == (530, 6, 0)
    assert b.meta["modalities"] == a.meta["modalities"] == ["vec"]
    ra, rb = _rows(a), _rows(b)
    assert ra == rb  # same ids, sources, labels, keys, vectors to the bit
    np.testing.assert_array_equal(b.snapshot().vectors[np.argsort(b.snapshot().meta.column("id").to_pylist())],
                                  a.snapshot().vectors[np.argsort(a.snapshot().meta.column("id").to_pylist())])
    q = X[7]
    assert [(h.id, h.score) for h in a.search_vectors(q[None], k=5)[0]] == \
        [(h.id, h.score) for h in b.search_vectors(q[None], k=5)[0]]


def test_append_batches_takes_sources_labels_and_keys(tmp_path):
    X = np.eye(4, dtype=np.float32)
    ids = ["a", "b", "c", "d"]
    extra = {"sources": ["s1", "s2", "s3", "s4"], "labels": [{"c": "x"}] * 4, "keys": list("klmn")}
    a = Index.create(tmp_path / "a", dim=4, identity="t")
    a.add_vectors(ids, X, "vec", **extra)
    b = Index.create(tmp_path / "b", dim=4, identity="t")
    b.append_vector_batches([(ids, X, extra)], "vec")
    assert _rows(a) == _rows(b)
    assert json.loads(_rows(b)["labels"][0]) == {"c": "x"}


def test_append_batches_refuses_ids_already_stored_before_writing_their_batch(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    idx = Index.create(tmp_path / "i", dim=8, identity="t")
    idx.add_vectors(["old1", "old2"], X[:2], "vec")
    idx.add_vectors(["x0"], X[:1], "other")  # another modality's id does not clash
    ids = [f"x{i}" for i in range(300)]
    # a repeat across batches: the batch holding it is refused, the ones before stay
    dup = ids[:200] + ["x5"] + ids[201:]
    with pytest.raises(DataError, match=r"^batch 3: id 'x5' \(vec\) is in the index already"):
        idx.append_vector_batches(_batches(X, dup, 100), "vec")
    assert idx.counts() == {"vec": 202, "other": 1}
    # an id stored before the stream began
    with pytest.raises(DataError, match=r"^batch 1: id 'old2' \(vec\) is in the index already"):
        idx.append_vector_batches([(["new", "old2"], X[:2])], "vec")
    # twice in one batch
    with pytest.raises(DataError, match="duplicate ids"):
        idx.append_vector_batches([(["y", "y"], X[:2])], "vec")
    with pytest.raises(DataError, match="8-d vectors"):
        idx.append_vector_batches([(["z"], np.ones((1, 5), np.float32))], "vec")
    assert idx.counts() == {"vec": 202, "other": 1}


@pytest.fixture(scope="module")
def ann_index(tmp_path_factory):
    """3,000 clustered 32-d rows with a LanceDB IVF-PQ index (used from 1,000 rows), and 40 queries."""
    rng = np.random.default_rng(2)
    C = rng.standard_normal((20, 32)).astype(np.float32)
    X = C[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 32)).astype(np.float32)
    Q = C[rng.integers(0, 20, 40)] + rng.standard_normal((40, 32)).astype(np.float32)
    idx = Index.create(tmp_path_factory.mktemp("ann") / "i", dim=32, identity="t", ann_threshold=1000)
    idx.add_vectors([str(i) for i in range(3000)], X, "vec")
    idx.create_ann("ivf_pq", num_partitions=8, num_sub_vectors=8)
    return idx, X, Q


def _no_snapshot(self):
    raise AssertionError("the table was loaded into memory")


def test_tune_ann_on_given_truth_matches_its_own_and_loads_no_snapshot(ann_index, monkeypatch):
    idx, X, Q = ann_index
    own = idx.tune_ann(0.9, 10, queries=Q, save=False)
    _, I = exact_topk(Q / np.linalg.norm(Q, axis=1, keepdims=True),
                      X / np.linalg.norm(X, axis=1, keepdims=True), 10)
    truth = [[(str(j), "vec") for j in row] for row in I]
    monkeypatch.setattr(IndexTable, "snapshot", _no_snapshot)
    given_ = idx.tune_ann(0.9, 10, queries=Q, save=False, truth=truth)
    assert given_["tried"] == own["tried"]
    assert given_["nprobes"] == own["nprobes"]
    from anybind.index import IndexError_

    with pytest.raises(IndexError_, match="one top-k list per query"):
        idx.tune_ann(0.9, 10, queries=Q[:3], save=False, truth=truth)


def test_search_through_the_lance_ann_loads_no_snapshot(ann_index, monkeypatch):
    """With no in-memory graph or codes, searching a table above ann_threshold reads only LanceDB's disk-resident
    index (a 10M-row table would not fit), one query or many, and returns the ANN's rows."""
    idx, _, Q = ann_index
    want = [t.column("id").to_pylist() for t in idx.lance_ann.search(Q, 10, None, with_vectors=False)]
    monkeypatch.setattr(IndexTable, "snapshot", _no_snapshot)
    many = idx.search_vectors(Q, k=10)
    one = idx.search_vectors(Q[0], k=10)
    assert [[h.id for h in hits] for hits in many] == want
    assert [h.id for h in one[0]] == want[0]


def test_clustered_batches_are_clustered_vectors_in_pieces():
    from anybind.bench.search_util import clustered_batches, clustered_vectors

    X, C = clustered_vectors(2500, 16, 7, np.random.default_rng(3), chunk=1000)
    rng = np.random.default_rng(3)
    C2 = rng.standard_normal((7, 16), dtype=np.float32)
    np.testing.assert_array_equal(C, C2)
    parts = list(clustered_batches(2500, C2, rng, chunk=1000))
    assert [len(p) for p in parts] == [1000, 1000, 500]
    np.testing.assert_array_equal(np.concatenate(parts), X)


def test_search_scale_streamed_part_runs_and_reports(tmp_path):
    """``--opt only=lance`` at a small n: builds, tunes on the accumulated truth, and its recall is the ANN's
    against exact search over the same rows regenerated in memory."""
    from anybind.bench import run_tasks

    recs = run_tasks(["search-scale"], work=tmp_path, seed=0,
                     options={"n": "3000", "only": "lance", "n_queries": "30", "partitions": "4", "sub_vectors": "16"})
    m = recs[0]["metrics"]
    for key in ("index/write_s", "ann/build_s", "ann/qps_single", "ann/qps_batch", "peak_rss_gb",
                "index/disk_gb", "ann/build_peak_gb"):
        assert m[key] > 0, key
    assert 0.5 <= m["ann/recall@10"] <= 1.0
    assert recs[0]["config"]["ann"]["type"] == "ivf_pq"
    assert any("peak memory < 4 GB" in n for n in recs[0]["notes"])
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match="only='bogus'"):
        run_tasks(["search-scale"], work=tmp_path, options={"n": "300", "only": "bogus"})


def test_append_batches_refuses_an_id_another_writer_stored_during_the_stream(tmp_path):
    """Another writer (here a second handle on the folder) stores an id between two batches: the batch holding
    it is refused under the writer lock, not appended as a second row of that id."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    ids = [f"x{i}" for i in range(300)]
    idx = Index.create(tmp_path / "i", dim=8, identity="t")
    other = Index.open(tmp_path / "i")

    def batches():
        yield ids[:100], X[:100]
        other.add_vectors(["x150"], X[:1], "vec")
        yield ids[100:200], X[100:200]

    with pytest.raises(DataError, match=r"^batch 2: id 'x150' \(vec\) is in the index already"):
        idx.append_vector_batches(batches(), "vec")
    got = idx.table.to_arrow().column("id").to_pylist()
    assert got.count("x150") == 1 and len(got) == 101


def _bad(X, row, value):
    X = X.copy()
    X[row] = value
    return X


@pytest.mark.parametrize("second, match", [
    (lambda ids, X: (ids, _bad(X, 3, np.nan)), r"^batch 2: row 3 \(id 'x13'\): non-finite values$"),
    (lambda ids, X: (ids, _bad(X, 4, np.inf)), r"^batch 2: row 4 \(id 'x14'\): non-finite values$"),
    (lambda ids, X: (ids, _bad(X, 5, 0.0)), r"^batch 2: row 5 \(id 'x15'\): a vector of zero norm"),
    (lambda ids, X: (ids[:2] + ["x10"] + ids[3:], X), r"^batch 2: id 'x10' twice"),
    (lambda ids, X: (ids, X[:, :5]), r"^batch 2: vectors of shape \(10, 5\): this index holds 8-d vectors$"),
    (lambda ids, X: (ids, X.astype(str)), r"^batch 2: vectors of dtype <U\d+: numbers expected$"),
    (lambda ids, X: (ids,), r"^batch 2: expected \(ids, vectors\) or \(ids, vectors, extras\), got a tuple of 1$"),
    (lambda ids, X: X, r"^batch 2: expected \(ids, vectors\) or \(ids, vectors, extras\), got a ndarray$"),
])
def test_append_batches_names_the_batch_and_row_of_a_bad_vector_in_one_line(tmp_path, second, match):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20, 8)).astype(np.float32)
    ids = [f"x{i}" for i in range(20)]
    idx = Index.create(tmp_path / "i", dim=8, identity="t")
    with pytest.raises(DataError, match=match) as e:
        idx.append_vector_batches([(ids[:10], X[:10]), second(ids[10:], X[10:])], "vec")
    assert "\n" not in str(e.value) and e.value.__cause__ is None
    assert idx.counts() == {"vec": 10}  # the first batch stays, nothing of the second was written


def test_append_batches_into_a_table_written_before_the_size_column(tmp_path):
    """A table created before a column was added keeps its schema: the stream writes the columns it has, as
    add_vectors does."""
    X = np.eye(8, dtype=np.float32)
    idx = Index.create(tmp_path / "i", dim=8, identity="t")
    idx.add_vectors(["a"], X[:1], "vec")
    idx.table.drop_columns(["size"])
    old = Index.open(tmp_path / "i")
    old.append_vector_batches([(["b", "c"], X[1:3])], "vec")
    old.add_vectors(["d"], X[3:4], "vec")
    assert sorted(old.table.to_arrow().column("id").to_pylist()) == ["a", "b", "c", "d"]
    assert "size" not in old.table.schema.names


def test_append_batches_hashes_each_stored_id_once_and_handles_hash_collisions(tmp_path, monkeypatch):
    """The ids stored are read once (not again after each of the stream's own commits); distinct ids whose 64-bit
    hashes collide (forced here: every id hashes to one of 3 values) are all written, a real repeat still refused."""
    from anybind.index import append

    hashed = []
    real = append._hashes
    monkeypatch.setattr(append, "_hashes", lambda ids: hashed.append(len(ids)) or real(ids))
    rng = np.random.default_rng(6)
    X = rng.standard_normal((1300, 8)).astype(np.float32)
    ids = [f"r{i}" for i in range(1300)]
    idx = Index.create(tmp_path / "i", dim=8, identity="t")
    idx.add_vectors(ids[:50], X[:50], "vec")
    idx.append_vector_batches(_batches(X[50:600], ids[50:600], 100), "vec")
    assert sum(hashed) == 50 + 550  # the 50 stored before, then each appended id once
    monkeypatch.setattr(append, "_hashes", lambda ids: np.array([len(i) % 3 for i in ids], np.uint64))
    stats = idx.append_vector_batches(_batches(X[600:], ids[600:], 700), "vec")
    assert stats.added == 700 and len(idx) == 1300
    with pytest.raises(DataError, match=r"'r1299' \(vec\) is in the index already"):
        idx.append_vector_batches([([f"n{i}" for i in range(600)] + ["r1299"], X[:601])], "vec")
    assert len(idx) == 1300


def test_append_batches_registers_its_modality_only_with_rows(tmp_path):
    """An empty stream, or one whose first batch is refused, leaves index.json's modalities as they were (as
    add_vectors with bad vectors does)."""
    idx = Index.create(tmp_path / "i", dim=4, identity="t")
    idx.add_vectors(["a"], np.eye(4, dtype=np.float32)[:1], "vec")
    assert idx.append_vector_batches(iter(()), "empty").added == 0
    with pytest.raises(DataError, match="batch 1"):
        idx.append_vector_batches([(["b"], np.zeros((1, 4), np.float32))], "typo")

    def broken():
        raise OSError("disk gone")
        yield

    with pytest.raises(OSError, match="disk gone"):
        idx.append_vector_batches(broken(), "gen")
    assert idx.meta["modalities"] == Index.open(tmp_path / "i").meta["modalities"] == ["vec"]
    idx.append_vector_batches([(["b"], np.eye(4, dtype=np.float32)[1:2])], "new")
    assert Index.open(tmp_path / "i").meta["modalities"] == ["new", "vec"]


@pytest.mark.parametrize("extra, match", [
    ({"sources": ["s1"]}, r"^batch 1: 1 sources for 2 ids$"),
    ({"labels": [{}] * 3}, r"^batch 1: 3 labels for 2 ids$"),
    ({"keys": ["k"]}, r"^batch 1: 1 keys for 2 ids$"),
    ({"source": ["s1", "s2"]}, r"^batch 1: extras 'source': use sources, labels, keys$"),
])
def test_append_batches_refuses_extras_that_do_not_fit_the_batch(tmp_path, extra, match):
    idx = Index.create(tmp_path / "i", dim=4, identity="t")
    with pytest.raises(DataError, match=match) as e:
        idx.append_vector_batches([(["a", "b"], np.eye(4, dtype=np.float32)[:2], extra)], "vec")
    assert e.value.__cause__ is None and len(idx) == 0
    if "source" not in extra:
        with pytest.raises(DataError, match=match.replace("^batch 1: ", "^")):
            idx.add_vectors(["a", "b"], np.eye(4, dtype=np.float32)[:2], "vec", **extra)


def test_tune_ann_refuses_truth_longer_than_k(ann_index):
    """Truth lists of another k (a top-100 given for k=10) would cap every recall at 0.1 and tune to the most
    thorough setting in silence: refused in one line."""
    idx, X, Q = ann_index
    _, I = exact_topk(Q / np.linalg.norm(Q, axis=1, keepdims=True),
                      X / np.linalg.norm(X, axis=1, keepdims=True), 20)
    from anybind.index import IndexError_

    with pytest.raises(IndexError_, match=r"^truth of query 0 lists 20 rows: the exact top-10 expected$"):
        idx.tune_ann(0.9, 10, queries=Q, save=False, truth=[[(str(j), "vec") for j in row] for row in I])


@pytest.mark.parametrize("bad, match", [
    (lambda I, Q: dict(queries=Q, truth=[[(str(j), "text") for j in r] for r in I]),
     r"^truth of query 0 names modality 'text': this index holds vec$"),
    (lambda I, Q: dict(queries=Q, modality="vec", truth=[[(str(j), "other") for j in r] for r in I]),
     r"^truth of query 0 names modality 'other': the tuning searches modality 'vec' only$"),
    (lambda I, Q: dict(queries=Q, truth=[[str(j) for j in r] for r in I]),
     r"^truth of query 0: entry 0 is '\d+', not an \(id, modality\) pair of strings$"),
    (lambda I, Q: dict(queries=Q, truth=[[(int(j), "vec") for j in r] for r in I]),
     r"^truth of query 0: entry 0 is \(\d+, 'vec'\), not an \(id, modality\) pair of strings$"),
    (lambda I, Q: dict(queries=Q, truth=[[(str(j + 5000), "vec") for j in r] for r in I]),
     r"^truth of query 0 names id '\d+' \(vec\), which this index does not hold$"),
    (lambda I, Q: dict(queries=Q, truth=[[(str(j), "vec") for j in r[:1]] + [(str(j), "vec") for j in r[:9]]
                                         for r in I]),
     r"^truth of query 0 lists id '\d+' \(vec\) twice: the exact top-10 names each row once$"),
    (lambda I, Q: dict(queries=Q[:, :16], truth=[[(str(j), "vec") for j in r] for r in I]),
     r"^queries are 16-d: this index holds 32-d vectors$"),
    (lambda I, Q: dict(queries=Q[:, :16]), r"^queries are 16-d: this index holds 32-d vectors$"),
], ids=["modality", "modality-filter", "bare-ids", "int-ids", "unknown-ids", "twice", "dim-with-truth", "dim"])
def test_tune_ann_refuses_truth_or_queries_that_do_not_match_the_index(ann_index, bad, match):
    """A truth of another modality, another table or another shape scored recall 0 at every setting and tuned to
    the slowest one in silence (queries of another dimension were LanceDB's ValueError): refused in one line."""
    idx, X, Q = ann_index
    from anybind.index import IndexError_

    _, I = exact_topk(Q / np.linalg.norm(Q, axis=1, keepdims=True),
                      X / np.linalg.norm(X, axis=1, keepdims=True), 10)
    with pytest.raises(IndexError_, match=match) as e:
        idx.tune_ann(0.9, 10, save=False, **bad(I, Q))
    assert "\n" not in str(e.value)

"""The fast path of a search on the in-memory graph or the quantised codes (issue 21): hits are made
straight from the row numbers and the snapshot's hit columns (no Arrow table per query).  They must be
the hits the general path makes: the same ids, modalities, sources, labels, scores and ranks, for any
``k`` and filter, on the Tux Paint corpus' own ids, file paths and labels."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from anybind.errors import DataError
from anybind.bench.search_util import clustered_vectors
from anybind.index import Index
from anybind.index.search import hits_of_rows
from anybind.index.store import HIT_COLUMNS, objects_of

pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")

SLOW = settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _tux_rows(tux_dir, n=400):
    recs = [json.loads(line) for line in (tux_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r.get("image") and r.get("text")][:n]
    assert len(recs) >= 200
    return recs


def _tux_index(folder, recs):
    """The corpus' records (real ids, image paths, texts as sources, labels), one image row and one text row
    each, with clustered 32-d vectors; and queries near the clusters."""
    rng = np.random.default_rng(0)
    X, C = clustered_vectors(2 * len(recs), 32, 12, rng)
    ix = Index.create(folder, dim=32, identity="t32", ann_threshold=0)
    ids = [r["id"] for r in recs]
    labels = [r.get("labels") or {} for r in recs]
    ix.add_vectors(ids, X[: len(recs)], "image", sources=[r["image"] for r in recs], labels=labels)
    ix.add_vectors(ids, X[len(recs):], "text", sources=[r["text"] for r in recs], labels=labels)
    Q, _ = clustered_vectors(6, 32, len(C), rng, centers=C)
    return ix, Q


@pytest.fixture(scope="module")
def tux_index(tux_dir, tmp_path_factory):
    """The in-memory graph searched at an ef above the row count (exhaustive on this size: its hits are
    the exact ones)."""
    recs = _tux_rows(tux_dir)
    ix, Q = _tux_index(tmp_path_factory.mktemp("fasthits") / "ix", recs)
    ix.create_memory_ann(ef=8 * len(recs))
    return ix, Q, recs


def _same(got, want):
    assert [[(h.id, h.modality, h.source, h.labels, h.rank) for h in row] for row in got] == \
        [[(h.id, h.modality, h.source, h.labels, h.rank) for h in row] for row in want]
    for g, w in zip(got, want):
        assert [h.score for h in g] == pytest.approx([h.score for h in w], abs=1e-5)
        assert all(a.score >= b.score for a, b in zip(g, g[1:]))


@SLOW
@given(k=st.integers(1, 60), mod=st.sampled_from([None, "image", "text", ("image", "text")]),
       top=st.sampled_from([None, "one", "two"]))
def test_graph_hits_are_the_exact_hits(tux_index, k, mod, top):
    ix, Q, recs = tux_index
    tops = sorted({(r.get("labels") or {}).get("top") for r in recs} - {None})
    labels = None if top is None else {"top": tops[:1] if top == "one" else tops[:2]}
    got = ix.search_vectors(Q, k=k, modality=mod, labels=labels)
    _same(got, ix.search_vectors(Q, k=k, modality=mod, labels=labels, exact=True))
    by_id = {r["id"]: r for r in recs}
    for row in got:  # the fields are the stored record's
        for h in row:
            assert h.source == by_id[h.id][h.modality] and h.labels == (by_id[h.id].get("labels") or {})


def test_quantised_hits_are_the_exact_hits(tux_dir, tmp_path):
    ix, Q = _tux_index(tmp_path / "q", _tux_rows(tux_dir, 300))
    for kind in ("int8", "binary"):
        ix.quantize(kind, rescore=10_000)  # every row rescored with its float vector: the exact answer
        for k, mod, labels in ((1, None, None), (10, "text", None), (25, ("image", "text"), {"top": "animals"})):
            _same(ix.search_vectors(Q, k=k, modality=mod, labels=labels),
                  ix.search_vectors(Q, k=k, modality=mod, labels=labels, exact=True))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(st.integers(-1, 799), min_size=0, max_size=12), min_size=1, max_size=5),
       seed=st.integers(0, 2**16), ordered=st.booleans())
def test_hits_of_rows_match_the_table_rows(tux_index, rows, seed, ordered):
    """The vectorised hits against the table's own rows (an Arrow take, as the general path reads them)."""
    ix, _, _ = tux_index
    snap = ix.snapshot()
    width = max(len(r) for r in rows)
    R = np.array([r + [-1] * (width - len(r)) for r in rows], np.int64).reshape(len(rows), width)
    R = np.where(R >= 0, R % len(snap.vectors), -1)
    S = np.random.default_rng(seed).random(R.shape).astype(np.float32)
    if ordered:  # best first, as the graph and the codes give them (ties included)
        S = -np.sort(-np.round(S, 1), axis=1)
    got = hits_of_rows(snap.hit_columns(), S, R, ordered=ordered)
    for i, hits in enumerate(got):
        live = R[i][R[i] >= 0]
        t = snap.meta.take(pa.array(live, pa.int64())).to_pylist()
        order = np.argsort(-S[i][R[i] >= 0], kind="stable")
        assert [(h.id, h.modality, h.source, h.score, h.rank) for h in hits] == [
            (t[j]["id"], t[j]["modality"], t[j]["source"], float(S[i][R[i] >= 0][j]), r + 1)
            for r, j in enumerate(order)]
        assert [h.labels for h in hits] == [json.loads(t[j]["labels"]) for j in order]


@settings(max_examples=60, deadline=None)
@given(vals=st.lists(st.one_of(st.none(), st.sampled_from(["", "{}", "image", "a/b.png"]), st.text(max_size=8)),
                     max_size=40), cut=st.integers(0, 40))
def test_objects_of_is_to_pylist(vals, cut):
    """One chunk or two, nulls and repeats: the object array holds exactly the column's values, one string
    object per distinct value."""
    col = pa.chunked_array([pa.array(vals[:cut], pa.string()), pa.array(vals[cut:], pa.string())])
    got = objects_of(col)
    assert got.dtype == object and got.tolist() == vals
    seen = {}
    for x in got:
        if x is not None:
            assert seen.setdefault(x, x) is x  # repeats share one object


def test_hit_columns_are_made_once_per_snapshot(tux_index):
    ix, _, _ = tux_index
    snap = ix.snapshot()
    cols = snap.hit_columns()
    assert snap.hit_columns() is cols and cols._fields == HIT_COLUMNS
    assert all(len(c) == len(snap.vectors) for c in cols)
    assert all(a is b for a, b in zip(cols.modality, snap.modality))  # the same string objects, not copies
    assert list(cols) == [snap.meta.column(c).to_pylist() for c in HIT_COLUMNS]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), d=st.integers(1, 300), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_the_cheaper_norms_are_bitwise_the_general_ones(rows, d, scale, seed):
    """unit_rows and a one-vector cosine query skip numpy's checks, not its arithmetic: the same bits."""
    from anybind.index.exact import unit_rows
    from anybind.scoring import Scorer

    x = (np.random.default_rng(seed).standard_normal((rows, d)) * scale).astype(np.float32)
    assert np.array_equal(unit_rows(x), x / np.linalg.norm(x, axis=-1, keepdims=True))
    assert np.array_equal(unit_rows(x[0]), x[0] / np.linalg.norm(x[0], axis=-1, keepdims=True))
    u = unit_rows(x[0])
    general = (np.ones(1, np.float32)[:, None] * u[None]).sum(0).astype(np.float32)
    got = Scorer().query([(None, u)])
    assert got.dtype == np.float32 and np.array_equal(got, general) and got is not u
    assert float(np.sqrt(got @ got)) == float(np.linalg.norm(got))


@settings(max_examples=80, deadline=None)
@given(d=st.integers(1, 1600), scale=st.floats(1e-6, 1e6), seed=st.integers(0, 2**32 - 1))
def test_one_row_normalised_alone_is_its_batch_row_to_the_bit(d, scale, seed):
    """unit_rows of one query row (its own lane: the square root in Python, a scalar division) gives the bits the
    batch path gives that row, past numpy's pairwise-summation blocks (d > 128): the same scores downstream."""
    from anybind.index.exact import unit_rows

    X = (np.random.default_rng(seed).standard_normal((3, d)) * scale).astype(np.float32)
    batch = unit_rows(X)
    for x, b in zip(X, batch):
        one = unit_rows(x[None])
        assert one.shape == (1, d) and one.dtype == np.float32 and one is not x
        assert np.array_equal(one[0].view(np.int32), b.view(np.int32))
    with pytest.raises(DataError, match="zero norm"):
        unit_rows(np.zeros((1, d), np.float32))


def test_a_vector_query_takes_the_short_lane_to_the_same_hits(tux_index):
    """Index.search with one raw vector (no weights) skips the embedding and fusion lists; with a weight of 1
    it goes the general way: the same hits, the same scores to the bit, on the graph and exactly."""
    ix, Q, _ = tux_index
    for q in Q[:4] * 3.0:  # not unit length: normalised on the way
        for exact in (None, True):
            for mod in (None, "text"):
                lane = ix.search(q, k=15, modality=mod, exact=exact)
                general = ix.search(q, k=15, modality=mod, exact=exact, weights=[1.0])
                assert [h.to_dict() for h in lane] == [h.to_dict() for h in general] and len(lane) == 15
                v, _ = ix.embed_query(q)  # the general fusion's direction
                assert [h.to_dict() for h in lane] == [h.to_dict() for h in ix.search_vectors(
                    v[None], k=15, modality=mod, exact=exact)[0]]


@settings(max_examples=300, deadline=None)
@given(rows=st.integers(1, 3), d=st.integers(1, 300), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_renormed_is_unit_rows_to_the_bit(rows, d, scale, seed):
    """The lane's second normalisation of a query direction (skipping the division when the norm is exactly 1)
    gives unit_rows' bits: the same scores and order downstream."""
    from anybind.index.exact import renormed, unit_rows

    x = (np.random.default_rng(seed).standard_normal((rows, d)) * scale).astype(np.float32)
    u = unit_rows(x)
    u = u / np.sqrt(np.add.reduce(u * u, axis=-1, keepdims=True))  # a direction: unit already, up to rounding
    got = renormed(u.copy())
    assert got.dtype == np.float32 and got.shape == u.shape and np.array_equal(got, unit_rows(u))
    assert np.array_equal(np.signbit(got), np.signbit(unit_rows(u)))  # -0.0 stays -0.0


def test_renormed_takes_both_branches():
    """On random 256-d directions the norm rounds to exactly 1 for some and not for others: both branches of
    renormed are exercised by the property test above, and the skip is taken often enough to matter."""
    from anybind.index.exact import unit_rows

    u = unit_rows(np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32))
    n = np.sqrt(np.add.reduce(u * u, axis=-1, keepdims=True))[:, 0]
    assert 0 < int((n == 1.0).sum()) < len(n)


@SLOW
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 3.0, 1e3]), k=st.integers(1, 40),
       mod=st.sampled_from([None, "text", ("image", "text")]), exact=st.sampled_from([None, True]))
def test_the_lane_gives_the_general_hits_on_a_narrow_graph(tux_ann_narrow, seed, scale, k, mod, exact):
    """Index.search with one raw vector against search_vectors with the general fusion's direction, on a graph
    searched at a small ef (its hits are not the exact ones): the same ids, ranks and scores, to the bit."""
    ix = tux_ann_narrow
    q = (np.random.default_rng(seed).standard_normal(32) * scale).astype(np.float32)
    lane = ix.search(q, k=k, modality=mod, exact=exact)
    v, _ = ix.embed_query(q)
    general = ix.search_vectors(v[None], k=k, modality=mod, exact=exact)[0]
    assert [h.to_dict() for h in lane] == [h.to_dict() for h in general] and len(lane) == k
    assert [h.to_dict() for h in lane] == [h.to_dict() for h in ix.search(q, k=k, modality=mod, exact=exact,
                                                                          weights=[1.0])]


@pytest.fixture(scope="module")
def tux_ann_narrow(tux_dir, tmp_path_factory):
    ix, _ = _tux_index(tmp_path_factory.mktemp("narrow") / "ix", _tux_rows(tux_dir))
    ix.create_memory_ann(M=4, ef_construction=8, ef=1)
    return ix


def test_hits_are_slotted_and_still_serialise():
    """Hit is a slotted dataclass (faster to make, k per query): no __dict__, but to_dict, dataclasses.replace,
    JSON and pickling work as before."""
    import dataclasses
    import pickle

    from anybind.index import Hit

    h = Hit("a", "image", 0.5, "x.png", {"top": "animals"}, 1)
    assert not hasattr(h, "__dict__")
    assert json.loads(json.dumps(h.to_dict())) == {"id": "a", "modality": "image", "score": 0.5, "source": "x.png",
                                                   "labels": {"top": "animals"}, "rank": 1}
    assert dataclasses.replace(h, probability=0.9).to_dict()["probability"] == 0.9
    assert pickle.loads(pickle.dumps(h)) == h
    with pytest.raises(AttributeError):
        h.extra = 1


def test_the_graph_lock_keeps_writers_and_readers_apart():
    """The in-memory graph's lock: readers share it; a writer waits for the last reader and holds off new
    readers while it waits; the last reader wakes it (readers only notify when a writer waits)."""
    import threading

    from anybind.index.memann import RWLock

    lock = RWLock()
    log: list[str] = []
    wrote = threading.Event()

    def writer():
        with lock.write():
            log.append("write")
        wrote.set()

    def late_reader():
        with lock.read():
            log.append("late read")

    with lock.read(), lock.read():  # two readers at once
        w = threading.Thread(target=writer)
        w.start()
        while not lock._waiting:  # the writer is queued
            threading.Event().wait(0.001)
        r = threading.Thread(target=late_reader)
        r.start()
        assert not wrote.wait(0.2) and log == []  # neither the writer nor the late reader got in
    assert wrote.wait(30)
    r.join(30)
    w.join(30)
    assert log == ["write", "late read"]  # the waiting writer went before the reader that came after it
    with lock.read():  # free again
        pass

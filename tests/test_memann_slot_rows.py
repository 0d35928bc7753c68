"""The in-memory graph maps its slots to snapshot rows; while every slot is its own row (a fresh graph) the
mapping is skipped (the labels are the rows).  Both ways must give ``slot_row[labels]``, and searches after
deletions and additions (slots no longer their rows) must still give the exact hits of the current version."""

from __future__ import annotations

import numpy as np
import pytest

from anybind.bench.search_util import clustered_vectors
from anybind.index import Index

pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")


def test_slot_rows_with_and_without_the_identity_shortcut(tmp_path):
    rng = np.random.default_rng(5)
    X, C = clustered_vectors(260, 16, 5, rng)
    ix = Index.create(tmp_path / "ix", dim=16, identity="t16", ann_threshold=0)
    ix.add_vectors([f"r{i}" for i in range(200)], X[:200], "vec")
    ix.create_memory_ann(ef=400)  # exhaustive at this size: the graph's hits are the exact ones
    Q, _ = clustered_vectors(5, 16, len(C), rng, centers=C)
    ann = ix._fast._memory_ann()

    def check(identity):
        for q in Q:
            got, want = ix.search(q, k=12), ix.search(q, k=12, exact=True)
            assert [h.id for h in got] == [h.id for h in want]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
        labels, _ = ann.graph.knn_query(Q, k=12)
        got = ann._rows_of(labels)
        assert got.dtype == np.int64 and np.array_equal(got, ann.slot_row[labels])
        assert ann._same[1] is identity

    check(identity=True)
    ix.delete(["r3", "r50", "r199"])  # their slots point nowhere now; rows after them move up
    check(identity=False)
    ix.add_vectors([f"n{i}" for i in range(60)], X[200:], "vec")  # new slots for new rows
    check(identity=False)
    hits = ix.search(X[210], k=3)
    assert hits[0].id == "n10" and not {"r3", "r50", "r199"} & {h.id for h in ix.search(X[3], k=20)}

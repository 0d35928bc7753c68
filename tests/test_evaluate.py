"""Retrieval metrics against a naive reference; zero-shot on a known geometry."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anybind.evaluate import pair_recalls, ranks_of_diagonal, retrieval_from_embeddings


def naive_recall1(Q, G):
    """Reference: a query is right at rank 1 when its best relevant item beats every irrelevant one."""
    hits = 0
    for i in range(len(Q)):
        relevant = [j for j in range(len(G)) if np.array_equal(Q[j], Q[i]) or np.array_equal(G[j], G[i])]
        best = max(Q[i] @ G[j] for j in relevant)
        others = [Q[i] @ G[j] for j in range(len(G)) if j not in relevant]
        hits += all(o < best for o in others)
    return hits / len(Q)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.just(3)), elements=st.integers(-3, 3).map(float)))
def test_ranks_match_naive_reference_including_ties(x):
    sim = x @ x.T
    naive = [1 + sum(1 for j in range(len(sim)) if j != i and sim[i, j] >= sim[i, i]) for i in range(len(sim))]
    assert np.array_equal(ranks_of_diagonal(sim), naive)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 9), st.just(3)), elements=st.integers(-3, 3).map(float)),
       st.data())
def test_a_query_with_nan_scores_ranks_last_never_first(x, data):
    """A NaN in a query's scores (a non-finite map: the ridge start's candidates are scored with these ranks) ranks
    its relevant item last, as a collapsed space's ties do; before, every comparison with NaN was False: rank 1."""
    sim = x @ x.T
    i = data.draw(st.integers(0, len(sim) - 1))
    sim[i, data.draw(st.integers(0, len(sim) - 1))] = np.nan
    ranks = ranks_of_diagonal(sim)
    assert ranks[i] == len(sim)
    others = np.arange(len(sim)) != i
    assert np.array_equal(ranks[others], ranks_of_diagonal(np.nan_to_num(sim, nan=-np.inf))[others])


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 10), st.just(2)), elements=st.integers(-2, 2).map(float)),
    st.randoms(use_true_random=False),
)
def test_duplicates_count_as_correct_like_naive_reference(q, rnd):
    g = q[:, ::-1] * 2 + 1
    g = g[[rnd.randrange(len(g)) if rnd.random() < 0.3 else i for i in range(len(g))]]  # some gallery duplicates
    # content keys = the rows themselves (as the frozen input features would be)
    assert pair_recalls(q, g, query_keys=q, gallery_keys=g)["R@1"] == naive_recall1(q, g)


def test_collapsed_space_scores_badly_even_with_content_keys():
    keys = [f"item{i}" for i in range(10)]  # ten different contents
    Q = np.ones((10, 4))
    G = np.ones((10, 4))  # a collapsed space: every embedding identical
    assert pair_recalls(Q, G, query_keys=keys, gallery_keys=keys)["R@1"] == 0.0
    dup = ["a", "a"] + keys[2:]  # the first two queries have identical content: either partner is right
    rng = np.random.default_rng(0)
    G2 = rng.normal(size=(10, 4))
    G2 /= np.linalg.norm(G2, axis=1, keepdims=True)
    Q2 = G2.copy()
    Q2[0] = Q2[1] = G2[1]  # identical content -> identical query embeddings
    assert pair_recalls(Q2, G2)["R@1"] == 0.9
    assert pair_recalls(Q2, G2, query_keys=dup)["R@1"] == 1.0


def test_perfect_and_reversed_retrieval():
    X = np.eye(20, dtype=np.float32)
    r = pair_recalls(X, X)
    assert r["R@1"] == 1.0 and r["MdR"] == 1.0 and r["n"] == 20
    r = pair_recalls(X, np.roll(X, 1, axis=0))
    assert r["R@1"] == 0.0


def test_retrieval_uses_only_records_with_both_modalities():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 4))
    embs = {"image": (["a", "b", "c", "d", "e"], A), "text": (["c", "a", "e"], A[[2, 0, 4]])}
    res = retrieval_from_embeddings(embs)
    assert res["image->text/n"] == 3 and res["text->image/n"] == 3
    assert res["image->text/R@1"] == 1.0


def test_embeddings_are_typed_and_plain_tuples_still_work():
    """embed_records' results are Embedded(ids, vectors, keys); a plain (ids, X) tuple means no keys, and
    content keys make identical items interchangeable (the third element is no longer found by len())."""
    from anybind.metrics import Embedded, retrieval_from_embeddings

    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 8)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B = A.copy()
    B[[1, 2]] = B[[2, 1]]  # items 1 and 2 swapped in the gallery
    ids = [f"r{i}" for i in range(6)]
    plain = retrieval_from_embeddings({"a": (ids, A), "b": (ids, B)})
    typed = retrieval_from_embeddings({"a": Embedded(ids, A), "b": Embedded(ids, B)})
    assert plain == typed and plain["a->b/R@1"] == pytest.approx(4 / 6)
    keys = ["k0", "dup", "dup", "k3", "k4", "k5"]  # 1 and 2 have identical content: either is right
    keyed = retrieval_from_embeddings({"a": Embedded(ids, A, keys), "b": Embedded(ids, B, keys)})
    assert keyed["a->b/R@1"] == 1.0

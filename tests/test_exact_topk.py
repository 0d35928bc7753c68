"""Exact top-k search (``anybind.index.exact_topk``): the blocked running-threshold path against a brute-force
reference, exactly (ids included), on inputs full of ties, for any block shapes, row subsets and k."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.errors import DataError
from anybind.index import exact, exact_topk


def reference(Q, X, k, rows=None):
    """Best first by score, equal scores by position in ``rows`` (by index without it): a full sort."""
    pool = np.arange(len(X)) if rows is None else np.asarray(rows)
    full = Q.astype(np.float64) @ X[pool].astype(np.float64).T  # small integers: exact in any order
    pos = np.broadcast_to(np.arange(len(pool)), full.shape)
    order = np.lexsort((pos, -full), axis=1)[:, : min(k, len(pool))]
    return np.take_along_axis(full, order, 1).astype(np.float32), pool[order]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 400),
    nq=st.integers(1, 12),
    d=st.integers(1, 6),
    k=st.integers(1, 30),
    levels=st.integers(1, 4),
    block=st.sampled_from([1, 5, 7, 64, 333, 1 << 20]),
    query_block=st.integers(1, 12),
    subset=st.sampled_from(["all", "sorted", "shuffled"]),
)
def test_exact_topk_ids_and_tie_order_match_a_full_sort(seed, n, nq, d, k, levels, block, query_block, subset):
    """Small-integer vectors (every score exact in float32, many equal): the same ids in the same order as
    a full stable sort, whatever the blocks (one column at a time up to one block), rows and k."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-levels, levels + 1, size=(n, d)).astype(np.float32)
    Q = rng.integers(-levels, levels + 1, size=(nq, d)).astype(np.float32)
    rows = None
    if subset != "all":
        rows = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        rows = np.sort(rows) if subset == "sorted" else rows
    S, idx = exact_topk(Q, X, k, rows=rows, block_floats=block, query_block=query_block)
    want_s, want_i = reference(Q, X, k, rows)
    assert idx.dtype == np.int64 and S.dtype == np.float32
    assert idx.tolist() == want_i.tolist()
    assert S.tolist() == want_s.tolist()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 3000), k=st.integers(1, 40), nq=st.integers(1, 40),
       dup=st.booleans())
def test_exact_topk_float_vectors_agree_with_brute_force(seed, n, k, nq, dup):
    """Unit float vectors (some rows repeated, so some scores tie): scores to float32 rounding, and the ids
    those scores belong to, against numpy's full product."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 24)).astype(np.float32)
    if dup and n > 1:
        X[rng.integers(0, n, n // 3)] = X[rng.integers(0, n, n // 3)]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X[rng.integers(0, n, nq)] + 0.1 * rng.normal(size=(nq, 24)).astype(np.float32)
    block = int(rng.choice([16, 999, 1 << 20]))
    S, idx = exact_topk(Q, X, k, block_floats=block)
    full = Q @ X.T
    want = -np.sort(-full, axis=1)[:, : min(k, n)]
    assert np.allclose(S, want, atol=1e-5)
    assert np.allclose(np.take_along_axis(full, idx, 1), S, atol=1e-5)
    assert all(len(set(r)) == len(r) for r in idx.tolist())  # no row twice
    assert (S[:, :-1] >= S[:, 1:]).all()


def test_exact_topk_nan_scores_rank_as_torch_topk_ranks_them():
    """A vector with a NaN: ranked first, as torch.topk ranks NaN (the plain path answers such searches)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    X[17, 2] = np.nan
    Q = rng.normal(size=(3, 4)).astype(np.float32)
    for block in (8, 1 << 20):
        S, idx = exact_topk(Q, X, 5, block_floats=block, query_block=2)
        v, i = torch.topk(torch.from_numpy(Q @ X.T), 5, dim=1)
        assert (idx[:, 0] == 17).all() and np.isnan(S[:, 0]).all()
        assert idx[:, 1:].tolist() == i[:, 1:].tolist()


@pytest.mark.parametrize("k", [0, 1, 3])
def test_exact_topk_empty_inputs(k):
    X = np.ones((4, 3), np.float32)
    S, idx = exact_topk(np.zeros((0, 3), np.float32), X, k)
    assert S.shape[0] == idx.shape[0] == 0
    S, idx = exact_topk(np.ones((2, 3), np.float32), X, k, rows=np.array([], np.int64))
    assert S.shape == idx.shape == (2, 0)


def test_exact_topk_rows_in_any_memory_order():
    """``rows`` reversed or strided (numpy views with negative or large strides) search the rows they name: a
    reversed view raised torch's 'negative strides' ValueError."""
    rng = np.random.default_rng(1)
    X = rng.integers(-3, 4, size=(60, 5)).astype(np.float32)
    Q = rng.integers(-3, 4, size=(4, 5)).astype(np.float32)
    base = np.arange(60, dtype=np.int64)
    for rows in (base[::-1], base[50:10:-3], base[::4], np.asfortranarray(base[None, ::-2])[0]):
        S, idx = exact_topk(Q, X, 7, rows=rows, block_floats=16)
        want_s, want_i = reference(Q, X, 7, rows)
        assert idx.tolist() == want_i.tolist() and S.tolist() == want_s.tolist()


@pytest.mark.parametrize("rows", [np.array([True, False, True, True] + [False] * 6), np.array([0.0, 2.7, 3.2])])
def test_exact_topk_rows_that_are_not_row_numbers_are_refused(rows):
    """A boolean mask (or float positions) as ``rows`` is refused in one line, not cast to the row numbers 0 and 1
    (or 2 and 3) and searched: that answered with the wrong rows, silently."""
    X = np.eye(10, dtype=np.float32)
    with pytest.raises(ValueError, match=r"^rows must be integer row numbers into vectors, got an array of "
                                         rf"{rows.dtype}") as e:
        exact_topk(np.ones((1, 10), np.float32), X, 2, rows=rows)
    assert "\n" not in str(e.value)
    _, idx = exact_topk(np.ones((1, 10), np.float32), X, 2, rows=[2, 3])  # a list of ints is fine
    assert idx.tolist() == [[2, 3]]


def test_exact_topk_gathers_rows_in_bounded_blocks(monkeypatch):
    """With ``rows`` each block of vectors is a gathered copy: it is bounded by ``GATHER_BLOCKS * block_floats``
    floats (or ``k`` rows where k is larger), not ``block_floats // n_queries`` rows of ``d`` floats each (for one
    query over 1 M rows of 256 floats that was a 1 GB copy per search)."""
    rng = np.random.default_rng(2)
    X = rng.integers(-3, 4, size=(3000, 64)).astype(np.float32)
    Q = rng.integers(-3, 4, size=(2, 64)).astype(np.float32)
    rows = rng.permutation(3000)[:2500]
    seen = []
    product = exact._product
    monkeypatch.setattr(exact, "_product", lambda q, blk, out: seen.append(blk.numel()) or product(q, blk, out))
    for k, block in ((5, 1024), (100, 256), (5, 1 << 20)):
        seen.clear()
        S, idx = exact_topk(Q, X, k, rows=rows, block_floats=block)
        want_s, want_i = reference(Q, X, k, rows)
        assert idx.tolist() == want_i.tolist() and S.tolist() == want_s.tolist()
        assert sum(seen) == 2500 * 64 and max(seen) <= max(exact.GATHER_BLOCKS * block, k * 64), (k, block, max(seen))


def test_exact_topk_non_finite_products_warn_nothing():
    """Scores that overflow to inf or are NaN (inf times 0) raise no warning from inside the search (numpy's
    'overflow encountered in matmul' when its product was used): the non-finite scores are handled on purpose
    (the NaN path)."""
    import warnings

    X = np.ones((20, 3), np.float32)
    X[4, 0], X[5] = np.inf, 3e38
    for q in ([[0, 1, 1]], [[1, 1, 1]], [[1, 1, 1], [0, 1, 1]]):
        q = np.array(q, np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            S, i = exact_topk(q, X, 2)
        assert S.shape == (len(q), 2) and sorted(i[0].tolist()) == [4, 5]  # inf beats every finite score, and NaN ranks first


@pytest.mark.parametrize("rows, match", [
    ([0, 10], r"^rows\[1\] is 10: row numbers into vectors run from 0 to 9$"),
    ([3, -1], r"^rows\[1\] is -1: row numbers into vectors run from 0 to 9 \(negative rows do not count from the end\)$"),
    (np.array([2, 2**63], np.uint64), r"^rows\[1\] is 9223372036854775808: row numbers into vectors run from 0 to 9$"),
    (np.array([[1, 2]]), r"^rows must be a 1-D array of row numbers into vectors, got shape \(1, 2\)$"),
])
@pytest.mark.parametrize("nq", [1, 3])
def test_exact_topk_rows_out_of_range_are_refused(rows, match, nq):
    """A row number past the end, or a negative one (torch does not wrap it as numpy would), was torch's
    "IndexError: index out of range in self", naming neither the row nor the range: refused in one line."""
    X = np.eye(10, dtype=np.float32)
    with pytest.raises(DataError, match=match) as e:
        exact_topk(np.ones((nq, 10), np.float32), X, 2, rows=rows)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(DataError, match=r"^rows\[0\] is 0: vectors has no rows$"):
        exact_topk(np.ones((nq, 10), np.float32), X[:0], 2, rows=[0])

"""``Index.search`` with one raw vector makes no Query object: :func:`raw_direction` checks and normalises the
vector in one go.  It must give the bits and the errors of the steps it stands for (``query_vector``, then
the one-vector direction, then ``renormed``), for any vector, and the search the hits of the general path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from anybind.bench.search_util import clustered_vectors
from anybind.errors import AnybindError
from anybind.index import Index
from anybind.index.exact import renormed
from anybind.index.query import QueryEmbedder, query_vector, raw_direction


def _steps(x, dim):
    """The steps raw_direction stands for, one by one: (result, None) or (None, (error type, message))."""
    try:
        return renormed(QueryEmbedder(None, dim).direction(query_vector(x, dim))[None]), None
    except AnybindError as e:
        return None, (type(e), str(e))


def _fused(x, dim):
    try:
        return raw_direction(x, dim), None
    except AnybindError as e:
        return None, (type(e), str(e))


def _agree(x, dim):
    before = np.array(x, copy=True)
    (want, want_err), (got, got_err) = _steps(x, dim), _fused(x, dim)
    assert got_err == want_err
    if want is not None:
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (1, dim)
        assert got.tobytes() == want.tobytes()  # the same bits, -0.0 included
        assert not np.shares_memory(got, x)  # the caller's array is never handed back (it may change later)
    np.testing.assert_array_equal(np.asarray(x), before)  # and never written to
    return got_err


@settings(max_examples=400, deadline=None)
@given(d=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-30, 1e-20, 1e-7, 1e-3, 1.0, 3.0, 1e3, 1e18, 1e20, 1e37]),
       two_d=st.booleans(), zeros=st.floats(0.0, 1.0))
def test_raw_direction_gives_the_steps_bits_and_errors(d, seed, scale, two_d, zeros):
    """Scales cover the branches: ordinary vectors (the fused path), sums of squares that underflow (a tiny
    norm: the steps scale it) or overflow (the steps one by one), and mostly-zero vectors."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(d) * scale).astype(np.float32)
    x[rng.random(d) < zeros] = 0.0
    _agree(x[None] if two_d else x, d)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e18, 1e20, 1e37])
@pytest.mark.parametrize("two_d", [False, True])
def test_a_raw_vector_of_any_finite_scale_gives_no_numpy_warning(scale, two_d):
    """Huge finite entries overflow the fast lane's sum of squares to inf, and the checked steps take over: that
    is the design, not the user's business (numpy printed ``RuntimeWarning: overflow encountered in multiply``
    for a 1e20 vector); the direction is still the steps'."""
    import warnings

    x = (np.random.default_rng(5).standard_normal(64) * scale).astype(np.float32)
    x = x[None] if two_d else x
    want, want_err = _steps(x, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = raw_direction(x, 64)
    assert want_err is None and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("bad", [
    "nan", "inf", "zeros", "float64", "int", "bool", "strided", "wide", "two rows", "scalar", "strings", "denormal",
])
def test_raw_direction_refuses_and_converts_as_the_steps_do(bad):
    d = 16
    x = np.linspace(-1, 1, d, dtype=np.float32) + 0.01
    x = {
        "nan": np.where(np.arange(d) == 3, np.nan, x).astype(np.float32),
        "inf": np.where(np.arange(d) == 3, np.inf, x).astype(np.float32),
        "zeros": np.zeros(d, np.float32),
        "float64": x.astype(np.float64) * 1e5,
        "int": np.arange(d) - 4,
        "bool": np.ones(d, bool),
        "strided": np.repeat(x, 2)[::2],
        "wide": np.ones(d + 1, np.float32),
        "two rows": np.ones((2, d), np.float32),
        "scalar": np.float32(1.0),
        "strings": np.array(["a"] * d),
        "denormal": np.full(d, 1e-44, np.float32),
    }[bad]
    err = _agree(x, d)
    # a denormal vector has a direction too (its norm underflows: it is scaled first)
    assert (err is None) == (bad in ("float64", "int", "strided", "denormal")), err


def test_a_search_with_a_raw_vector_is_the_general_search(tmp_path):
    """Index.search(vector) (the raw lane) against the same query with a weight of 1 (Query.of and the general
    fusion): the same hits to the bit, and the same error for a vector it refuses, on the graph and exactly."""
    pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")
    rng = np.random.default_rng(3)
    X, C = clustered_vectors(300, 24, 6, rng)
    ix = Index.create(tmp_path / "ix", dim=24, identity="t24", ann_threshold=0)
    ix.add_vectors([f"r{i}" for i in range(len(X))], X, "vec", labels=[{"part": str(i % 3)} for i in range(len(X))])
    ix.create_memory_ann(ef=16)
    Q, _ = clustered_vectors(4, 24, len(C), rng, centers=C)
    for q in [Q[0], Q[1] * 7.5, Q[2][None], Q[3].astype(np.float64), np.repeat(Q[0], 2)[::2]]:
        for kw in ({}, {"exact": True}, {"labels": {"part": "1"}}, {"k": 3, "modality": "vec"}):
            lane = ix.search(q, **kw)
            general = ix.search(q, weights=[1.0], **kw)
            assert lane and [h.to_dict() for h in lane] == [h.to_dict() for h in general]
    for bad in (np.zeros(24, np.float32), np.full(24, np.nan, np.float32), np.ones(23, np.float32)):
        with pytest.raises(AnybindError) as lane_err:
            ix.search(bad)
        with pytest.raises(AnybindError) as general_err:
            ix.search(bad, weights=[1.0])
        assert (type(lane_err.value), str(lane_err.value)) == (type(general_err.value), str(general_err.value))


@pytest.mark.parametrize("steps", [-3, -1, 0, 1, 3])
def test_unit_rows_refuses_one_row_at_the_threshold_as_it_refuses_many(steps):
    """unit_rows checks one row's norm in plain Python, several rows' with numpy: at and around the 1e-12
    threshold (float32 values a few steps either side) one row is refused exactly when the same row among others is."""
    from anybind.errors import DataError
    from anybind.index.exact import unit_rows

    t = np.float32(1e-12)
    for _ in range(abs(steps)):
        t = np.nextafter(t, np.float32(np.inf if steps > 0 else 0))
    x = np.array([t], np.float32)  # a 1-d vector whose norm is t
    assert np.sqrt(np.add.reduce(x * x, keepdims=True))[0] == t

    def refused(a):
        try:
            unit_rows(a)
        except DataError:
            return True
        return False

    many = refused(np.stack([x, np.ones(1, np.float32)]))
    assert refused(x) == refused(x[None]) == many == (steps < 0)

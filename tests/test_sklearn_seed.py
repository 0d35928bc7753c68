"""Seeds above 2**32 - 1 pass every config's check (recipe.MAX_SEED = 2**63 - 1) but scikit-learn takes a
random_state only in [0, 2**32 - 1]: the instruments bench's linear probe (``--seed 2**40``) and the separability
diagnostic failed inside scikit-learn.  Both now hand it :func:`anybind.recipe.sklearn_seed`."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.bench.tasks_instruments import linear_probe
from anybind.diagnostics import separability
from anybind.recipe import MAX_SEED, sklearn_seed

BIG = 2**40


def _clouds(seed: int, n: int = 60, d: int = 8, shift: float = 1.5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + shift, rng.normal(size=(n, d)) - shift


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_SEED))
def test_a_valid_seed_maps_into_sklearns_range_and_a_small_one_is_kept(seed):
    s = sklearn_seed(seed)
    assert isinstance(s, int) and 0 <= s <= 2**32 - 1
    assert s == sklearn_seed(seed)  # deterministic
    if seed < 2**32:
        assert s == seed  # the runs made so far keep their draws


def test_seeds_past_two_to_the_32_do_not_fold_onto_the_small_ones():
    assert len({sklearn_seed(2**32 + k) for k in range(8)} | set(range(8))) == 16


def test_separability_takes_a_seed_past_two_to_the_32():
    a, b = _clouds(0)
    big = separability(a, b, seed=BIG)
    assert 0.9 < big <= 1.0  # two shifted clouds: told apart
    near, far = _clouds(1, shift=0.0)
    assert separability(near, far, seed=BIG) < 0.75


def test_the_instruments_linear_probe_takes_a_seed_past_two_to_the_32():
    a, b = _clouds(2)
    feats, ys = {}, {}
    for k, (lo, hi) in {"train": (0, 40), "val": (40, 50), "test": (50, 60)}.items():
        feats[k] = np.concatenate([a[lo:hi], b[lo:hi]])
        ys[k] = ["a"] * (hi - lo) + ["b"] * (hi - lo)
    c, val_acc, hits = linear_probe(feats, ys, seed=BIG)
    assert val_acc > 0.9 and hits.shape == (20,) and hits.mean() > 0.9
    assert linear_probe(feats, ys, seed=BIG)[0] == c

"""The bench's paired comparison of rows scored on the same items (issue 16: an image encoder against the default on
the Fashion-MNIST selection sets): the difference, its paired bootstrap interval and the items won and lost."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.bench.stats import paired_vs_first


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60), st.integers(0, 3))
def test_paired_differences_count_the_items_won_and_lost(pairs, seed):
    a = np.array([p[0] for p in pairs], float)
    b = np.array([p[1] for p in pairs], float)
    per = {"base": {"accuracy": a, "other": 1 - a}, "new": {"accuracy": b, "other": 1 - b}}
    got = paired_vs_first(["base", "new"], per, seed, n=200)["new"]
    acc = got["accuracy"]
    assert acc["wins"] == int(((b == 1) & (a == 0)).sum()) and acc["losses"] == int(((a == 1) & (b == 0)).sum())
    assert np.isclose(acc["diff"], b.mean() - a.mean())
    assert acc["ci"][0] <= acc["ci"][1] and -1 <= acc["ci"][0] and acc["ci"][1] <= 1
    other = got["other"]  # every column compared, each on its own
    assert (other["wins"], other["losses"]) == (acc["losses"], acc["wins"]) and np.isclose(other["diff"], -acc["diff"])
    back = paired_vs_first(["new", "base"], per, seed, n=200)["base"]["accuracy"]  # the other way round: negated
    assert (back["wins"], back["losses"]) == (acc["losses"], acc["wins"])
    assert np.allclose(back["ci"], [-acc["ci"][1], -acc["ci"][0]])


def test_a_row_against_itself_differs_by_nothing_and_one_row_compares_nothing():
    h = np.array([1, 0, 1, 1, 0], float)
    same = paired_vs_first(["a", "b"], {"a": {"accuracy": h}, "b": {"accuracy": h.copy()}})["b"]["accuracy"]
    assert same == {"diff": 0.0, "ci": [0.0, 0.0], "wins": 0, "losses": 0}
    assert paired_vs_first(["a"], {"a": {"accuracy": h}}) == {} and paired_vs_first([], {}) == {}


def test_paired_interval_is_narrower_than_the_unpaired_rows_when_the_rows_agree_mostly():
    """Pairing is the point: two rows that differ on a few of 300 items have a much narrower interval of their
    difference than either row's own interval."""
    from anybind.bench.stats import bootstrap

    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.4).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 1)[:5]] = 0  # five lost
    got = paired_vs_first(["a", "b"], {"a": {"accuracy": a}, "b": {"accuracy": b}})["b"]["accuracy"]
    assert (got["wins"], got["losses"]) == (0, 5) and np.isclose(got["diff"], -5 / 300)
    _, ci_a, _ = bootstrap(a)
    assert got["ci"][1] - got["ci"][0] < (ci_a[1] - ci_a[0]) / 3
    assert got["ci"][1] <= 0  # only losses: the interval never rises above 0

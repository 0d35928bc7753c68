"""space_core.per_modality: the inputs of one modality embedded in one call, the vectors given back in input order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from anybind.space_core import per_modality


@given(st.lists(st.tuples(st.sampled_from(["image", "audio", "text"]), st.integers(0, 10**6)), max_size=30))
def test_each_modality_is_one_call_and_the_rows_keep_the_input_order(pairs):
    calls: list[tuple[str, list[int]]] = []

    def embed(m, items):
        calls.append((m, list(items)))
        return np.array([[hash(m) % 97, x] for x in items], np.float64).reshape(len(items), 2)

    got = per_modality(pairs, embed)
    assert [(int(v[0]), int(v[1])) for v in got] == [(hash(m) % 97, x) for m, x in pairs]
    assert sorted(m for m, _ in calls) == sorted({m for m, _ in pairs})
    for m, items in calls:
        assert items == [x for mm, x in pairs if mm == m]

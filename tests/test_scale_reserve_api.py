"""Reservation.map_batches on a Ray whose Dataset lacks the developer API it relies on (no cluster needed)."""

import pytest

from anybind.errors import AnybindError
from anybind.scale.reserve import Reservation


class _OldDataset:  # a Ray Data Dataset without map_batches_internal (before 2.60, or after it is gone)
    def map_batches(self, fn, **kwargs):  # pragma: no cover - must not be called: it would run unplaced
        raise AssertionError("fell back to the public map_batches")


def test_a_ray_without_map_batches_internal_is_refused_in_one_line():
    res = Reservation(groups={"tasks": [{"CPU": 1.0}]}, pgs={"tasks": object()})
    with pytest.raises(AnybindError) as e:
        res.map_batches(_OldDataset(), "tasks", lambda b: b, batch_size=4)
    msg = str(e.value)
    assert "\n" not in msg and "map_batches_internal" in msg and ">=2.60,<2.64" in msg and "anybind[scale]" in msg

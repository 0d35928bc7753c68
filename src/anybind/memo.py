"""A space whose frozen features are memoised in memory, for code that fits or scores many models on the same
records (k-fold benchmarks, hyper-parameter grids): reading the feature cache again for every fit is most of a
small fit's time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class MemoSpace:
    """Wraps a space: :meth:`features` answers each (modality, value) from memory after its first call; every
    other attribute is the wrapped space's.  Values are memoised by ``str(value)`` (paths and texts, as
    manifests hold them); the memo lives as long as this object."""

    def __init__(self, space: Any):
        self.space = space
        self.memo: dict[tuple[str, str], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        if name in ("space", "memo"):  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.space, name)

    def features(self, modality: str, values: Sequence[Any], cache=None, **kw) -> np.ndarray:
        if kw.get("bad") is not None:  # the caller wants undecodable items reported by position: no memo
            return self.space.features(modality, values, cache=cache, **kw)
        todo = list(dict.fromkeys(str(v) for v in values if (modality, str(v)) not in self.memo))
        if todo:
            for v, f in zip(todo, self.space.features(modality, todo, cache=cache, **kw)):
                self.memo[(modality, v)] = f
        return np.stack([self.memo[(modality, str(v))] for v in values])

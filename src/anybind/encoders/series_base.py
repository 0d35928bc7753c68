"""What the time-series encoders share: resampling, z-normalisation and the encoder base (loading, lazy model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import short_repr
from ..data.series import as_series, load_series
from ..errors import DataError
from .base import Encoder

#: bump when the preprocessing of a time-series encoder changes (it is part of the identities)
PREP_VERSION = "v1"


def resample_linear(x: np.ndarray, length: int) -> np.ndarray:
    """Each row of ``x`` (channels, n) linearly interpolated to ``length`` evenly spaced steps (ends kept)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1]
    if n == length:
        return x.copy()
    src = np.arange(n, dtype=np.float64)
    dst = np.linspace(0.0, n - 1.0, length)
    return np.stack([np.interp(dst, src, row) for row in x])


def znormalise(x: np.ndarray) -> np.ndarray:
    """Each row to mean 0, std 1; a (numerically) constant row becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    scale = np.maximum(np.abs(mu), 1.0)
    ok = sd > 1e-8 * scale
    return np.where(ok, (x - mu) / np.where(ok, sd, 1.0), 0.0)


class SeriesEncoder(Encoder):
    """What both time-series encoders share: loading, lazy model, picklable."""

    modality = "timeseries"
    input_kind = "file"
    reads_arrays = True

    def load(self, item: Any) -> np.ndarray:
        """A path (``.npy``/CSV) or an array -> validated float64 ``(channels, length)``."""
        if isinstance(item, (str, Path)):
            return load_series(item)
        if isinstance(item, np.ndarray):
            return as_series(item, "series array")
        raise DataError(f"{short_repr(item)}: not a time series (expected a file path or an array)")

    def model(self) -> Any:
        """The encoder's model (built by its ``_build`` once, on first use)."""
        return self._load_once()

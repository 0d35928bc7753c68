"""Frozen time-series encoders: ``timeseries:minirocket`` (the default) and ``timeseries:fracast``.

Inputs
------

A ``timeseries`` manifest value is a file holding **one** (multivariate)
series; :func:`load_series` reads it to a float64 array ``(channels, length)``:

* ``.npy`` -- read with ``numpy.load(..., allow_pickle=False)`` (an object
  array, i.e. a pickle, is refused, never unpickled).  A 1-d array is one
  channel; a 2-d array is ``(channels, length)`` **as stored** (no guessing:
  save ``x.T`` if yours is ``(length, channels)``).
* ``.csv`` (or any text file) -- rows are time steps, columns are channels,
  separated by ``,``, ``;``, tabs or spaces; one header row of column names is
  allowed.
* in memory (Python API): a numpy array, same shape rules as ``.npy``.

The format is sniffed from the content (``.npy`` magic), not the file name.
An unreadable file, a pickle, a non-numeric cell, NaN/inf, no samples or
fewer than :data:`MIN_LENGTH` time steps raise :class:`~anybind.errors.DataError`
naming the file (the manifest loader reports such records and skips them).

``timeseries:minirocket`` -- MiniRocket (Dempster et al., KDD 2021; aeon's
implementation), frozen
-----------------------------------------------------------------------------

MiniRocket has no weights but must be *fitted*: its dilations depend on the
series length and its biases are quantiles of convolution outputs on training
series.  Fitting on whatever batch is being encoded would make an item's
features depend on its neighbours, so this encoder fits **once**, on a fixed
reference, and is then a frozen deterministic function of the series alone:

* **length**: every channel is resampled to :data:`MINIROCKET_LENGTH` (512)
  time steps by linear interpolation (up or down).  MiniRocket cannot
  transform series shorter than its longest fitted dilation, so a fixed
  length is the only way to serve any length; features then describe the
  shape of the whole series relative to its duration (as UCR/UEA series are
  each one segmented event).
* **scale**: each channel is z-normalised (mean 0, std 1; a constant channel
  becomes zeros), so the fixed biases fit any unit of measurement.
* **channels**: each channel is transformed as a univariate series and the
  features are **averaged over channels**, so any number of channels gives the
  same 2,016-d vector (measured on BasicMotions, 6 channels: a logistic
  regression on these features reaches 0.95 test accuracy, aeon's own
  multivariate MiniRocket fitted on the training split 1.0).
* **features**: 2,016 (24 per kernel; the paper's 10k gains nothing measurable
  on these corpora and makes the ridge warm start of a projector slow).
* **reference** (what it is fitted on), chosen by the spec:

  - ``timeseries:minirocket`` -- :func:`reference_series`: 128 AR(1) series
    ``x[t] = phi x[t-1] + e[t]`` with ``phi`` evenly spaced over [0, 1]
    (white noise to a random walk: every frequency band has its examples),
    Gaussian innovations from ``numpy.random.default_rng(0)``, 512 steps,
    z-normalised.  Generic: no dataset is favoured.
  - ``timeseries:minirocket@<file.npy>`` -- fitted on your own series: an
    array ``(n, length)`` or ``(n, channels, length)``; every channel of
    every series is a reference row (after the same resampling and
    z-normalisation).  The path is resolved against the working directory.
  - ``timeseries:minirocket@<Name>`` -- fitted on the training split of one
    of aeon's bundled datasets (``BasicMotions``, ``GunPoint``...), the
    classic "fit MiniRocket on the training data" recipe, made explicit.

  The fit uses ``random_state=0`` (and leaves numpy's global random state as
  it was).  The identity holds the SHA-256 of the preprocessed reference
  array, aeon's version and the preprocessing tag, so a different reference
  or MiniRocket implementation is a different encoder (and a saved space
  refuses it).

``timeseries:fracast`` -- Fracast-0's encoder: see :mod:`anybind.encoders.fracast`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..data.series import (  # noqa: F401  (the loaders live in data/, re-exported here)
    MAX_ELEMENTS,
    MIN_LENGTH,
    NPY_MAGIC,
    as_series,
    load_npy,
    load_series,
    read_series_bytes,
)
from ..errors import DataError, EncoderError
from .base import Encoder
from .fracast import FRACAST_DIM, FracastEncoder  # noqa: F401  (re-exported)
from .series_base import PREP_VERSION, SeriesEncoder, resample_linear, znormalise

__all__ = [
    "FracastEncoder",
    "MiniRocketEncoder",
    "aeon_data_dir",
    "as_series",
    "load_aeon_split",
    "load_series",
    "reference_series",
    "resample_linear",
    "znormalise",
]


MINIROCKET_LENGTH = 512
MINIROCKET_FEATURES = 2016  # multiple of 84 (MiniRocket's base kernels): 24 per kernel
MINIROCKET_SEED = 0
REFERENCE_SERIES = 128
_MINIROCKET_TAG = (
    f"resample-linear{MINIROCKET_LENGTH},znorm-per-channel,univariate-per-channel,"
    f"mean-over-channels,n_kernels{MINIROCKET_FEATURES},seed{MINIROCKET_SEED};{PREP_VERSION}"
)


def _minirocket_rows(x: np.ndarray) -> np.ndarray:
    return znormalise(resample_linear(x, MINIROCKET_LENGTH)).astype(np.float32)


@lru_cache(maxsize=1)
def reference_series(n: int = REFERENCE_SERIES, length: int = MINIROCKET_LENGTH, seed: int = MINIROCKET_SEED) -> np.ndarray:
    """The default MiniRocket reference: ``n`` AR(1) series, phi evenly over [0, 1], z-normalised, (n, length)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    out = np.empty((n, length), dtype=np.float64)
    for i, phi in enumerate(np.linspace(0.0, 1.0, n)):
        out[i] = lfilter([1.0], [1.0, -phi], rng.standard_normal(length))
    return znormalise(out)


def aeon_data_dir() -> Path:
    """The folder of the datasets bundled in the aeon wheel."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError("time series datasets need the 'aeon' package: pip install 'anybind[timeseries]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_aeon_split(name: str, split: str = "TRAIN", data_dir: str | Path | None = None) -> tuple[list[np.ndarray], list[str], Path]:
    """One split of a bundled aeon dataset: series (each (channels, length)), labels, the .ts file read."""
    from aeon.datasets import load_from_ts_file

    d = Path(data_dir) if data_dir is not None else aeon_data_dir()
    path = d / name / f"{name}_{split}.ts"
    if not path.is_file():
        known = sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
        raise DataError(f"{path}: no such aeon dataset file (bundled datasets: {', '.join(known) or 'none found'})")
    try:
        X, y = load_from_ts_file(str(path))
    except Exception as e:  # noqa: BLE001 - aeon raises many types for a malformed file
        raise DataError(f"{path}: unreadable .ts file ({type(e).__name__}: {e})") from None
    series = [np.asarray(x, dtype=np.float64) for x in X]
    return series, [str(v) for v in y], path


# ----------------------------------------------------------------------------- encoders


class MiniRocketEncoder(SeriesEncoder):
    """MiniRocket fitted once on a fixed reference; 2,016-d, mean over channels (see the module docstring)."""

    dim = MINIROCKET_FEATURES
    batch_size = 64

    def __init__(self, spec: str = "timeseries:minirocket", reference: str | None = None):
        if importlib.util.find_spec("aeon") is None:
            raise EncoderError("timeseries:minirocket needs the 'aeon' package: pip install 'anybind[timeseries]'")
        self.spec = spec
        self.reference = reference
        self._model: Any = None
        self._ref: np.ndarray | None = None
        self._identity: str | None = None

    def reference_rows(self) -> np.ndarray:
        """The preprocessed reference the transform is fitted on: float32 (rows, 512)."""
        if self._ref is None:
            self._ref = self._reference_rows()
        return self._ref

    def _reference_rows(self) -> np.ndarray:
        ref = self.reference
        if ref is None:
            rows = reference_series().astype(np.float32)
        else:
            p = Path(ref).expanduser()
            if p.suffix.lower() == ".npy" or p.is_file() or "/" in ref:
                try:
                    arr = load_npy(p, read_series_bytes(p))
                except DataError as e:
                    raise EncoderError(f"{self.spec}: bad reference: {e}") from None
                if arr.ndim == 2:
                    arr = arr[:, None, :]
                if arr.ndim != 3 or arr.shape[0] < 1:
                    raise EncoderError(f"{self.spec}: reference {p} must be (n, length) or (n, channels, length), got {arr.shape}")
                series = [as_series(s, f"{p}[{i}]") for i, s in enumerate(arr)]
            else:
                try:
                    series, _, _ = load_aeon_split(ref, "TRAIN")
                except DataError as e:
                    raise EncoderError(
                        f"{self.spec}: {ref!r} is neither a .npy file nor a bundled aeon dataset ({e})"
                    ) from None
            rows = np.concatenate([_minirocket_rows(s) for s in series], axis=0)
        rows = rows[np.abs(rows).sum(axis=1) > 0]  # constant channels carry no quantiles
        if len(rows) < 1:
            raise EncoderError(f"{self.spec}: the reference has no non-constant series to fit on")
        return np.ascontiguousarray(rows, dtype=np.float32)

    @property
    def identity(self) -> str:
        if self._identity is None:
            import aeon

            ref = self.reference_rows()
            h = hashlib.sha256(np.ascontiguousarray(ref).tobytes()).hexdigest()
            what = "ar1-phi0..1-n128-rng0" if self.reference is None else f"fitted-on:{self.reference}"
            self._identity = f"{self.spec}|reference={what}:{h}|aeon={aeon.__version__}|prep={_MINIROCKET_TAG}"
        return self._identity

    def _build(self) -> Any:
        from aeon.transformations.collection.convolution_based import MiniRocket

        ref = self.reference_rows()
        mr = MiniRocket(n_kernels=MINIROCKET_FEATURES, random_state=MINIROCKET_SEED, n_jobs=1)
        state = np.random.get_state()  # aeon seeds numpy's global generator while fitting
        try:
            mr.fit(ref[:, None, :])
        finally:
            np.random.set_state(state)
        return mr

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        series = [self.load(b) for b in batch]
        rows = np.concatenate([_minirocket_rows(s) for s in series], axis=0)
        # each row is transformed on its own (aeon's univariate kernel loops over cases): no batch effects
        feats = np.asarray(self.model().transform(rows[:, None, :]), dtype=np.float32)
        if feats.shape[1] != self.dim:
            raise EncoderError(f"{self.spec}: MiniRocket returned {feats.shape[1]} features, expected {self.dim}")
        bounds = np.cumsum([0, *(s.shape[0] for s in series)])
        return np.stack([feats[bounds[k] : bounds[k + 1]].mean(axis=0) for k in range(len(series))]).astype(np.float32)


def make_timeseries_encoder(name: str) -> Encoder:
    """Factory for ``timeseries:<name>``: ``minirocket`` (default), ``minirocket@<ref>``, ``fracast``."""
    name = name.strip() or "minirocket"
    if name == "minirocket":
        return MiniRocketEncoder("timeseries:minirocket")
    if name.startswith("minirocket@"):
        ref = name.split("@", 1)[1].strip()
        if not ref:
            raise EncoderError("timeseries:minirocket@<ref>: give a .npy file or a bundled aeon dataset name after '@'")
        return MiniRocketEncoder(f"timeseries:{name}", reference=ref)
    if name == "fracast":
        return FracastEncoder("timeseries:fracast")
    raise EncoderError(
        f"unknown time series encoder {name!r}: built-in ones are 'minirocket', 'minirocket@<reference .npy or "
        "aeon dataset>' and 'fracast'"
    )

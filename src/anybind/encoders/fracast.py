"""``timeseries:fracast`` -- Fracast-0's encoder
---------------------------------------------

Fracast-0 (PyPI ``fracast``, Apache-2.0; weights inside the wheel) is a small
pretrained univariate forecaster whose core maps a 2,048-step context to
hidden states ``(2048, 64)``.  We feed the core exactly what its own
forecaster feeds it (``FracastModel._predict_rows``): each channel min-max
normalised over its observed values, right-aligned in the 2,048-step window
with an "observed" mask and coverage over the real steps.  Series longer
than 2,048 steps are resampled (linear) to 2,048, series shorter than 8 (the
model's minimum) up to 8.  Features per channel: the mean and the standard
deviation of the hidden states over the observed steps and the hidden state
of the last step (the model is causal; its receptive field spans the whole
window) -- 3 x 64 = 192 -- averaged over channels (the model treats
channels independently).  The release's default int8 ("w8") weights are
used; the identity holds the SHA-256 of the weight files and config.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import sha256_file
from .series_base import PREP_VERSION, SeriesEncoder, resample_linear

FRACAST_WINDOW = 2048
FRACAST_MIN = 8
FRACAST_WIDTH = 64
FRACAST_DIM = 3 * FRACAST_WIDTH
_FRACAST_FILES = ("config.json", "model.int8.safetensors", "w8_manifest.json")
_FRACAST_TAG = (
    f"minmax-per-channel,right-aligned-w{FRACAST_WINDOW}+mask+coverage,>{FRACAST_WINDOW}:resample-linear,"
    f"<{FRACAST_MIN}:resample-linear,core-hidden:mean|std|last-over-observed,mean-over-channels,w8;{PREP_VERSION}"
)


class FracastEncoder(SeriesEncoder):
    """Fracast-0's core hidden states, mean|std|last over observed steps, mean over channels; 192-d."""

    dim = FRACAST_DIM
    batch_size = 32
    #: channel rows per forward pass (bounds memory: a row is 2048 x 64 hidden floats per layer)
    max_rows = 16
    #: torch threads while encoding: this small model is fastest on one (measured 0.045 s per channel
    #: row with 1 thread, 0.12-0.6 s with 2 on a busy 2-core machine); restored afterwards
    threads = 1

    def __init__(self, spec: str = "timeseries:fracast"):
        if importlib.util.find_spec("fracast") is None:
            raise EncoderError("timeseries:fracast needs the 'fracast' package: pip install 'anybind[timeseries]'")
        self.spec = spec
        self._model: Any = None
        self._identity: str | None = None

    @staticmethod
    def weights_dir() -> Path:
        """The release weights shipped inside the fracast wheel (what ``from_pretrained()`` loads)."""
        spec = importlib.util.find_spec("fracast")
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations))) / "weights"

    @property
    def identity(self) -> str:
        if self._identity is None:
            d = self.weights_dir()
            missing = [f for f in _FRACAST_FILES if not (d / f).is_file()]
            if missing:
                raise EncoderError(f"{self.spec}: {d} lacks {', '.join(missing)}; reinstall fracast")
            h = hashlib.sha256()
            for f in _FRACAST_FILES:
                h.update(f.encode())
                h.update(sha256_file(d / f).encode())
            self._identity = f"{self.spec}|weights={h.hexdigest()}|prep={_FRACAST_TAG}"
        return self._identity

    def _build(self) -> Any:
        try:
            from fracast.inference import FracastModel
        except Exception as e:  # noqa: BLE001 - report any import failure clearly
            raise EncoderError(f"{self.spec}: cannot import fracast ({type(e).__name__}: {e})") from None
        fm = FracastModel.from_pretrained()  # the packaged release weights (w8), never a download
        if fm.context_length != FRACAST_WINDOW:
            raise EncoderError(f"{self.spec}: fracast context length {fm.context_length}, expected {FRACAST_WINDOW}")
        for p in fm.core.parameters():
            p.requires_grad_(False)
        return fm.core

    @staticmethod
    def window(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fracast's input for each channel: min-max normalised, right-aligned, and the observed mask."""
        n = x.shape[1]
        if n > FRACAST_WINDOW:
            x = resample_linear(x, FRACAST_WINDOW)
        elif n < FRACAST_MIN:
            x = resample_linear(x, FRACAST_MIN)
        n = x.shape[1]
        loc = x.min(axis=1, keepdims=True)
        span = np.maximum(x.max(axis=1, keepdims=True) - loc, 1e-5)
        values = np.zeros((x.shape[0], FRACAST_WINDOW), dtype=np.float32)
        observed = np.zeros((x.shape[0], FRACAST_WINDOW), dtype=bool)
        values[:, FRACAST_WINDOW - n :] = ((x - loc) / span).astype(np.float32)
        observed[:, FRACAST_WINDOW - n :] = True
        return values, observed

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        from ..numerics import torch_threads  # torch on first use: the encoder table imports no framework

        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        series = [self.load(b) for b in batch]
        core = self.model()
        wins = [self.window(s) for s in series]
        values = np.concatenate([w[0] for w in wins])
        observed = np.concatenate([w[1] for w in wins])
        feats = np.empty((len(values), self.dim), dtype=np.float32)
        with torch_threads(self.threads):
            self._forward(core, values, observed, feats)
        bounds = np.cumsum([0, *(s.shape[0] for s in series)])
        return np.stack([feats[bounds[k] : bounds[k + 1]].mean(axis=0) for k in range(len(series))]).astype(np.float32)

    def _forward(self, core: Any, values: np.ndarray, observed: np.ndarray, feats: np.ndarray) -> None:
        import torch

        with torch.inference_mode():
            for i in range(0, len(values), self.max_rows):
                v = torch.from_numpy(values[i : i + self.max_rows, None, :])
                m = torch.from_numpy(observed[i : i + self.max_rows, None, :])
                hidden = core(v, m, m.to(torch.float32)).to(torch.float32).numpy()  # (rows, 2048, 64)
                for j, h in enumerate(hidden):
                    obs = h[observed[i + j]]
                    feats[i + j] = np.concatenate([obs.mean(axis=0), obs.std(axis=0), h[-1]])

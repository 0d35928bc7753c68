"""Long audio for ``audio:hf/...`` encoders: windows encoded one by one and pooled, never cropped.

Feature extractors crop what is longer than the length they were trained on: AST keeps its first
``max_length`` frames (~10 s), Whisper's extractor its first 30 s, and CLAP picks a *random* 10 s piece
(``truncation="rand_trunc"``) or a random fusion of pieces.  An anybind encoder instead cuts the clip into
consecutive windows of that length (``window=auto``, the default), runs each through the extractor and the
model, and returns the mean of the windows' vectors **weighted by their length in samples** (a short tail
counts for little).  An extractor without a length of its own (wav2vec2, HuBERT: the model reads any
length) gets the whole clip, as before, unless ``window=<seconds>`` is given; ``window=off`` hands the whole
clip to the extractor (its own cropping, if any).  A clip that fits in one window is encoded exactly as
before.  The window is part of the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EncoderError
from .chunks import weighted_mean


@dataclass(frozen=True, eq=False)
class AudioWindows:
    """A decoded clip longer than one window: each window's preprocessed inputs and its length in samples."""

    parts: list[dict[str, np.ndarray]]
    samples: list[int]


def parse_window(spec: str, value: str) -> str:
    """``auto``, ``off`` or a positive number of seconds (kept as written, for the identity)."""
    v = value.strip().lower()
    if v in ("auto", "off"):
        return v
    try:
        ok = float(v) > 0
    except ValueError:
        ok = False
    if not ok:
        raise EncoderError(f"encoder {spec!r}: window={value!r}: use auto, off or a number of seconds > 0")
    return v


def auto_window(extractor: Any, sr: int) -> int | None:
    """The samples an extractor reads before it crops (None: it reads any length)."""
    for attr in ("nb_max_samples", "n_samples"):  # CLAP, Whisper
        n = getattr(extractor, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    frames = getattr(extractor, "max_length", None)
    if isinstance(frames, int) and frames > 0 and hasattr(extractor, "num_mel_bins"):  # AST: 25 ms frames, 10 ms hop
        return (frames - 1) * (sr // 100) + (sr * 25) // 1000
    return None


def window_samples(option: str, extractor: Any, sr: int) -> int | None:
    """Samples per window for the spec's ``window`` option (None: the whole clip in one piece)."""
    if option == "off":
        return None
    if option == "auto":
        return auto_window(extractor, sr)
    return max(1, round(float(option) * sr))


def split_clip(wav: np.ndarray, n: int | None) -> list[np.ndarray]:
    """Consecutive windows of ``n`` samples (the last one shorter); the whole clip when it fits."""
    if n is None or len(wav) <= n:
        return [wav]
    return [wav[s : s + n] for s in range(0, len(wav), n)]


def pool_windows(vectors: np.ndarray, samples: list[int]) -> np.ndarray:
    """The mean of the windows' vectors weighted by their length in samples."""
    return weighted_mean(vectors, samples)


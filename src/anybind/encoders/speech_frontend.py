"""Whisper's front end as :mod:`anybind.encoders.speech` feeds it: silence trimming, 30 s windows, the log-mel
spectrogram and the mask of voiced frames that the encoder's states are pooled over (numpy only, no model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: bump when the preprocessing or pooling below changes (it is part of the identity)
PREP_VERSION = "v1"

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480,000 samples per window
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames per window
ENC_FRAMES = N_FRAMES // 2  # 1500 encoder frames (conv stride 2)
EMB_DIM = 384
#: a frame is voiced when its energy is within this many dB of the clip's loudest frame
VOICED_DB = 40.0
#: ... and, in a recording with a noise floor, at least this many dB above it
NOISE_DB = 6.0
#: seconds of silence kept before and after the speech when trimming
TRIM_MARGIN = 0.1

PREP_TAG = (
    f"whisper-logmel:sr{SAMPLE_RATE},mono,win{CHUNK_SECONDS}s-zeropad,nfft{N_FFT}-hann-periodic,hop{HOP},"
    f"trim(<max-{VOICED_DB:g}dB|<floor+{NOISE_DB:g}dB,lead=margin{TRIM_MARGIN:g}s),centred-reflect,power,drop-last,mel{N_MELS}-slaney-slaneynorm-0-8000Hz,log10-clamp1e-10,max-8,(x+4)/4;"
    f"pool:voiced(real-audio,energy>=max(max-{VOICED_DB:g}dB,p5+{NOISE_DB:g}dB),fallback-real),mean-over-windows-by-frames;"
    f"{PREP_VERSION}"
)


# ----------------------------------------------------------------------------- front end


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    lin = f / f_sp
    with np.errstate(divide="ignore", invalid="ignore"):
        log = min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, lin)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``: (n_mels, n_fft // 2 + 1) float32."""
    fftfreqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=2)
def hann_periodic(n: int = N_FFT) -> np.ndarray:
    """``torch.hann_window(n)`` (periodic): ``0.5 - 0.5 cos(2 pi k / n)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _power_frames(window_audio: np.ndarray) -> np.ndarray:
    """(3000, 201) power spectrogram of one 30 s window (zero-padded), Whisper's STFT framing."""
    x = np.zeros(N_SAMPLES, dtype=np.float64)
    a = np.asarray(window_audio, dtype=np.float64)[:N_SAMPLES]
    x[: len(a)] = a
    xp = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(xp, N_FFT)[::HOP][:N_FRAMES]
    spec = np.fft.rfft(frames * hann_periodic(N_FFT), axis=1)
    return spec.real**2 + spec.imag**2


def _log_mel_from_power(power: np.ndarray) -> np.ndarray:
    mel = mel_filters().astype(np.float64) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def _energy_from_power(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(power.sum(axis=1) + 1e-10)


def log_mel(window_audio: np.ndarray) -> np.ndarray:
    """Whisper's input for one window of 16 kHz mono audio (at most 30 s): (80, 3000) float32."""
    if len(window_audio) > N_SAMPLES:
        raise ValueError(f"log_mel takes at most {N_SAMPLES} samples (30 s), got {len(window_audio)}")
    return _log_mel_from_power(_power_frames(window_audio))


def frame_energy_db(window_audio: np.ndarray) -> np.ndarray:
    """Energy of each of the 3000 mel frames of a window, ``10 log10(total power + 1e-10)`` dB."""
    return _energy_from_power(_power_frames(window_audio))


def trim_silence(samples: np.ndarray) -> np.ndarray:
    """The clip from :data:`TRIM_MARGIN` s before its speech to :data:`TRIM_MARGIN` s after it.

    Speech: the 10 ms frames (160 samples, no overlap) whose energy reaches
    :func:`voiced_threshold`; its onset is then refined to the first sample of
    the first such frame whose magnitude reaches the threshold's mean
    amplitude (and likewise the end), so the same speech after any amount of
    silence gives the same samples.  The lead is exactly the margin (zeros are
    added when the clip has less).  Digital silence and clips shorter than a
    frame are returned whole.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n_fr = len(x) // HOP
    if n_fr < 1:
        return x
    energy = (x[: n_fr * HOP].astype(np.float64) ** 2).reshape(n_fr, HOP).sum(1)
    if energy.max() <= 0.0:
        return x
    db = 10.0 * np.log10(energy + 1e-20)
    thr = voiced_threshold(db)
    on = np.flatnonzero(db >= thr)
    amp = np.sqrt(10.0 ** (thr / 10.0) / HOP)  # rms amplitude of a frame at the threshold
    first = x[on[0] * HOP : (on[0] + 1) * HOP]
    last = x[on[-1] * HOP : (on[-1] + 1) * HOP]
    onset = on[0] * HOP + int(np.argmax(np.abs(first) >= amp))
    offset = on[-1] * HOP + HOP - int(np.argmax(np.abs(last[::-1]) >= amp))
    margin = int(round(TRIM_MARGIN * SAMPLE_RATE))
    start, end = onset - margin, min(len(x), offset + margin)
    return np.concatenate([np.zeros(max(0, -start), np.float32), x[max(0, start) : end]])


def voiced_threshold(db: np.ndarray) -> float:
    """The energy (dB) a frame needs to count as voiced, from a clip's frame energies ``db``.

    Within :data:`VOICED_DB` dB of the loudest frame, and, when the quietest
    frames (5th percentile: the noise floor) are more than :data:`NOISE_DB`
    below it, at least :data:`NOISE_DB` above that floor (so a recording's
    background noise is not speech).
    """
    peak = float(np.max(db))
    floor = float(np.percentile(db, 5))
    thr = peak - VOICED_DB
    if peak - floor > NOISE_DB:
        thr = max(thr, floor + NOISE_DB)
    return thr


def split_windows(samples: np.ndarray) -> list[np.ndarray]:
    """30 s windows of a clip (the last one shorter); an empty clip is an error for the caller."""
    return [samples[i : i + N_SAMPLES] for i in range(0, max(len(samples), 1), N_SAMPLES)]


def real_frames(n_samples: int) -> int:
    """Encoder frames (of 1500) that cover real audio in a window holding ``n_samples`` samples."""
    n_mel = -(-int(n_samples) // HOP)
    return int(min(ENC_FRAMES, max(1, -(-n_mel // 2))))


def voiced_mask(window_audios: Sequence[np.ndarray], energies: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(n_windows, 1500) bool: the encoder frames to pool (see the module docstring).

    ``energies``: each window's :func:`frame_energy_db` (computed when not given).
    The threshold is relative to the loudest frame of the whole clip.
    """
    if energies is None:
        energies = [frame_energy_db(w) for w in window_audios]
    real = [real_frames(len(w)) for w in window_audios]
    enc_db = []
    for e, r in zip(energies, real):
        pairs = e[: 2 * ENC_FRAMES].reshape(ENC_FRAMES, 2).max(axis=1)  # each encoder frame: its louder mel frame
        enc_db.append(pairs[:r])
    thr = voiced_threshold(np.concatenate(enc_db))
    mask = np.zeros((len(real), ENC_FRAMES), dtype=bool)
    for k, (d, r) in enumerate(zip(enc_db, real)):
        mask[k, :r] = d >= thr
    if not mask.any():  # digital silence: pool every real-audio frame
        for k, r in enumerate(real):
            mask[k, :r] = True
    return mask


# ----------------------------------------------------------------------------- one clip, ready for the encoder


@dataclass(frozen=True, eq=False)
class SpeechInput:
    """A decoded clip: Whisper log-mel windows (n, 80, 3000) float32 and the frames to pool (n, 1500) bool."""

    mels: np.ndarray
    mask: np.ndarray
    seconds: float


def prepare(samples: np.ndarray) -> SpeechInput:
    """16 kHz mono samples -> :class:`SpeechInput` (silence trimmed, windows, log-mel, voiced mask)."""
    wins = split_windows(trim_silence(samples))
    mels, energies = [], []
    for w in wins:  # one STFT per window serves the log-mel and the frame energies
        power = _power_frames(w)
        mels.append(_log_mel_from_power(power))
        energies.append(_energy_from_power(power))
    return SpeechInput(np.stack(mels), voiced_mask(wins, energies), len(samples) / SAMPLE_RATE)

"""Small deterministic encoders for tests (used through `callable:helper_encoders:<fn>`)."""

import hashlib
import os
import time

import numpy as np


def _vec(s: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def hashed_text(items):
    """Text -> a pseudo-random vector derived from the string (deterministic)."""
    log = os.environ.get("ANYBIND_TEST_CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{len(items)}\n")
    return np.stack([_vec(s, 8) for s in items])


hashed_text.dim = 8
hashed_text.input_kind = "text"
hashed_text.batch_size = 4


def slow_text(items):
    """Like hashed_text but slow, so that a test can kill the process mid-encode."""
    time.sleep(float(os.environ.get("ANYBIND_TEST_SLEEP", "0.2")))
    return hashed_text(items)


slow_text.dim = 8
slow_text.input_kind = "text"
slow_text.batch_size = 4


def file_size(items):
    """File path -> [size, first byte] (a 'sensor' encoder reading files)."""
    out = []
    for p in items:
        b = open(p, "rb").read()
        out.append([float(len(b)), float(b[0]) if b else 0.0])
    return np.asarray(out, np.float32)


file_size.dim = 2


def image_stats(items):
    """Image path -> mean and std of each RGB channel plus aspect ratio (a tiny real image encoder)."""
    from anybind.data.media import load_image

    out = []
    for p in items:
        a = np.asarray(load_image(p, size=32), dtype=np.float32) / 255.0
        out.append(np.concatenate([a.reshape(-1, 3).mean(0), a.reshape(-1, 3).std(0), [1.0]]))
    return np.asarray(out, np.float32)


image_stats.dim = 7


def array_stats(items):
    """An in-memory array or PIL image -> [mean, std, sum of squares, first, last] (deterministic)."""
    out = []
    for x in items:
        a = np.asarray(x, dtype=np.float64).ravel()
        out.append([a.mean(), a.std(), float((a * a).sum()), a[0], a[-1]])
    return np.asarray(out, np.float32)


array_stats.dim = 5
array_stats.input_kind = "array"


def bow_text(items):
    """Text -> the sum of a pseudo-random vector per lower-cased word (a bag of words: shared words, nearby vectors)."""
    import re

    return np.stack([sum((_vec(w, 32) for w in re.findall(r"\w+", s.lower())), np.zeros(32, np.float32))
                     for s in items]).astype(np.float32)


bow_text.dim = 32
bow_text.input_kind = "text"
bow_text.batch_size = 64


def series_shape(items):
    """A time series (a ``.npy``/CSV path or an array) -> its mean channel z-normalised and resampled to 16
    steps, plus its log-scale and mean (a tiny plugin encoder of arrays)."""
    from anybind.data.series import as_series, load_series
    from anybind.encoders.series_base import resample_linear, znormalise

    out = []
    for it in items:
        x = as_series(it) if isinstance(it, np.ndarray) else load_series(it)
        m = x.mean(0, keepdims=True)
        out.append(np.concatenate([resample_linear(znormalise(m), 16)[0], [np.log1p(m.std()), m.mean()]]))
    return np.asarray(out, np.float32)


series_shape.dim = 18
series_shape.reads_arrays = True


def audio_envelope(items):
    """An audio file (or samples, or (samples, rate)) -> its loudness over 16 equal spans, scaled to sum 1, plus
    its log-duration (a tiny real speech encoder: decoded by the library's one audio decoding)."""
    from anybind.data.media import as_audio

    out = []
    for it in items:
        x = as_audio(it, 8000)
        rms = np.array([np.sqrt(np.mean(np.square(s))) if s.size else 0.0 for s in np.array_split(x, 16)])
        out.append(np.concatenate([rms / max(rms.sum(), 1e-9), [np.log1p(len(x) / 8000)]]))
    return np.asarray(out, np.float32)


audio_envelope.dim = 17


def threads_text(items):
    """Like hashed_text, and appends torch's intra-op thread count in the calling thread to ANYBIND_TEST_THREAD_LOG."""
    import torch

    with open(os.environ["ANYBIND_TEST_THREAD_LOG"], "a") as f:
        f.write(f"{torch.get_num_threads()}\n")
    return np.stack([_vec(s, 8) for s in items])


threads_text.dim = 8
threads_text.input_kind = "text"
threads_text.batch_size = 4

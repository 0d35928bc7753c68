"""Decoding of media files: images (raster and SVG) and audio.

Every function raises :class:`~anybind.errors.DataError` naming the file and
what is wrong, never a traceback from deep inside a codec.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import read_regular

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"})
AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif"})


def _read_bytes(path: str | Path) -> bytes:
    data = read_regular(path)  # refuses a missing path, a folder, a FIFO or a device without blocking on it
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def _looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or b"<svg" in head[:1024]:
        return True
    # a prolog, DOCTYPE or comments can push the root further (Open Clip Art: up to 4 KB of comments)
    return head.startswith((b"<?xml", b"<!doctype", b"<!--")) and b"<svg" in data[:65536].lower()


def load_image(path: str | Path, size: int | None = None):
    """Open an image as an RGB ``PIL.Image``.

    Transparent images are composited on white (Tux Paint stamps and emoji are
    transparent PNGs: on black they would all look alike).  SVG files are
    rasterised with CairoSVG at ``size`` pixels on the longer side (default 512).
    The file type is sniffed from the content, not the name.
    """
    from PIL import Image, UnidentifiedImageError

    data = _read_bytes(path)
    if _looks_like_svg(data):
        try:
            import cairosvg
        except ImportError:  # pragma: no cover - cairosvg is a core dependency
            raise DataError(f"{path}: SVG needs the 'cairosvg' package") from None
        try:
            png = cairosvg.svg2png(bytestring=data, output_width=size or 512)
        except Exception as e:  # cairosvg raises many types on bad XML
            raise DataError(f"{path}: corrupt SVG ({type(e).__name__}: {e})") from None
        data = png
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))  # PIL names its buffer, not the file
        raise DataError(f"{path}: corrupt or unsupported image ({why})") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{path}: image has no pixels")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 in [-1, 1].

    Reads wav/ogg/flac/mp3 (libsndfile through ``soundfile``), mixes channels to
    mono and, when ``sample_rate`` is given, resamples with a polyphase filter.
    Returns ``(samples, rate)``.  Empty or undecodable files raise DataError.
    """
    import soundfile as sf

    data = _read_bytes(path)
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise DataError(f"{path}: corrupt or unsupported audio ({e})") from None
    if wav.shape[0] == 0:
        raise DataError(f"{path}: audio has no samples")
    mono = wav.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: audio contains non-finite samples")
    if sample_rate and sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
        sr = sample_rate
    return mono, int(sr)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a mono signal."""
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_from), int(sr_to))
    return resample_poly(x, sr_to // g, sr_from // g).astype(np.float32)


def as_mono(arr: np.ndarray, what: str) -> np.ndarray:
    """An in-memory waveform ((n,) or (n, channels); float or integer PCM) as finite mono float32."""
    a = np.asarray(arr)
    if a.size == 0:
        raise DataError(f"{what}: no samples")
    if a.ndim not in (1, 2):
        raise DataError(f"{what}: expected shape (n,) or (n, channels), got {a.shape}")
    if np.issubdtype(a.dtype, np.integer):  # PCM: scale like soundfile (int16 / 32768)
        a = a.astype(np.float64) / float(-np.iinfo(a.dtype).min)
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"{what}: non-finite samples")
    return a


def short_repr(item: object) -> str:
    """``repr`` cut to 80 characters, for error messages about an unexpected in-memory item."""
    r = repr(item)
    return r if len(r) <= 80 else r[:77] + "..."

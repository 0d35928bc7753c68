"""Decoding of media files: images (raster and SVG) and audio.

Every function raises :class:`~anybind.errors.DataError` naming the file and
what is wrong, never a traceback from deep inside a codec.  What decoding one file
may cost is bounded by :class:`MediaLimits` (:data:`LIMITS` by default; the service
passes its own ``max_pixels``): a file over a limit is a bad record, like a corrupt one.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import read_regular

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"})
AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif"})


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on the memory and CPU one image may cost, checked before anything is decoded or rendered.

    max_pixels: a raster image (read from its header), the rendering of an SVG, or the images embedded in
        an SVG (all the times they are drawn, together) of more pixels is refused.  Default: PIL's
        decompression-bomb threshold (2 x ``Image.MAX_IMAGE_PIXELS``); the service checks uploads against
        its own ``ServeConfig.max_pixels`` (40 million) and ``max_svg_work``.
    max_svg_bytes: SVG text, after inflating a gzip-compressed SVG (``.svgz``) and with every SVG embedded
        in it; inflation stops at this size.  The largest Open Clip Art SVG is 1.7 MB.
    max_svg_work: the estimated work of rendering an SVG, in units of about one plain element (~50 us):
        each ``<use>`` / ``url(#...)`` reference counts as a copy of its target, markers once per vertex,
        plus path data, text, style-sheet matching and compositing (see :mod:`anybind.data.svg`).  All 9,026
        SVGs of Open Clip Art, Tux Paint and /usr/share's icons that CairoSVG reads pass (17 more declare XML
        entities, which it refuses); the costliest, 167k, renders in 9 s, the next 90k.  The service
        takes 100k (all but that one).
    max_svg_depth: nesting of elements and references in an SVG (real files: at most 14).
    max_sample_rate: an audio file declaring a higher sample rate (Hz) is refused before it is resampled:
        the polyphase filter grows with the rate (a 444-byte WAV declaring 5 MHz cost 4.6 GB). 384 kHz is
        the highest rate audio hardware records at.
    """

    max_pixels: int = 178_956_970
    max_svg_bytes: int = 16 * 2**20
    max_svg_work: int = 250_000
    max_svg_depth: int = 64
    max_sample_rate: int = 384_000


#: the limits :func:`load_image` applies unless given others
LIMITS = MediaLimits()


def _read_bytes(path: str | Path) -> bytes:
    data = read_regular(path)  # refuses a missing path, a folder, a FIFO or a device without blocking on it
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def looks_like_svg(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) is SVG text, or gzip-compressed SVG text (``.svgz``).

    A gzip stream is judged by its first inflated bytes (at most 64 KB are inflated), not by the
    name stored in its header."""
    from .svg import GZIP_MAGIC, svg_head

    if data[:2] == GZIP_MAGIC:
        data = svg_head(data)
        if data[:2] == GZIP_MAGIC:
            return False
    head = data[:2048].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or b"<svg" in head[:1024]:
        return True
    # a prolog, DOCTYPE or comments can push the root further (Open Clip Art: up to 4 KB of comments)
    return head.startswith((b"<?xml", b"<!doctype", b"<!--")) and b"<svg" in data[:65536].lower()


def load_image(path: str | Path, size: int | None = None, limits: MediaLimits | None = None):
    """Open an image as an RGB ``PIL.Image``.

    Transparent images are composited on white (Tux Paint stamps and emoji are
    transparent PNGs: on black they would all look alike).  SVG files (also
    gzip-compressed) are rasterised with CairoSVG at ``size`` pixels wide (default 512).
    The file type is sniffed from the content, not the name.  An image over
    ``limits`` (default :data:`LIMITS`) raises DataError before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    lim = limits or LIMITS
    data = _read_bytes(path)
    if looks_like_svg(data):
        from .svg import render_svg

        data = render_svg(data, path, size or 512, lim)
    bad = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
    try:
        with warnings.catch_warnings():  # the pixel count is checked here, against lim.max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own limit, when lim.max_pixels is above it
        raise DataError(f"{path}: image too large to decode ({e})") from None
    except bad as e:
        raise DataError(f"{path}: corrupt or unsupported image ({_no_buffer(e)})") from None
    if img.width * img.height > lim.max_pixels:
        size = f"{img.width}x{img.height}"
        raise DataError(f"{path}: an image of {size} pixels; at most {lim.max_pixels:,} are decoded")
    try:
        img.load()
    except bad as e:
        raise DataError(f"{path}: corrupt or unsupported image ({_no_buffer(e)})") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{path}: image has no pixels")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def _no_buffer(e: Exception) -> str:
    """A codec's message without the in-memory buffer it names in place of the file (the caller names it)."""
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))


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
        raise DataError(f"{path}: corrupt or unsupported audio ({_no_buffer(e)})") from None
    if wav.shape[0] == 0:
        raise DataError(f"{path}: audio has no samples")
    if not 1 <= sr <= LIMITS.max_sample_rate:
        raise DataError(f"{path}: audio declares a sample rate of {sr} Hz; at most {LIMITS.max_sample_rate} Hz is read")
    mono = wav.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: audio contains non-finite samples")
    if sample_rate and sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
        sr = sample_rate
    return mono, int(sr)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a mono signal; rates above ``LIMITS.max_sample_rate`` are refused."""
    from math import gcd

    for sr in (sr_from, sr_to):
        if not 1 <= int(sr) <= LIMITS.max_sample_rate:
            raise DataError(f"sample rate {sr} Hz: at most {LIMITS.max_sample_rate} Hz is resampled")

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

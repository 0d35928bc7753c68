"""Decoding of media files: images (raster and SVG) and audio.

Every function raises :class:`~anybind.errors.DataError` naming the file and
what is wrong, never a traceback from deep inside a codec.  What decoding one file
may cost is bounded by :class:`MediaLimits` (:data:`LIMITS` by default; the service
passes its own ``max_pixels``): a file over a limit is a bad record refused by that limit
(:class:`~anybind.errors.LimitRefused`), not a corrupt one.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, LimitRefused
from .files import read_regular
from .limits import LIMITS, MediaLimits, current_limits  # noqa: F401  (re-exported: defined here before)
from .svg import SVG_WIDTH, looks_like_svg, render_svg  # noqa: F401  (looks_like_svg re-exported: defined here before)

log = logging.getLogger(__name__)

#: the EXIF tag of a photo's orientation (how to turn the stored pixels to show it upright)
EXIF_ORIENTATION = 0x0112
#: how :func:`load_image` decodes image files, in the identity of every image encoder that reads files through
#: it (the feature cache's key): change it when decoding changes, so that features cached before are not reused
IMAGE_DECODING = "decode=exif-upright"

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"})
AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif"})




def _read_bytes(path: str | Path) -> bytes:
    data = read_regular(path)  # refuses a missing path, a folder, a FIFO or a device without blocking on it
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def load_image(path: str | Path, size: int | None = None, limits: MediaLimits | None = None):
    """Open an image as an RGB ``PIL.Image``.

    Transparent images are composited on white (Tux Paint stamps and emoji are
    transparent PNGs: on black they would all look alike).  SVG files (also
    gzip-compressed) are rasterised with CairoSVG at ``size`` pixels wide (default 512).
    The file type is sniffed from the content, not the name.  An image over
    ``limits`` (default: :func:`~anybind.data.limits.current_limits`) raises DataError before it is decoded.
    A photo is turned upright by its EXIF orientation tag (:data:`IMAGE_DECODING`), as an in-memory PIL image
    is (:func:`to_rgb`).
    """
    from PIL import Image, UnidentifiedImageError

    lim = limits or current_limits()
    data = _read_bytes(path)
    if looks_like_svg(data):

        data = render_svg(data, path, size or SVG_WIDTH, lim)
    bad = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
    try:
        with warnings.catch_warnings():  # the pixel count is checked here, against lim.max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own limit: over a limit too, not corrupt
        raise _bomb(path, e, lim) from None
    except bad as e:
        raise DataError(f"{path}: corrupt or unsupported image ({_no_buffer(e)})") from None
    if img.width * img.height > lim.max_pixels:
        size = f"{img.width}x{img.height}"
        why = f"an image of {size} pixels; at most {lim.max_pixels:,} are decoded"
        raise LimitRefused.over(path, why, "max_pixels")  # over a limit, not corrupt: reported as refused
    try:
        with warnings.catch_warnings():  # PIL checks the frames of an animation (a GIF's) again when loading
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as e:
        raise _bomb(path, e, lim) from None
    except bad as e:
        raise DataError(f"{path}: corrupt or unsupported image ({_no_buffer(e)})") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{path}: image has no pixels")
    return to_rgb(img, path)


def upright(img, name: str | Path | None = None):
    """``img`` as a viewer shows it: turned or mirrored by its EXIF orientation tag (a photo taken with the
    camera on its side is stored sideways, with the tag saying how to turn it), the tag's 8 values as in EXIF 2.3;
    ``img`` itself when it has no such tag.  An orientation that cannot be read (a damaged EXIF block) is
    logged, naming the file (``name``; an in-memory image by its :func:`short_repr`), and the
    pixels are used as stored.  The one rule for files (:func:`load_image`), in-memory images (:func:`to_rgb`)
    and the feature cache's key of an in-memory image (:func:`~anybind.encoders.base.content_key`)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation not in range(2, 9):  # 1: stored upright; others: no viewer knows them
            return img
        return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 - PIL's EXIF parser raises what the bytes make it (struct, Syntax...)
        log.warning("%s: EXIF orientation unreadable (%s: %s); the image is used as stored",
                    short_repr(img) if name is None else name, type(e).__name__, " ".join(str(e).split()))
        return img


def _bomb(path: str | Path, e: Exception, lim: MediaLimits) -> LimitRefused:
    """PIL's decompression-bomb refusal of ``path`` as what it is: an image over a pixel limit, not a corrupt one
    (the limit that binds is PIL's own, twice ``PIL.Image.MAX_IMAGE_PIXELS``, when ``max_pixels`` is above it)."""
    from PIL import Image

    m = re.search(r"\((\d+) pixels\)", str(e))
    size = f"an image of {int(m.group(1)):,} pixels" if m else "an image"
    most = min(lim.max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)) or lim.max_pixels
    return LimitRefused.over(path, f"{size}; at most {most:,} are decoded", "max_pixels",
                             also=" and PIL.Image.MAX_IMAGE_PIXELS (PIL refuses images of over twice it)")


def _top_8_bits(img):
    """A 16-bit greyscale image (PIL mode ``I;16*``: a 16-bit PNG or TIFF) as 8-bit ``L``, its top 8 bits; its
    colour key (tRNS), compared at 16 bits, as an alpha channel (``LA``)."""
    from PIL import Image

    a = np.asarray(img).astype(np.uint16)
    out = Image.fromarray((a >> 8).astype(np.uint8))  # uint8, 2-D: mode L
    key = img.info.get("transparency")
    if isinstance(key, int):
        out.putalpha(Image.fromarray(np.where(a == key, 0, 255).astype(np.uint8)))
    return out


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
    if a.ndim == 2 and a.shape[1] > a.shape[0]:  # averaged, (channels, n) would be a few "samples" of the clip's mean
        raise DataError(f"{what}: shape {a.shape} looks like (channels, n); expected (n, channels): transpose it")
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


def to_rgb(img: Any, name: str | Path | None = None):
    """An RGB ``PIL.Image`` from a PIL image, turned upright by its EXIF orientation tag (:func:`upright`) and
    composited on white like :func:`load_image` (``name``: the file it came from, for a warning)."""
    from PIL import Image

    if img.width < 1 or img.height < 1:
        raise DataError("image has no pixels")
    img = upright(img, name)
    if img.mode.startswith("I;16"):  # PIL's own conversion would clip every value over 255 to white
        img = _top_8_bits(img)
    # transparency: an alpha channel, or a colour key (tRNS) in a palette, greyscale or RGB PNG
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def as_rgb_image(item: Any):
    """Decode an item to an RGB PIL image: a path, a PIL image or a uint8 HxW[xC] array."""
    from PIL import Image

    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3):
        if item.ndim == 3 and item.shape[2] not in (1, 3, 4):
            raise DataError(f"image array of shape {item.shape}: expected HxW, HxWx3 or HxWx4")
        arr = item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
    raise DataError(f"{short_repr(item)}: not an image (expected a file path, a PIL image or a uint8 array)")


def as_audio(item: Any, sample_rate: int, what: str = "audio") -> np.ndarray:
    """Decode an item to mono float32 samples at ``sample_rate``: the one audio decoding of every audio encoder.

    Items: a file path; ``(samples, rate)`` (resampled to ``sample_rate``); or samples already at
    ``sample_rate`` (what an encoder's ``load`` returns).  Samples are ``(n,)`` or ``(n, channels)`` (averaged
    to mono), float or integer PCM (scaled like soundfile).  ``what`` names the kind in errors."""
    if isinstance(item, (str, Path)):
        return load_audio(item, sample_rate)[0]
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        wav = as_mono(item[0], f"{what} array")
        try:
            rate = int(item[1])
        except (TypeError, ValueError):
            rate = 0
        if rate <= 0:
            raise DataError(f"{what} array: bad sample rate {item[1]!r}")
        return resample(wav, rate, sample_rate) if rate != sample_rate else wav
    if isinstance(item, np.ndarray):
        return as_mono(item, f"{what} array")
    raise DataError(f"{short_repr(item)}: not {what} (expected a file path, samples at {sample_rate} Hz or (samples, rate))")

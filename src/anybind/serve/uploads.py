"""What the service does with an uploaded file's bytes before it decodes them: the name shown in messages, the
size checks made from headers (nothing decoded), and the tiny sample media its warm-up embeds."""

from __future__ import annotations

import io
import math
import wave

import numpy as np

from ..data.limits import MediaLimits
from ..errors import DataError, serve_limit
from ..index import QueryError
from .config import ServeConfig
from .sniff import Sniffed


class UploadError(QueryError):
    """An upload whose content is no image, sound, video or array this service reads (HTTP 415)."""


def display_name(name: str | None) -> str:
    """An upload's file name as shown in messages: no folders, printable, at most 80 characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    base = "".join(c if c.isprintable() else "?" for c in base)
    return repr(base if len(base) <= 80 else base[:77] + "...")


def check_size(data: bytes, s: Sniffed, shown: str, config: ServeConfig, limits: MediaLimits) -> None:
    """Refuse an upload's images of too many pixels and sounds too long, from their headers (nothing decoded), and
    SVGs too costly to render (nothing rendered); ``.npy`` arrays of Python objects (never unpickled) or of too
    many values (nothing loaded).  An image or sound header that cannot be read is left to the decoder,
    whose message is clearer."""
    if s.kind == "array":
        shape = array_shape(data, shown)
        if math.prod(shape) > config.max_array_values:
            raise QueryError(f"{shown}: an array of shape {shape} ({math.prod(shape)} values); this service takes "
                             f"at most {config.max_array_values} values (the limit, {serve_limit('max_array_values')}); "
                             "not loaded")
    elif s.mime == "image/svg+xml":
        from ..data.svg import check_svg

        check_svg(data, shown, limits)
    elif s.kind == "image":
        import warnings

        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
        except Image.DecompressionBombError as e:  # over PIL's own limit
            raise QueryError(f"{shown}: image too large ({e})") from None
        except Exception:  # noqa: BLE001 - unreadable header: the decoder reports it
            return
        if w * h > config.max_pixels:
            raise QueryError(f"{shown}: an image of {w}x{h} pixels; this service takes at most "
                             f"{config.max_pixels / 1e6:g} million pixels (the limit, "
                             f"{serve_limit('max_pixels')}); not decoded: refused before decoding")
    elif s.kind == "audio":
        import soundfile as sf

        try:
            info = sf.info(io.BytesIO(data))
            seconds = info.frames / info.samplerate
        except Exception:  # noqa: BLE001 - unreadable header: the decoder reports it
            return
        if seconds > config.max_audio_seconds:
            raise QueryError(
                f"{shown}: a sound of {seconds:.0f} s; this service takes at most "
                f"{config.max_audio_seconds:g} s"
            )


def array_shape(data: bytes, shown: str) -> tuple[int, ...]:
    """The shape an uploaded ``.npy`` declares in its header; :class:`UploadError` (415) when it is no plain
    numeric array (Python objects: a pickle, never loaded), or its header or length is wrong."""
    from ..data.series import npy_header

    try:
        return npy_header(data, shown)[0]
    except DataError as e:
        raise UploadError(str(e)) from None


def upload_features(data: bytes, shown: str, dim: int) -> np.ndarray:
    """An uploaded ``.npy`` of a ``vectors:`` modality's features (its size already checked from its header),
    loaded (never unpickled) and checked: one vector of ``dim`` finite values (:class:`QueryError`, 400)."""
    from ..encoders.custom import npy_features

    try:
        return npy_features(data, dim, shown)
    except DataError as e:
        raise QueryError(str(e)) from None


def tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


def tiny_npy(length: int = 64) -> bytes:
    """A one-channel sample series as ``.npy`` bytes (the warm-up of a modality that reads arrays)."""
    buf = io.BytesIO()
    np.save(buf, np.sin(np.linspace(0.0, 6.0, length)), allow_pickle=False)
    return buf.getvalue()


def tiny_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()

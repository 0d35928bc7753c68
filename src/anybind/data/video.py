"""Decoding of video files with PyAV (FFmpeg), under bounded limits, and the frames a video encoder samples.

:func:`sample_frames` decodes the first video stream of a file (or of bytes in memory) and yields RGB frames
sampled at ``fps`` frames per second, up to ``max_frames``: for each sample time ``t = k / fps`` (seconds from
the first frame) the first frame shown at or after ``t``; a frame is taken at most once, so a clip slower than
``fps`` gives each of its frames.  Decoding stops at the last sample, so a long video costs only the seconds
sampled.  What one video may cost is bounded by :class:`~anybind.data.limits.MediaLimits` (frame size from the
header, declared duration, frames decoded).  Every failure -- a corrupt or truncated file, no video stream, an
unsupported codec, zero frames -- is one :class:`~anybind.errors.DataError` naming the file; a video over a limit
is a :class:`~anybind.errors.LimitRefused` (refused, not corrupt) naming the file and the limit.

PyAV is the ``video`` extra: ``pip install 'anybind[video]'``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, LimitRefused
from .files import open_regular
from .limits import MediaLimits, current_limits

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ogv", ".mpg", ".mpeg"})
#: bump when the choice of frames below changes (video encoders put it in their identity)
SAMPLING_VERSION = "first-at-or-after;v1"


def import_av(what: str = "decoding video") -> Any:
    """The ``av`` module, or a DataError saying which extra installs it."""
    try:
        import av
    except ImportError as e:
        raise DataError(f"{what} needs PyAV ({e}): pip install 'anybind[video]'") from None
    return av


def video_name(source: Any) -> str:
    """How an error names a video: its path, or the kind of in-memory item."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of video>"
    return f"<{type(source).__name__}>"


def _clean(e: Exception) -> str:
    """An FFmpeg message without the buffer or file name it quotes (the caller names the file)."""
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", str(e))
    msg = re.sub(r":\s*'[^']*'$", "", msg)
    msg = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", msg)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def sample_frames(
    source: str | Path | bytes, fps: float, max_frames: int, limits: MediaLimits | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """``(seconds from the first frame, RGB uint8 HxWx3)`` for each sampled frame (see the module docstring).

    Raises DataError naming the video on anything wrong, also after some frames were yielded (a stream that
    turns corrupt half way is a bad item, not a shorter one).
    """
    if not fps > 0 or max_frames < 1:
        raise DataError(f"video sampling needs fps > 0 and max >= 1, got fps={fps}, max={max_frames}")
    name = video_name(source)
    av = import_av(f"{name}: decoding video")
    lim = limits or current_limits()
    if isinstance(source, (str, Path)):
        fh = open_regular(source)  # refuses a folder or a FIFO before FFmpeg sees it
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise DataError(f"{name}: empty video")
        fh = io.BytesIO(bytes(source))
    else:
        raise DataError(f"{name}: not a video (expected a file path or the file's bytes)")
    with fh:
        try:
            container = av.open(fh, mode="r")
        except Exception as e:  # noqa: BLE001 - av.error.* and whatever FFmpeg reports
            raise DataError(f"{name}: corrupt or unsupported video ({_clean(e)})") from None
        with container:
            yield from _sample(container, name, fps, max_frames, lim)


def _sample(container: Any, name: str, fps: float, max_frames: int, lim: MediaLimits) -> Iterator[tuple[float, np.ndarray]]:
    streams = container.streams.video
    if not streams:
        raise DataError(f"{name}: no video stream")
    stream = streams[0]
    ctx = stream.codec_context
    if ctx is None:
        raise DataError(f"{name}: unsupported video codec (FFmpeg has no decoder for this stream)")
    w, h = int(ctx.width or 0), int(ctx.height or 0)
    if w * h > lim.max_video_pixels:
        raise LimitRefused.over(name, f"video frames of {w}x{h} pixels; at most {lim.max_video_pixels:,} are decoded",
                                "max_video_pixels")
    seconds = _declared_seconds(container, stream)
    if seconds is not None and seconds > lim.max_video_seconds:
        raise LimitRefused.over(name, f"a video of {seconds:.1f} s; at most {lim.max_video_seconds:g} s are decoded",
                                "max_video_seconds")
    step = 1.0 / fps
    rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    t0: float | None = None
    next_t, taken, decoded = 0.0, 0, 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            if decoded > lim.max_video_frames:
                raise LimitRefused.over(name, f"more than {lim.max_video_frames:,} frames decoded; at most that many "
                                        "are", "max_video_frames", stopped=True)
            if frame.width * frame.height > lim.max_video_pixels:
                raise LimitRefused.over(name, f"a video frame of {frame.width}x{frame.height} pixels; at most "
                                        f"{lim.max_video_pixels:,} are decoded", "max_video_pixels", stopped=True)
            t = frame.time if frame.time is not None else ((decoded - 1) / rate if rate else None)
            if t is None:
                raise DataError(f"{name}: video frames carry no time stamps and the stream no frame rate")
            if t0 is None:
                t0 = t
            t = float(t - t0)
            if t + 1e-6 < next_t:
                continue
            yield t, frame.to_ndarray(format="rgb24")
            taken += 1
            if taken >= max_frames:
                return
            while next_t <= t + 1e-6:
                next_t = round(next_t + step, 9)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - av.error.* raised mid-stream
        raise DataError(f"{name}: corrupt or unsupported video ({_clean(e)})") from None
    if taken == 0:
        raise DataError(f"{name}: video has no frames")


def _declared_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def read_frames(source: str | Path | bytes, fps: float, max_frames: int,
                limits: MediaLimits | None = None) -> list[np.ndarray]:
    """The frames :func:`sample_frames` samples, as a list."""
    return [f for _, f in sample_frames(source, fps, max_frames, limits)]


def poster_frame(source: str | Path | bytes, limits: MediaLimits | None = None) -> np.ndarray:
    """A video's first frame (RGB uint8), for a thumbnail; checks the file like :func:`sample_frames`."""
    return read_frames(source, 1.0, 1, limits)[0]


def looks_like_video(head: bytes) -> str | None:
    """The container a file's first bytes announce (``"mp4"``, ``"webm"``), else ``None``.

    MP4 / QuickTime: an ``ftyp`` box at byte 4; WebM / Matroska: the EBML magic ``1A 45 DF A3``.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"qt"):
            return "mov"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"):
            return None  # still images in an ISO box
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    return None

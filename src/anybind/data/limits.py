"""How much memory and CPU one media file may cost: the limits every decoder checks before working."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


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
        plus path data, text, style-sheet matching, compositing and strokes (vertices x width in output
        pixels, :mod:`anybind.data.svg_stroke`; see :mod:`anybind.data.svg`).  All 9,124 SVGs under /usr/share (Open
        Clip Art, Tux Paint, icons, games) that CairoSVG reads pass (17 more declare XML entities, which it
        refuses); the costliest, 167k, renders in 9 s, the next 162k; strokes add at most 1.6k to any.  The
        service takes 100k (all but 4).
    max_svg_depth: nesting of elements and references in an SVG (real files: at most 14).
    max_svg_seconds: wall-clock seconds rendering one SVG may take: it is rendered in a worker process,
        killed past them (the file is then refused like an undecodable one: skipped and reported by
        ``fit`` / ``index``).  The costliest real SVG takes 9 s on a 2-core machine; ``None``: rendered in
        this process, unbounded.  The service takes ``ServeConfig.max_svg_seconds``.
    max_sample_rate: an audio file declaring a higher sample rate (Hz) is refused before it is resampled:
        the polyphase filter grows with the rate (a 444-byte WAV declaring 5 MHz cost 4.6 GB). 384 kHz is
        the highest rate audio hardware records at.
    max_video_pixels: a video whose frames are larger (width x height, from the stream header) is refused
        before any frame is decoded: 4096 x 2160 (DCI 4K) passes.
    max_video_seconds: a video declaring a longer duration is refused before decoding.
    max_video_frames: frames decoded from one video, sampled or not: past them the video is refused (a
        stream declaring thousands of frames per second would otherwise decode without end).
    """

    max_pixels: int = 178_956_970
    max_svg_bytes: int = 16 * 2**20
    max_svg_work: int = 250_000
    max_svg_depth: int = 64
    max_sample_rate: int = 384_000
    max_svg_seconds: float | None = 120.0
    max_video_pixels: int = 4096 * 2160
    max_video_seconds: float = 4 * 3600.0
    max_video_frames: int = 20_000


#: the limits :func:`anybind.data.media.load_image` applies unless given others (or :func:`using_limits`)
LIMITS = MediaLimits()

_CURRENT: ContextVar[MediaLimits | None] = ContextVar("anybind_media_limits", default=None)


def current_limits() -> MediaLimits:
    """The limits media are decoded under here: the innermost :func:`using_limits` block's, else
    :data:`LIMITS`."""
    return _CURRENT.get() or LIMITS


@contextmanager
def using_limits(limits: MediaLimits) -> Iterator[MediaLimits]:
    """Decode media under ``limits`` within this block: in this thread and in the decoding threads the
    feature cache starts from it (the service decodes uploads under its own limits this way)."""
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)

"""The service's limits and options (:class:`ServeConfig`), given to :class:`~anybind.serve.state.Service`
and the app."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from ..errors import AnybindError, serve_limit


class ServeConfigError(AnybindError, ValueError):
    """A :class:`ServeConfig` field that cannot be a limit (named in the message)."""


@dataclass
class ServeConfig:
    """Limits of the service (``anybind serve --help`` shows the same defaults).

    max_upload_bytes: cap on a request body (all files of an upload together); larger -> 413.
    max_json_bytes: cap on any other request body (JSON; never more than ``max_upload_bytes``); larger -> 413,
        before it is parsed.  The largest body the
        request schemas allow (64 texts of 2,000 characters, each escaped) is about 1.5 MB; a larger one could only
        hold what is refused, and refusing it one error at a time cost a worker a minute and 920 MiB at 9 MiB.
    max_files: files in one upload request.
    concurrency: requests being answered at once (each in a worker thread); the memory of the uploads among
        them is bounded by ``max_inflight_pixels``, not by this.  Requests that need one encoder
        wait for it in turn, those that arrive while it is busy being encoded together in its next call (see
        ``max_batch``), so this is mostly how many requests can share a batch: a few encoder calls run at once
        (one per encoder), not ``concurrency``.
    max_queue: requests allowed to wait for a slot; one more -> 503 with ``Retry-After``.
    queue_timeout: seconds a request may wait for a slot before it gets 503.
    query_cache: query embeddings (texts, uploads, class prompts) kept in memory (LRU).
    thumb_cache: thumbnails kept in memory (LRU).
    max_pixels: an uploaded raster image larger than this (width x height, read from its header) -> 400,
        before anything is decoded (a small file can hold a huge image).
    max_audio_seconds: an uploaded sound longer than this (read from its header) -> 400.
    max_array_values: an uploaded ``.npy`` array (for a modality whose encoder reads arrays: a time series)
        declaring more values than this (read from its header) -> 400, before it is loaded.
    max_video_seconds: an uploaded video declaring a longer duration -> 400, before a frame is decoded (its
        frames are also bounded by ``max_pixels``, and by the library's 4096x2160).
    max_svg_work: an uploaded SVG whose estimated rendering work is larger -> 400, before it is rendered
        (see :class:`~anybind.data.media.MediaLimits`; its embedded images count against ``max_pixels``).
    max_svg_seconds: wall-clock seconds rendering one SVG may take (an upload, or an indexed SVG's thumbnail):
        it is rendered in a worker process killed past them -> 400, so that no SVG holds a slot longer.
        Uploads are decoded under these limits (see :func:`~anybind.data.limits.using_limits`).
    refresh_seconds: how often (at most) a request looks for writes other processes made to the index
        (``anybind index ... --out`` on it while serving): new, replaced and deleted items are then searchable and
        served; 0 = before every request.
    batch_wait_ms: dynamic batching (:mod:`anybind.serve.batching`): requests that need an encoder while it is
        busy are encoded together in its next call; a request arriving at an idle encoder is encoded at once,
        or after waiting up to this long for more (0, the default: no wait, so a lone request's latency is
        unchanged).
    max_batch: items in one batched encoder call at most (1: batching off).  8 since 2026-12-06 (was 64):
        in ``anybind bench --task serve-load`` (200 requests at once, 128 slots, wait 0, load 14-32 on the
        shared 2-core machine), max_batch 8 beat 64 in 7 of 8 same-round pairs (8 / 64 throughput 1.58, 0.64,
        1.48, 1.18, 1.41, 1.42, 1.24, 1.12; over the same runs' sequential baseline 1.05 / 1.06, 1.31 / 1.00,
        1.29 / 0.91, 1.38 / 1.17), p95 latency 9.0-17.7 s against 12.9-21.0 s; 32 was not better than 8 (1.12 vs
        1.05, one run).  Not measured near idle.  ``batch_wait_ms`` (2, 5, 10 ms) and ``concurrency`` (16, 32)
        gained nothing beyond the noise: unchanged (BENCHMARKS.md, serve-load).  Why 64 costs more: it runs
        images in 32-image passes (``min_forward_batch``), and EfficientNet-Lite0 costs more CPU per image in a
        larger pass (one torch thread, load ~30: 27 / 27 / 33 / 48 ms per image in passes of 1 / 4 / 8 / 32),
        while MiniLM stops gaining past 8 texts (14 / 5 / 5 ms at 1 / 8 / 32).
    max_batch_for: ``{modality: n}``: ``max_batch`` for that modality's encoders instead (e.g. ``{"image": 4,
        "text": 32}``: EfficientNet-Lite0 costs more CPU per image in passes past 4, MiniLM less per text up to
        8-32, see ``max_batch``); a modality the space lacks is refused when the service starts.  An encoder
        two modalities share gets the smaller.  Batching is on when any of these or ``max_batch`` is above 1.
    torch_threads: torch's intra-op threads for each encoder call the service makes (set in the worker thread
        that makes it, given back after); None (the default): the process's setting (torch: one per core, or
        ``OMP_NUM_THREADS``).  With 1, the image and the text encoder's batches, run at once by their own
        leaders (:mod:`anybind.serve.batching`), each take one core instead of both spinning on all of them.
        Neither this nor ``max_batch_for`` is on by default: in ``anybind bench --task serve-load`` (2 shared
        cores, load 12-17) one thread and image 4 / text 32 saved the server 1.1-1.2x of its CPU per request
        over ``max_batch`` 8 alone (19.8-21 against 23.4-23.8 ms), within the rounds' spread (BENCHMARKS.md).
    max_inflight_pixels: what the uploads being decoded and encoded may hold together, in pixels (an RGB
        pixel: 3 bytes; the default, 4 x ``max_pixels``, about 480 MB), whatever ``concurrency`` is: each upload
        reserves what its files declare in their headers (an image its width x height, a sound its samples
        as float32, an SVG or a video ``max_pixels``) before any is decoded, and releases it once its items
        are encoded (or failed); one that does not fit waits its turn (first come, first served), as a
        request waits for a slot: at most ``queue_timeout`` s, at most ``max_queue`` waiting, else 503 with
        ``Retry-After``.  An upload declaring more than the whole budget is served alone (it reserves all of
        it).  See :mod:`anybind.serve.budget`.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 2 * 1024 * 1024
    max_files: int = 8
    concurrency: int = 128
    max_queue: int = 256
    queue_timeout: float = 60.0
    query_cache: int = 4096
    thumb_cache: int = 1024
    max_pixels: int = 40_000_000
    max_audio_seconds: float = 120.0
    max_array_values: int = 2_000_000
    max_video_seconds: float = 120.0
    max_svg_work: int = 100_000
    max_svg_seconds: float = 20.0
    refresh_seconds: float = 2.0
    batch_wait_ms: float = 0.0
    max_batch: int = 8
    max_inflight_pixels: int = 4 * 40_000_000
    max_batch_for: dict[str, int] = field(default_factory=dict)
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.torch_threads is not None and not _whole(self.torch_threads, 1):
            raise ServeConfigError(f"{serve_limit('torch_threads')} must be a whole number >= 1 (torch's intra-op "
                                   f"threads per encoder call) or None, got {self.torch_threads!r}")
        if not isinstance(self.max_batch_for, dict) or not all(
                isinstance(m, str) and m and _whole(n, 1) for m, n in self.max_batch_for.items()):
            raise ServeConfigError(f"{serve_limit('max_batch_for')} must map modality names to whole numbers >= 1 "
                                   f"(items in one batched call of that modality's encoder), got "
                                   f"{self.max_batch_for!r}")
        for name in ("max_upload_bytes", "max_json_bytes"):  # 0 or less: every body (a negative: even empty) a 413
            v = getattr(self, name)
            if not _whole(v, 1):
                raise ServeConfigError(f"{serve_limit(name)} must be a whole number of bytes >= 1, got {v!r}")


def _whole(v, least: int) -> bool:
    """``v`` is a whole number (not a bool) of at least ``least``."""
    return not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= least


def encoder_limits(space, config: ServeConfig) -> dict[str, int]:
    """``config.max_batch_for`` by encoder cache identity (what the batcher keys on): each modality's encoder, or
    the encoders a derived one is computed from; the smaller where modalities share one.  A modality ``space``
    lacks is refused in one line."""
    from ..encoders.base import derived_parts
    from ..encoders.device import cache_identity

    unknown = sorted(set(config.max_batch_for) - set(space.modalities))
    if unknown:
        raise ServeConfigError(f"{serve_limit('max_batch_for')}: no modality {', '.join(map(repr, unknown))} in this "
                               f"space (its modalities: {', '.join(sorted(space.modalities))})")
    limits: dict[str, int] = {}
    for m, n in config.max_batch_for.items():
        todo = [space.encoder(m)]
        while todo:
            enc = todo.pop()
            parts = derived_parts(enc)
            if parts:
                todo.extend(parts)
            else:
                ident = cache_identity(enc)
                limits[ident] = min(limits.get(ident, n), n)
    return limits

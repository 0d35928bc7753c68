"""The memory of uploads in flight, bounded independently of ``concurrency``: a budget of decoded pixels.

Each upload request reserves, before any of its files is decoded, the pixels its files declare
(:func:`upload_pixels`), and holds them until its items are encoded (or failed).  Requests that do not fit
wait, first come first served, at most ``queue_timeout`` seconds and at most ``max_queue`` of them (else 503
with ``Retry-After``, as the admission gate).  So however many requests run at once (``concurrency``, large
so that dynamic batching can gather them), the images, sounds and videos decoded for uploads together stay
under ``ServeConfig.max_inflight_pixels`` (~3 bytes a pixel).  Text queries reserve nothing.

One upload declaring more than the whole budget is still served: it reserves the whole budget, so it runs
alone (its files are each bounded by ``max_pixels`` and their count by ``max_files`` all the same).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from .config import ServeConfig
from .gate import Busy
from .sniff import SNIFF_BYTES, sniff

#: an uploaded sound decodes to float32 samples: its cost in pixels (3 bytes each) is ``samples * 4 / 3``
_AUDIO_BYTES_PER_SAMPLE = 4
#: a sound whose header cannot be read: charged as ``max_audio_seconds`` of 48 kHz stereo
_AUDIO_FALLBACK_RATE = 48_000 * 2


def file_pixels(data: bytes, cfg: ServeConfig) -> int:
    """The decoded size one uploaded file may reach, in pixels (an RGB pixel: 3 bytes), from its header.

    A raster image: width x height (``max_pixels`` when the header cannot be read: the decoder may still try).
    A sound: its samples (frames x channels) as float32, in 3-byte units.  A ``.npy`` array: its values as
    float64, in 3-byte units.  An SVG or a video: ``max_pixels``
    (an SVG's embedded images together, a video's frames one at a time, are bounded by it).  Content that
    is none of these: 0 (it is refused before anything is decoded)."""
    s = sniff(data[:SNIFF_BYTES])
    if s is None:
        return 0
    if s.kind == "image" and s.mime != "image/svg+xml":
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
        except Exception:  # noqa: BLE001 - unreadable or a bomb: refused or failed when staged / decoded
            return cfg.max_pixels
        return min(w * h, cfg.max_pixels)  # a larger one is refused before it is decoded
    if s.kind == "audio":
        import soundfile as sf

        try:
            info = sf.info(io.BytesIO(data))
            samples = info.frames * info.channels
        except Exception:  # noqa: BLE001 - unreadable header: the decoder reports it
            samples = int(cfg.max_audio_seconds * _AUDIO_FALLBACK_RATE)
        return -(-samples * _AUDIO_BYTES_PER_SAMPLE // 3)
    if s.kind == "array":  # read as float64 values (a time series): 8 bytes each
        from ..data.series import npy_header

        try:
            shape = npy_header(data, "upload")[0]
        except Exception:  # noqa: BLE001 - no plain numeric array: refused when staged, nothing loaded
            return 0
        return -(-min(math.prod(shape), cfg.max_array_values) * 8 // 3)
    return cfg.max_pixels  # SVG, video


def upload_pixels(uploads: list[tuple[bytes, str]], cfg: ServeConfig) -> int:
    """The pixels one upload request reserves: the sum over its files of :func:`file_pixels`."""
    return sum(file_pixels(data, cfg) for data, _ in uploads)


class _Waiter:
    __slots__ = ("cost", "event", "granted")

    def __init__(self, cost: int):
        self.cost = cost
        self.event = anyio.Event()
        self.granted = False


class PixelBudget:
    """At most ``capacity`` pixels reserved at once; up to ``max_queue`` reservations waiting (first come,
    first served), each at most ``timeout`` s, else :class:`~anybind.serve.gate.Busy` (503).

    ``reserved``: pixels held now; ``peak``: the most ever held at once; ``waiting``: reservations queued.
    ``also_waiting``: requests waiting elsewhere that share the ``max_queue`` bound (the service passes its
    gate's, so that requests holding their uploads in memory while they wait stay ``max_queue`` in all).
    Used from the event loop only (no locks)."""

    def __init__(self, capacity: int, max_queue: int, timeout: float, also_waiting: Callable[[], int] = lambda: 0):
        self.capacity = max(1, int(capacity))
        self.max_queue = max(0, int(max_queue))
        self.timeout = float(timeout)
        self.also_waiting = also_waiting
        self.reserved = 0
        self.peak = 0
        self._queue: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[int]:
        """Reserve ``pixels`` (at most the whole budget) for the body of the ``async with``; yields what was
        reserved."""
        cost = min(max(0, int(pixels)), self.capacity)
        if cost:
            await self._acquire(cost)
        try:
            yield cost
        finally:
            if cost:
                self._release(cost)

    def _take(self, cost: int) -> None:
        self.reserved += cost
        self.peak = max(self.peak, self.reserved)

    async def _acquire(self, cost: int) -> None:
        if not self._queue and self.reserved + cost <= self.capacity:
            self._take(cost)
            return
        if len(self._queue) + self.also_waiting() >= self.max_queue:
            raise Busy(f"busy: {self.reserved:,} pixels of uploads being decoded and {len(self._queue)} uploads "
                       "waiting; retry shortly")
        w = _Waiter(cost)
        self._queue.append(w)
        try:
            with anyio.move_on_after(self.timeout):
                await w.event.wait()
        except BaseException:  # cancelled (the client went away): give back what was granted, or leave the queue
            if w.granted:
                self._release(cost)
            else:
                self._leave(w)
            raise
        if not w.granted:  # timed out
            self._leave(w)
            raise Busy(f"busy: no room for an upload of {cost:,} pixels within {self.timeout:g} s "
                       f"({self.reserved:,} of {self.capacity:,} being decoded); retry shortly")

    def _leave(self, w: _Waiter) -> None:
        self._queue.remove(w)
        self._wake()  # it may have been the head, holding back smaller ones behind it

    def _release(self, cost: int) -> None:
        self.reserved -= cost
        self._wake()

    def _wake(self) -> None:
        while self._queue and self.reserved + self._queue[0].cost <= self.capacity:
            w = self._queue.popleft()
            w.granted = True
            self._take(w.cost)
            w.event.set()


__all__ = ["PixelBudget", "file_pixels", "upload_pixels"]

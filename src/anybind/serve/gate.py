"""Admission control: at most ``concurrency`` jobs in worker threads, a bounded queue, 503 beyond it."""

import functools

import anyio
import anyio.to_thread


class Busy(Exception):
    """Every slot is taken and the queue is full, or a request waited too long (HTTP 503)."""


class Gate:
    """At most ``concurrency`` jobs in worker threads; up to ``max_queue`` waiting, each at most ``timeout`` s."""

    def __init__(self, concurrency: int, max_queue: int, timeout: float):
        self.concurrency = max(1, int(concurrency))
        self.sem = anyio.Semaphore(self.concurrency)
        self.threads = anyio.CapacityLimiter(self.concurrency)
        self.max_queue = max(0, int(max_queue))
        self.timeout = float(timeout)
        self.waiting = 0
        self.running = 0

    async def run(self, fn, *args, **kwargs):
        if self.sem.value == 0 and self.waiting >= self.max_queue:
            raise Busy(f"busy: {self.running} requests running and {self.waiting} waiting; retry shortly")
        self.waiting += 1
        try:
            with anyio.move_on_after(self.timeout) as scope:
                await self.sem.acquire()
        finally:
            self.waiting -= 1
        if scope.cancelled_caught:
            raise Busy(f"busy: no worker slot became free within {self.timeout:g} s; retry shortly")
        self.running += 1
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.threads)
        finally:
            self.running -= 1
            self.sem.release()

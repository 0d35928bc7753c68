"""Rendering SVG under a wall-clock budget: in a worker process that is killed when the budget runs out.

The estimate of :func:`anybind.data.svg.check_svg` refuses costly documents before rendering;
this bounds what an estimate misses.  :func:`render_in_worker` hands checked SVG text to an idle
worker (:mod:`anybind.data.svg_process`, started on first use and kept for the next SVG) and
waits at most ``budget`` seconds for the PNG: past it the worker is killed (its CPU and memory
are freed at once) and a :class:`RenderTimeout` names the file, which the callers report as a
timeout (a 400 in the service, a skipped and reported record in ``fit`` / ``index``).  A worker
that cannot start (within :data:`START_SECONDS` on a busy machine) is a :class:`RendererUnavailable`:
the file was not read, so it is reported as such, never as corrupt (a 503 in the service).  A start that failed
outright (the process could not be launched, or exited before it was ready) is remembered by this process for
:data:`RETRY_SECONDS`: the SVGs rendered meanwhile fail at once with the same reason (a manifest of 500 SVGs waits
for one start, not 500); after it ONE caller tries a start and the others wait for its outcome.  A start that
only took too long is not remembered (a busy machine may be idle a second later): the next SVG tries again.

Workers are plain ``python svg_process.py`` processes talking over pipes (no anybind import, no
fork of the calling process, whose threads and models a fork would copy); at most
:data:`MAX_IDLE` are kept idle; one is started per concurrent rendering beyond those.  A forked
child (a data-loader worker) never uses its parent's workers: it starts its own.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time

from ..errors import DataError, RenderRefused, RendererUnavailable, RenderTimeout
from . import svg_process

#: idle workers kept for the next SVG (the others are stopped when their rendering ends)
MAX_IDLE = 4
#: seconds a new worker may take to start (not counted in a rendering's budget)
START_SECONDS = 120.0
#: seconds a start that failed outright is remembered: meanwhile no worker is started, every SVG needing one fails
#: at once (a start that timed out is not remembered)
RETRY_SECONDS = 60.0
#: the words the message of a :class:`RendererUnavailable` from a remembered failed start holds
REMEMBERED_MARK = "(remembered: no new start is tried for"


class _Timeout(Exception):
    pass


class _Stopped(Exception):
    pass


class _Remembered(Exception):
    """A worker start that failed a moment ago (not tried again yet)."""

    def __init__(self, how: str, ago: float):
        super().__init__(how)
        self.how, self.ago = how, ago


class _Worker:
    """One worker process and the bytes read from it but not yet used."""

    def __init__(self) -> None:
        if not sys.executable:
            raise _Stopped("no Python interpreter to start it with (sys.executable is empty)")
        # -P: the script's folder (anybind/data, whose module names could shadow others) stays off sys.path
        safe = ["-P"] if sys.version_info >= (3, 11) else []
        self.proc = subprocess.Popen(
            [sys.executable, *safe, svg_process.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        self.buf = b""
        try:
            if self._line(time.monotonic() + START_SECONDS) != b"ready":
                raise _Stopped("it did not say it was ready")
        except BaseException:
            self.kill()
            raise

    def render(self, text: bytes, width: int, max_pixels: int, url: str, budget: float) -> tuple[dict, bytes]:
        head = json.dumps({"n": len(text), "width": int(width), "max_pixels": int(max_pixels), "url": url})
        try:
            self.proc.stdin.write(head.encode() + b"\n" + text)  # read whole by the worker before it renders
            self.proc.stdin.flush()
        except OSError as e:
            raise _Stopped(f"it stopped ({e.strerror or e})") from None
        deadline = time.monotonic() + budget
        answer = json.loads(self._line(deadline))
        return answer, self._bytes(answer.get("n", 0), deadline)

    def _fill(self, deadline: float) -> None:
        fd = self.proc.stdout.fileno()
        left = deadline - time.monotonic()
        poll = select.poll()  # not select(): a busy server's descriptors can be numbered past 1024
        poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        if left <= 0 or not poll.poll(max(1, int(left * 1000))):
            raise _Timeout
        data = os.read(fd, 1 << 20)
        if not data:
            self.proc.wait()
            raise _Stopped(f"it stopped (exit code {self.proc.returncode})")
        self.buf += data

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _bytes(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """Idle workers of this process (a forked child starts its own)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.idle: list[_Worker] = []
        self.pid = os.getpid()
        self.failed: tuple[float, str] | None = None  # (time.monotonic(), how) of the last start that failed outright
        self.trying = False  # a caller is trying the first start after a remembered failure; the others wait

    def acquire(self) -> _Worker:
        trial = False
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's workers (and what they met) are the parent's
                self.idle, self.pid, self.failed, self.trying = [], os.getpid(), None, False
            while True:
                while self.idle:
                    w = self.idle.pop()
                    if w.alive():
                        return w
                if self.failed is None:
                    break
                ago = time.monotonic() - self.failed[0]
                if ago < RETRY_SECONDS:
                    raise _Remembered(self.failed[1], ago)
                if not self.trying:  # the period is over: this caller tries one start, the others wait for it
                    self.trying = trial = True
                    break
                self.lock.wait()
        try:
            w = _Worker()
        except (_Stopped, OSError) as e:  # failed outright (not launched, or exited before it was ready): remembered
            with self.lock:
                self.failed = (time.monotonic(), _how(e))
                self._tried(trial)
            raise
        except _Timeout:  # slow, not broken (a busy machine): not remembered, the next SVG tries a start again
            with self.lock:
                if trial:
                    self.failed = None
                self._tried(trial)
            raise
        except BaseException:  # interrupted: the next caller tries the start instead
            with self.lock:
                self._tried(trial)
            raise
        with self.lock:
            self.failed = None
            self._tried(trial)
        return w

    def _tried(self, trial: bool) -> None:
        """The trial start (if this was it) is over: wake the callers waiting for its outcome (lock held)."""
        if trial:
            self.trying = False
            self.lock.notify_all()

    def failure_left(self) -> float | None:
        """Seconds the last failed start is still remembered for (None when none is)."""
        with self.lock:
            if self.failed is None or self.pid != os.getpid():
                return None
            left = RETRY_SECONDS - (time.monotonic() - self.failed[0])
            return left if left > 0 else None

    def forget_failure(self) -> None:
        with self.lock:
            self.failed = None

    def release(self, w: _Worker) -> None:
        with self.lock:
            if self.pid == os.getpid() and len(self.idle) < MAX_IDLE and w.alive():
                self.idle.append(w)
                self.lock.notify_all()  # a caller waiting out another's start may take this one at once
                return
        w.kill()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = (self.idle if self.pid == os.getpid() else []), []
        for w in idle:
            w.kill()

    def after_fork_in_child(self) -> None:
        """In a forked child: a pool of its own, with a new lock.  The parent's lock may have been held by one of
        its threads at the fork (a rendering handing back its worker, a caller waiting out a start): that thread
        does not exist in the child, so the copied lock would stay held and the child's first SVG would wait
        forever.  The parent's idle workers are the parent's: the child closes its copies of their pipes."""
        idle = self.idle
        self.lock = threading.Condition()
        self.idle, self.pid, self.failed, self.trying = [], os.getpid(), None, False
        for w in idle:
            for f in (w.proc.stdin, w.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass


_POOL = _Pool()
atexit.register(_POOL.close)
os.register_at_fork(after_in_child=_POOL.after_fork_in_child)


def stop_idle_workers() -> None:
    """Stop this process's idle workers (they are stopped at exit anyway; the next SVG starts a new one)."""
    _POOL.close()


def start_failure_left() -> float | None:
    """Seconds a failed worker start is still remembered for in this process (None when none is): how long a
    client whose SVG failed with a remembered failure (:data:`REMEMBERED_MARK` in its message) should wait."""
    return _POOL.failure_left()


def forget_start_failure() -> None:
    """Forget a failed worker start (see :data:`RETRY_SECONDS`): the next SVG tries to start one at once."""
    _POOL.forget_failure()


def _how(e: BaseException) -> str:
    """Why a worker did not start, as the end of 'the SVG renderer process ...'."""
    if isinstance(e, _Timeout):
        return f"did not start within {START_SECONDS:g} s (a busy machine)"
    if isinstance(e, OSError):
        return f"could not be started ({e.strerror or e})"
    return f"could not be started: {e}"


def render_in_worker(
    text: bytes, what: object, width: int, max_pixels: int, url: str, budget: float
) -> bytes:
    """PNG bytes of checked SVG ``text``, rendered in a worker process within ``budget`` seconds.

    Raises :class:`DataError` naming ``what`` when the output would exceed ``max_pixels`` or the document is
    corrupt; its subclasses :class:`RenderTimeout` when the budget runs out (the worker is killed) and
    :class:`RendererUnavailable` when no worker can be started (the file was not read)."""
    try:
        w = _POOL.acquire()
    except _Remembered as e:  # failed a moment ago: fail at once, not after another START_SECONDS
        raise RendererUnavailable(
            f"{what}: not rendered: the SVG renderer process {e.how}, {e.ago:.0f} s ago {REMEMBERED_MARK} "
            f"{RETRY_SECONDS:g} s, then the next SVG tries again); the file itself was not read (try again)"
        ) from None
    except (_Stopped, _Timeout, OSError) as e:
        # the file was not read: not a corrupt file (a busy machine can take this long to start a process)
        raise RendererUnavailable(f"{what}: not rendered: the SVG renderer process {_how(e)}; the file itself was "
                                  f"not read (try again)") from None
    try:
        answer, png = w.render(text, width, max_pixels, url, budget)
    except _Timeout:
        w.kill()
        raise RenderTimeout(
            f"{what}: SVG took more than {budget:g} s to render (the time budget, max_svg_seconds); not rendered"
        ) from None
    except (_Stopped, ValueError) as e:  # ValueError: a garbled answer
        w.kill()
        raise DataError(f"{what}: the SVG renderer process failed on this SVG ({e})") from None
    except BaseException:  # interrupted (KeyboardInterrupt): the worker may still be busy
        w.kill()
        raise
    _POOL.release(w)
    if answer.get("ok"):
        return png
    error = str(answer.get("error", "unknown error"))
    if answer.get("pixels"):  # the output surface would be over max_pixels: refused before drawing
        raise RenderRefused.over(what, error, "max_pixels")
    raise DataError(f"{what}: corrupt SVG ({error})")

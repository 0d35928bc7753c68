"""Known lines of Ray's C++ core dropped from this process' stderr; everything else passes through.

Ray's core worker (C++, in this process) writes its ERROR lines straight to file descriptor 2, and one of them
comes in every normal Ray Data run: ``core_worker.cc:... E ... Actor with class name: 'MapWorker(...)' ... has
constructor arguments in the object store and max_restarts > 0 ...``, once per actor pool (Ray Data always hands
its actors their code through the object store and lets them restart, ray#53727; nothing an anybind user can
or need do).  Ray has no switch for that line alone: ``RAY_BACKEND_LOG_LEVEL`` would hide every error of Ray's
core, ``max_restarts=0`` the restart of a killed actor.

:func:`native_stderr_without` points descriptor 2 at a pipe read by a small filter process that writes every
line to the real stderr except those containing one of the given texts.  Python's own ``sys.stderr`` (progress
bars, the CLI's messages, warnings) keeps writing to the real stderr, so a terminal stays a terminal for them.
The filter is a separate process, so a crash of this one (a Ray ``FATAL`` and its abort) still reaches the user:
the filter reads until the last writer is gone.  Anything but a whole known line passes unchanged, partial lines
included (after at most 0.2 s).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Ray's line that is no business of an anybind user (see the module docstring)
RAY_ACTOR_RESTART_NOTE = "has constructor arguments in the object store and max_restarts > 0"

# The filter process: no imports beyond os/select, no site (starts in ~20 ms).  A held partial line is one that
# may still become a known line (a log line starts with "["); anything else is forwarded as it arrives.
_FILTER = r"""
import os, select, sys
needles = [a.encode() for a in sys.argv[1:]]
def out(b):
    while b:
        b = b[os.write(2, b):]
buf = b""
while True:
    if buf and not select.select([0], [], [], 0.2)[0]:
        out(buf); buf = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    out(b"".join(x + b"\n" for x in lines if not any(n in x for n in needles)))
    if buf and not buf.startswith(b"["):
        out(buf); buf = b""
out(buf)
"""


def _fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def native_stderr_without(*texts: str) -> Iterator[None]:
    """Inside: lines written to descriptor 2 that contain any of ``texts`` are dropped, the rest pass through.

    Python's ``sys.stderr``, when it writes to descriptor 2, is pointed at the real stderr for the duration (same
    encoding, line buffering, terminal or not).  Where there is no ``os.pipe``/``dup2`` (Windows) or the filter
    cannot start, nothing changes.
    """
    if os.name != "posix" or not texts:
        yield
        return
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = os.dup(2)
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _FILTER, *texts], stdin=r,
                                stdout=subprocess.DEVNULL, stderr=saved, close_fds=True)
    except OSError as e:  # no filter: the lines stay, the run goes on
        log.debug("stderr filter not started (%s): Ray's own lines stay", e)
        for fd in (r, w, saved):
            os.close(fd)
        yield
        return
    os.close(r)
    os.set_inheritable(w, False)
    os.dup2(w, 2)  # descriptor 2 itself stays inheritable: children started inside write through the filter too
    os.close(w)
    py_err = sys.stderr
    swapped = _fd(py_err) == 2
    try:
        if swapped:
            sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(saved), "w"), encoding=py_err.encoding,
                                          errors=py_err.errors, line_buffering=getattr(py_err, "line_buffering", True),
                                          write_through=True)
        yield
    finally:
        if swapped:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
                sys.stderr.close()
            sys.stderr = py_err
        with contextlib.suppress(Exception):
            py_err.flush()
        os.dup2(saved, 2)  # the pipe's last write end here closes: the filter drains it and ends
        os.close(saved)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child started inside still holds the pipe: it keeps forwarding
            log.debug("stderr filter still has a writer (a process started under it); left running")

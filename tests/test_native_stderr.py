"""Ray's known core_worker line is dropped from stderr; every other line, a crash's included, reaches the user.

Each case runs in a fresh interpreter: the filter rewires file descriptor 2, which pytest's capture owns here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.scale.native_stderr import _FILTER, RAY_ACTOR_RESTART_NOTE
from pty_helpers import on_a_terminal

SRC = str(Path(__file__).resolve().parents[1] / "src")
RAY_LINE = (b"[2026-12-05 09:10:11,123 E 4242 4243] core_worker.cc:2741: Actor with class name: "
            b"'MapWorker(MapBatches(_EncodeActor))' and ID: 'ab12' " + RAY_ACTOR_RESTART_NOTE.encode()
            + b". If the arguments in the object store go out of scope or are lost, the actor restart will fail.\n")

SCRIPT = r"""
import os, sys
from anybind.scale.native_stderr import native_stderr_without, RAY_ACTOR_RESTART_NOTE
RAY_LINE = %r
os.write(2, b"before\n")
with native_stderr_without(RAY_ACTOR_RESTART_NOTE):
    os.write(2, RAY_LINE)
    os.write(2, b"[2026-12-05 09:10:12,000 E 4242 4243] core_worker.cc:99: a real error of Ray's\n")
    os.write(2, b"[2026-12-05 09:10:13,000 W 1 2] split ")
    os.write(2, b"across writes\n")
    print("python:", sys.stderr.isatty(), file=sys.stderr, flush=True)
    if sys.argv[1] == "abort":
        os.write(2, b"[2026-12-05 09:10:14,000 F 4242 4243] core_worker.cc:1: Check failed: dying\n")
        os.abort()
    os.write(2, b"\rprogress 50%%")
os.write(2, b"after\n")
""" % RAY_LINE


def _run(mode: str, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], stderr=stderr, stdout=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=60)


def test_the_known_ray_line_is_dropped_and_every_other_line_kept():
    res = _run("ok")
    err = res.stderr
    assert res.returncode == 0, err
    assert RAY_ACTOR_RESTART_NOTE.encode() not in err
    assert b"a real error of Ray's\n" in err and b"split across writes\n" in err
    assert b"python: False\n" in err and b"\rprogress 50%" in err  # a partial line passes, unchanged
    assert err.startswith(b"before\n") and err.endswith(b"after\n")  # the real stderr is back after


def test_a_crash_inside_still_reaches_the_user():
    res = _run("abort")
    assert res.returncode != 0
    assert b"Check failed: dying" in res.stderr and b"a real error of Ray's" in res.stderr
    assert RAY_ACTOR_RESTART_NOTE.encode() not in res.stderr


def test_a_terminal_stays_a_terminal_for_pythons_stderr():
    """Progress bars decide on isatty(): inside the filter, sys.stderr still writes to the terminal."""
    out, _, code = on_a_terminal(SCRIPT, "ok", stdout=subprocess.DEVNULL)
    assert code == 0
    out = out.replace(b"\r\n", b"\n")
    assert b"python: True" in out and b"a real error of Ray's" in out
    assert RAY_ACTOR_RESTART_NOTE.encode() not in out


lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(lines, st.booleans()), max_size=8), st.integers(1, 64), st.binary(max_size=10))
def test_the_filter_removes_exactly_the_known_lines_however_the_bytes_arrive(rows, chunk, tail):
    text = [b"[x E] " + b + b" " + RAY_ACTOR_RESTART_NOTE.encode() if known else b for b, known in rows]
    data = b"".join(t + b"\n" for t in text) + tail.replace(b"\n", b"")
    proc = subprocess.Popen([sys.executable, "-S", "-c", _FILTER, RAY_ACTOR_RESTART_NOTE], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    for i in range(0, len(data), chunk):  # in pieces, a line split anywhere
        proc.stdin.write(data[i : i + chunk])
        proc.stdin.flush()
        time.sleep(0.001)
    proc.stdin.close()
    out = proc.stderr.read()
    assert proc.wait(timeout=10) == 0
    kept = b"".join(t + b"\n" for t, (_, known) in zip(text, rows) if not known)
    assert out == kept + tail.replace(b"\n", b"")

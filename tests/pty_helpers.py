"""Run a Python script of the tests with its stderr on a real pseudo-terminal (what progress bars and the native
stderr filter decide on), reading everything the terminal received."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def on_a_terminal(script: str, *args: str, stdout=subprocess.PIPE) -> tuple[bytes, bytes | None, int]:
    """``python -c script *args`` with anybind's source on the path and stderr on a terminal: (what the terminal
    received, stdout's bytes when it is a pipe else None, the exit code)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=slave, stdout=stdout,
                            env={**os.environ, "PYTHONPATH": SRC})
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the last writer is gone
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = None
    if proc.stdout is not None:
        out = proc.stdout.read()
        proc.stdout.close()
    return err, out, proc.wait(timeout=60)

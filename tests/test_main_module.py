"""``python -m anybind`` runs the command line, as the ``anybind`` script does (a helper tripped on its absence)."""

import os
import subprocess
import sys
from pathlib import Path

import anybind


def test_python_m_anybind_runs_the_command_line():
    src = str(Path(anybind.__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run([sys.executable, "-m", "anybind", "--help"], env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    # the group's help: its usage line names the program, and it lists the commands
    assert "Usage:" in r.stdout and " fit " in r.stdout and " audit " in r.stdout, r.stdout
    bad = subprocess.run([sys.executable, "-m", "anybind", "no-such-command"], env=env, capture_output=True,
                         text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "No such command" in bad.stderr, bad.stderr

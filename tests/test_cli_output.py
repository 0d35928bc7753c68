"""What the CLI prints on a machine with no terminal: errors and warnings one unwrapped line per problem.

These run the real ``anybind`` entry point in a subprocess with a bare environment (no COLUMNS, no LINES, no
TERM), as cron, Docker and CI do; under a terminal or with COLUMNS set Rich would size itself differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _bare_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "PYTHONPATH", "ANYBIND_CACHE",
                                                       "ANYBIND_MEDIA_CHECKS", "HF_HUB_OFFLINE",
                                                       "TRANSFORMERS_OFFLINE")}
    keep["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), keep.get("PYTHONPATH")) if p)
    return keep


def _anybind(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anybind.cli", *args], cwd=cwd, env=_bare_env(),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture
def deep(tmp_path) -> Path:
    """A folder whose path alone is wider than 80 columns."""
    d = tmp_path / ("a-long-folder-name-that-a-user-really-has-" * 3) / "and-another-level"
    d.mkdir(parents=True)
    assert len(str(d)) > 100
    return d


def test_error_is_one_line_without_a_terminal(deep):
    missing = deep / "nospace"
    r = _anybind("eval", str(missing), str(deep / "m.jsonl"), cwd=deep)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and str(missing) in lines[0] and "not a saved space" in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_record_warnings_keep_paths_and_ids_whole(deep):
    man = deep / "manifest.jsonl"
    rid = "record-with-an-id-long-enough-to-be-split-by-any-wrapping-" + "x" * 40
    image = deep / "no-such-image-with-a-long-file-name.png"
    man.write_text(
        json.dumps({"id": rid, "split": "train", "text": "a dog", "image": str(image)}) + "\n"
        + json.dumps({"id": "ok", "split": "train", "text": "a cat"}) + "\n"
    )
    r = _anybind("validate", str(man), "--modalities", "image,text", cwd=deep)
    out = r.stdout + r.stderr
    # the record id and the missing file's full path stand whole on one line
    assert any(rid in line and str(image) in line for line in out.splitlines()), out


def test_library_warnings_reach_stderr_as_single_lines(deep):
    """``Space.fit``'s report of skipped records goes through logging; the CLI shows it unwrapped."""
    man = deep / "manifest.jsonl"
    rid = "bad-record-" + "y" * 90
    recs = [{"id": f"r{i}", "split": "val" if i < 4 else "train", "a": f"k{i}", "b": f"k{i}"} for i in range(12)]
    recs.append({"id": rid, "split": "nonsense", "a": "k0", "b": "k0"})
    man.write_text("".join(json.dumps(r) + "\n" for r in recs))
    # two vectors: encoders keyed by the record's value: a fit that needs no model at all
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.savez(deep / f"{name}.npz", ids=np.array([f"k{i}" for i in range(12)]),
                 vectors=rng.normal(size=(12, 8)).astype(np.float32))
    r = _anybind("fit", str(man), "--modalities", "a,b", "-e", f"a=vectors:{deep / 'a.npz'}",
                 "-e", f"b=vectors:{deep / 'b.npz'}", "--epochs", "2", "--dim", "4", "--out", str(deep / "s"),
                 cwd=deep)
    assert "Traceback" not in r.stderr, r.stderr
    warned = [line for line in r.stderr.splitlines() if rid in line]
    assert warned, r.stdout + r.stderr


def test_a_usage_error_is_one_unwrapped_line_without_a_terminal(deep):
    """A bad option value (Click/Typer's own checks, typer.BadParameter) wider than 80 columns: before, Rich boxed
    it in an "Error" panel and split the value across lines; now one ``error:`` line holds it whole, after one
    usage line."""
    value = "no-equals-" + "x" * 90 + ".wav"
    r = _anybind("search", str(deep / "ix"), "--query", value, cwd=deep)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 2 and lines[0].startswith("Usage: ") and "search --help" in lines[0], r.stderr
    assert lines[1].startswith("error: ") and value in lines[1] and "--query" in lines[1], r.stderr
    assert not set("│╭╮╰╯") & set(r.stderr), r.stderr


def _leaf_commands():
    import typer.main

    from anybind.cli import app

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])
        if not getattr(cmd, "commands", None):
            yield path

    return list(walk(typer.main.get_command(app), []))


def test_every_command_reports_usage_errors_on_one_line():
    """An unknown option and a missing required one, for every command, at a terminal 40 columns wide: one
    ``error:`` line naming the whole option (Click's message), one usage line, no box."""
    from typer.testing import CliRunner

    from anybind.cli import app

    bad = "--no-such-option-" + "z" * 80
    commands = _leaf_commands()
    assert len(commands) > 20 and ["search"] in commands
    for path in commands:
        r = CliRunner().invoke(app, [*path, bad], env={"COLUMNS": "40"})
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert r.exit_code == 2 and len(lines) == 2, (path, r.output)
        assert lines[0].startswith("Usage: ") and lines[1] == f"error: No such option: {bad}", (path, r.output)
    r = CliRunner().invoke(app, ["fit", "m.jsonl"], env={"COLUMNS": "40"})
    assert r.exit_code == 2 and r.output.splitlines()[-1] == "error: Missing option '--out' / '-o'.", r.output

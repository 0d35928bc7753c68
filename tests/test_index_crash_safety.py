"""A killed insert leaves a readable index holding whole chunks only, and a rerun finishes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from anybind.index import Index

from index_helpers import make_space, write_corpus

TESTS = Path(__file__).parent

KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from anybind.index import Index
from anybind.space import Space
space = Space.load({space!r})
Index.build(space, {manifest!r}, {index!r}, cache={cache!r}, chunk_size=4)
"""


def test_a_killed_insert_leaves_a_readable_index_and_a_rerun_finishes(tmp_path, monkeypatch):
    import lancedb

    space = make_space(text="slow_text")
    space.save(tmp_path / "space")
    m = write_corpus(tmp_path, n=60, skip_images=True)
    script = KILL_SCRIPT.format(
        tests=str(TESTS),
        space=str(tmp_path / "space"),
        manifest=str(m),
        index=str(tmp_path / "ix"),
        cache=str(tmp_path / "c"),
    )
    env = {**os.environ, "ANYBIND_TEST_SLEEP": "0.15"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        rows = 0
        while time.time() < deadline and proc.poll() is None:
            try:
                rows = lancedb.connect(str(tmp_path / "ix")).open_table("items").count_rows()
            except Exception:
                rows = 0
            if rows >= 8:  # two chunks committed: kill it in the middle of the rest
                time.sleep(0.1)
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"the insert finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    monkeypatch.setenv("ANYBIND_TEST_SLEEP", "0")  # the rerun here need not be slow
    index = Index.open(tmp_path / "ix", space)
    n = len(index)
    assert 8 <= n < 60 and n % 4 == 0  # whole chunks only: nothing half-written is visible
    hits = index.search(text="stamp number 0", k=3)
    assert hits[0].id == "r0"
    assert len(index.snapshot().vectors) == n
    stats = index.add(m, cache=tmp_path / "c", chunk_size=4)
    assert stats.unchanged == n and stats.total_embedded == 60 - n and len(index) == 60

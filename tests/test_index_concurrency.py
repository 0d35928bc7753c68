"""Concurrent writers on one index (issue 14 item 3): the writer lock, creators racing on a new index,
``Index.repair`` / ``anybind index --repair``; and a failed build leaves no empty index (item 15)."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import anybind
import anybind.index.write as write_mod
import lancedb  # noqa: F401  (loaded here, not inside the timed races)
from anybind.errors import OutputError, DataError, SpaceError
from anybind.index import Index, IndexError_
from anybind.index.lock import LOCK_FILE, writer_lock
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

TESTS = Path(__file__).parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(Path(anybind.__file__).parents[1]), str(TESTS),
                                  os.environ.get("PYTHONPATH", "")]),
}


def text_space(seed=0) -> Space:
    torch.manual_seed(seed)
    proj = Projector(ProjectorConfig(in_dim=8, out_dim=8, kind="linear", dropout=0.0, input_dropout=0.0))
    return Space({"text": "callable:helper_encoders:hashed_text"}, {"text": proj})


def write_manifest(path: Path, ids) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"caption {i}"}) + "\n" for i in ids))
    return path


def ids_of(index: Index) -> list[str]:
    index.refresh()
    return index.table.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist()


def race(script: str, here, folder: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, object]:
    """Run ``script`` in another process and ``here()`` in this one at the same moment: the script prints
    READY and waits for the file ``go``; this process makes it, then runs ``here()``."""
    go = folder / "go"
    proc = subprocess.Popen([sys.executable, "-c", script.replace("GO_FILE", repr(str(go)))], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()[-3000:]
        go.touch()
        mine = here()
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), mine
    finally:
        if proc.poll() is None:
            proc.kill()


BARRIER = """
import os, sys, time
print("READY", flush=True)
while not os.path.exists(GO_FILE):
    time.sleep(0.002)
"""


# ----------------------------------------------------------------------------- real concurrent processes
ADD_SCRIPT = """
import numpy as np
from anybind.index import Index
index = Index.open({path!r})
ids = [f"r{{i}}" for i in range({lo}, {hi})]
X = np.random.default_rng({lo}).normal(size=(len(ids), 4))
""" + BARRIER + """
stats = index.add_vectors(ids, X, "vec", chunk_size=4)
print(stats.added, stats.updated)
"""


def test_two_processes_adding_overlapping_ids_at_once_store_each_row_once(tmp_path):
    path = tmp_path / "ix"
    Index.create(path, dim=4, identity="raw-test")
    here = Index.open(path)
    X = np.random.default_rng(10).normal(size=(24, 4))

    def add_here():
        return here.add_vectors([f"r{i}" for i in range(8, 32)], X, "vec", chunk_size=4)

    other, mine = race(ADD_SCRIPT.format(path=str(path), lo=0, hi=24), add_here, tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    ids = ids_of(Index.open(path))
    assert len(ids) == len(set(ids)) == 32, f"{len(ids)} rows for {len(set(ids))} ids"
    assert int(other.stdout.split()[0]) + mine.added == 32  # each row counted as added by one of them
    assert Index.open(path).repair() == 0


BUILD_SCRIPT = """
import lancedb  # imported before the start line: the two builds then really start together
from anybind.index import Index
from anybind.space import Space
space = Space.load({space!r})
""" + BARRIER + """
index = Index.build(space, {manifest!r}, {path!r}, chunk_size=4)
print(len(index))
"""


def test_two_builds_creating_the_same_new_index_at_once_both_succeed_into_one_index(tmp_path):
    space = text_space()
    space.save(tmp_path / "space")
    m1 = write_manifest(tmp_path / "a.jsonl", range(0, 20))
    m2 = write_manifest(tmp_path / "b.jsonl", range(10, 30))
    path = tmp_path / "ix"
    other, _ = race(BUILD_SCRIPT.format(space=str(tmp_path / "space"), manifest=str(m1), path=str(path)),
                       lambda: Index.build(space, m2, path, chunk_size=4), tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    index = Index.open(path, space)
    ids = ids_of(index)
    assert len(ids) == len(set(ids)) == 30
    assert index.search(text="caption 7", k=1)[0].id == "r7"
    assert sorted(p.name for p in path.iterdir()) == [LOCK_FILE, "index.json", "items.lance", "space"]


# ----------------------------------------------------------------------------- interleavings, in one process
@settings(max_examples=20, deadline=None)
@given(
    a_ids=st.sets(st.integers(0, 9), min_size=1, max_size=8),
    b_ids=st.sets(st.integers(0, 9), min_size=1, max_size=8),
    a_chunk=st.integers(1, 4),
    b_chunk=st.integers(1, 4),
    at=st.integers(0, 8),
)
def test_another_writer_committing_between_a_writers_read_and_its_commits_never_duplicates(
    tmp_path_factory, a_ids, b_ids, a_chunk, b_chunk, at
):
    """Writer B adds its rows at any point after writer A read which rows exist (A's view is stale):
    the table keeps one row per id, each holding the vector of the last commit that wrote it."""
    path = tmp_path_factory.mktemp("ix") / "ix"
    Index.create(path, dim=4, identity="raw-test")
    a, b = Index.open(path), Index.open(path)
    a_ids, b_ids = sorted(f"r{i}" for i in a_ids), sorted(f"r{i}" for i in b_ids)
    XA = np.random.default_rng(1).normal(size=(len(a_ids), 4))
    XB = np.random.default_rng(2).normal(size=(len(b_ids), 4))
    at = min(at, (len(a_ids) - 1) // a_chunk)  # B commits just before A's chunk number `at`
    real, count, ran = write_mod.rows_table, [0], []

    def rows_table(*args, **kw):  # A calls it once per chunk, after A's read, before that chunk's commit
        if not ran and count[0] == at:
            ran.append(True)
            b.add_vectors(b_ids, XB, "vec", chunk_size=b_chunk)
        count[0] += 1
        return real(*args, **kw)

    with mock.patch.object(write_mod, "rows_table", rows_table):
        a.add_vectors(a_ids, XA, "vec", chunk_size=a_chunk)
    assert ran, "B never ran"
    expect = {i: x for i, x in zip(b_ids, XB)}
    expect.update({i: x for k, (i, x) in enumerate(zip(a_ids, XA)) if k // a_chunk >= at})
    expect.update({i: x for k, (i, x) in enumerate(zip(a_ids, XA)) if k // a_chunk < at and i not in b_ids})
    fresh = Index.open(path)
    snap = fresh.snapshot()
    ids = snap.meta.column("id").to_pylist()
    assert sorted(ids) == sorted(expect), f"{len(ids)} rows for {len(expect)} ids"
    for i, v in zip(ids, snap.vectors):
        want = expect[i] / np.linalg.norm(expect[i])
        assert np.allclose(v, want, atol=1e-5), i


# ----------------------------------------------------------------------------- the lock itself
HOLD_SCRIPT = """
import time
from anybind.index.lock import writer_lock
with writer_lock({path!r}):
    print("HELD", flush=True)
    time.sleep(120)
"""


def test_readers_never_wait_for_the_writer_lock_and_a_dead_holder_releases_it(tmp_path):
    path = tmp_path / "ix"
    index = Index.create(path, dim=4, identity="raw-test")
    index.add_vectors(["a", "b"], np.eye(2, 4), "vec")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT.format(path=str(path))], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD", holder.stderr.read()[-2000:]
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # it is really held
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        t0 = time.perf_counter()
        reader = Index.open(path)
        assert len(reader) == 2 and reader.search_vectors(np.eye(1, 4), k=1)[0][0].id == "a"
        assert reader.refresh() in (True, False) and reader.counts() == {"vec": 2}
        assert time.perf_counter() - t0 < 10  # readers do not take the lock

        done = threading.Event()
        writer = threading.Thread(target=lambda: (index.add_vectors(["c"], np.eye(1, 4), "vec"), done.set()))
        writer.start()
        assert not done.wait(1.0), "a writer went ahead while another process held the lock"
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel releases the lock
        holder.wait(30)
        assert done.wait(30), "the writer never got the lock of a dead holder"
        writer.join(30)
        assert sorted(ids_of(index)) == ["a", "b", "c"]
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_writer_waiting_while_the_folder_is_removed_locks_the_new_one(tmp_path):
    """The holder removes the index (a failed first build): the waiter retakes the lock on the fresh lock
    file, never on the removed one."""
    from anybind.index.lock import discard_parts

    path = tmp_path / "ix"
    got = []
    with writer_lock(path, create=True):
        waiter = threading.Thread(target=lambda: got.append(_lock_and_stat(path)))
        waiter.start()
        time.sleep(0.3)
        assert not got
        discard_parts(path, True, ())
        assert not path.exists()
    waiter.join(10)
    ino, current = got[0]
    assert current and (path / LOCK_FILE).stat().st_ino == ino


def test_a_writer_waiting_while_the_index_is_replaced_stops_instead_of_writing_into_the_new_one(tmp_path):
    path = tmp_path / "ix"
    Index.create(path, dim=4, identity="raw-a").add_vectors(["x"], np.eye(1, 4), "vec")
    late, errors = Index.open(path), []

    def write():
        try:
            late.add_vectors(["y"], np.eye(1, 4), "vec")
        except IndexError_ as e:
            errors.append(str(e))

    with writer_lock(path):
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive()  # waiting for the lock
        Index.create(path, dim=4, identity="raw-b", overwrite=True)  # replaces the folder, lock and all
    writer.join(30)
    assert errors and "was replaced while this process was writing" in errors[0]
    assert len(Index.open(path)) == 0 and Index.open(path).identity == "raw-b"


def _lock_and_stat(path):
    with writer_lock(path, create=True) as lk:
        st = os.fstat(lk.fd)
        return st.st_ino, os.stat(path / LOCK_FILE).st_ino == st.st_ino


# ----------------------------------------------------------------------------- creators
def test_a_second_creator_opens_the_index_of_the_same_space_and_refuses_another_one(tmp_path):
    path = tmp_path / "ix"
    first = Index.create(path, dim=4, identity="raw-a")
    first.add_vectors(["x"], np.eye(1, 4), "vec")
    again = Index.create(path, dim=4, identity="raw-a", exist_ok=True)
    assert len(again) == 1  # opened, not wiped
    with pytest.raises(SpaceError) as e:
        Index.create(path, dim=4, identity="raw-b", exist_ok=True)
    assert "raw-a" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OutputError, match="already holds an index"):  # never replaced without overwrite
        Index.create(path, dim=4, identity="raw-a")

    spath = tmp_path / "sx"
    Index.build(text_space(0), write_manifest(tmp_path / "m.jsonl", range(3)), spath)
    with pytest.raises(SpaceError, match="identity") as e:
        Index.create(spath, space=text_space(1), exist_ok=True)
    assert "\n" not in str(e.value)
    assert len(Index.open(spath)) == 3


# ----------------------------------------------------------------------------- repair
def damage(index: Index, ids: list[str], copies: int = 2) -> None:
    """What concurrent runs of the old code left: the same rows appended again through the raw table;
    the last copy's source says "newest"."""
    where = f"id IN ({', '.join(repr(i) for i in ids)})"
    rows = index.table.search().where(where).limit(None).to_arrow()
    rows = rows.select([f.name for f in index.table.schema])
    for c in range(copies):
        if c == copies - 1:
            rows = rows.set_column(rows.schema.get_field_index("source"), "source",
                                   pa.array(["newest"] * len(rows), pa.string()))
        index.table.add(rows)


def test_repair_removes_duplicate_rows_keeping_the_newest(tmp_path):
    index = Index.create(tmp_path / "ix", dim=4, identity="raw-test")
    index.add_vectors([f"r{i}" for i in range(10)], np.random.default_rng(0).normal(size=(10, 4)), "vec")
    damage(index, ["r0", "r1", "r2", "r3"])
    assert len(index) == 18
    assert index.repair() == 8
    assert len(index) == 10 and sorted(ids_of(index)) == sorted(f"r{i}" for i in range(10))
    t = index.table.search().where("source = 'newest'").select(["id"]).limit(None).to_arrow()
    assert sorted(t.column("id").to_pylist()) == ["r0", "r1", "r2", "r3"]
    assert index.repair() == 0
    snap = index.snapshot()
    assert len(snap.vectors) == 10 and pc.count_distinct(snap.meta.column("id")).as_py() == 10


def test_cli_index_repair(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    space = text_space()
    space.save(tmp_path / "space")
    m = write_manifest(tmp_path / "m.jsonl", range(8))
    index = Index.build(space, m, tmp_path / "ix")
    damage(index, ["r1", "r2", "r5"], copies=1)
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(tmp_path / "space"), str(m), "--out", str(tmp_path / "ix")])
    assert res.exit_code == 0 and "+0 rows" in res.output  # a plain rerun leaves the damage (no repair)
    assert len(Index.open(tmp_path / "ix")) == 11
    res = runner.invoke(app, ["index", str(tmp_path / "space"), "--out", str(tmp_path / "ix"), "--repair"])
    assert res.exit_code == 0, res.output
    assert "removed 3 duplicate rows (8 rows left)" in " ".join(res.output.split())
    assert len(Index.open(tmp_path / "ix")) == 8
    m2 = write_manifest(tmp_path / "m2.jsonl", range(10))
    res = runner.invoke(app, ["index", str(tmp_path / "space"), str(m2), "--out", str(tmp_path / "ix"),
                              "--repair"])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "removed 0 duplicate rows" in out and "+2 rows" in out, out
    res = runner.invoke(app, ["index", str(tmp_path / "space"), "--out", str(tmp_path / "ix")])
    assert res.exit_code == 2 and "MANIFEST is missing" in " ".join(res.output.split())
    res = runner.invoke(app, ["index", str(tmp_path / "space"), "--out", str(tmp_path / "nope"), "--repair"])
    assert res.exit_code == 2 and "not an anybind index" in " ".join(res.output.split())


# ----------------------------------------------------------------------------- item 15: failed runs
def test_a_failed_first_build_leaves_no_index_behind(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from anybind.cli import app

    space = text_space()
    space.save(tmp_path / "space")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": f"r{i}", "text": ""}) + "\n" for i in range(3)))  # every one bad
    res = CliRunner().invoke(app, ["index", str(tmp_path / "space"), str(bad), "--out", str(tmp_path / "ix")])
    assert res.exit_code == 2 and "no record to index" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "ix").exists()

    good = write_manifest(tmp_path / "m.jsonl", range(6))

    def boom(self, *a, **kw):
        raise DataError("the encoder failed on the first batch")

    with monkeypatch.context() as mp:
        mp.setattr(Space, "embed", boom)
        with pytest.raises(DataError, match="first batch"):
            Index.build(space, good, tmp_path / "ix")
        assert not (tmp_path / "ix").exists()
        (tmp_path / "mine").mkdir()  # a folder that was there before: kept, emptied of what the run made
        with pytest.raises(DataError, match="first batch"):
            Index.build(space, good, tmp_path / "mine")
        assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []

    index = Index.build(space, good, tmp_path / "ix")  # a pre-existing index is never removed
    grown = write_manifest(tmp_path / "m2.jsonl", range(9))
    with monkeypatch.context() as mp:
        mp.setattr(Space, "embed", boom)
        with pytest.raises(DataError, match="first batch"):
            Index.build(space, grown, tmp_path / "ix")
    Index.build(space, bad, tmp_path / "ix")  # nothing usable: nothing added, nothing removed
    assert len(Index.open(tmp_path / "ix")) == len(index) == 6

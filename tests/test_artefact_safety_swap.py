"""Issue 14, item 2: replacing an artefact is a recoverable atomic swap: a kill at any step leaves the complete old
or new version findable, recovered by the next write or open; a leftover that may be the only copy is never removed."""

import os
import shutil
import signal
import traceback
from pathlib import Path

import numpy as np
import pytest

from anybind import io as aio
from anybind.errors import OutputError
from anybind.index import Index
from anybind.space import Space

from artefact_helpers import leftovers, text_space


def _copy_into(src: Path, marker: str, with_marker: bool = True):
    """A write function copying a saved artefact, its marker last (as every writer does)."""
    def write(tmp: Path) -> None:
        for p in sorted(src.iterdir()):
            if p.name != marker:
                (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
        if with_marker:
            shutil.copy(src / marker, tmp / marker)  # a fresh mtime, as a real writer's
    return write


KILL_AT = ["mid-write", "before-swap", "rename-old", "rename-new", "remove-old", "mid-remove"]


def _child_swap(path: Path, src: Path, kind: str, at: str, ready_w: int | None) -> None:
    """In a forked child: swap ``src`` in for ``path``, dying (os._exit, or SIGKILL from the parent when
    ``ready_w`` is a pipe) at step ``at``.  Never returns."""
    try:
        def die():
            if ready_w is not None:
                os.write(ready_w, b"x")
                signal.pause()  # the parent SIGKILLs us here
            os._exit(137)

        real_rename, real_rmtree, renames = os.rename, shutil.rmtree, []

        def rename(a, b):
            renames.append(a)
            if (at, len(renames)) in (("rename-old", 1), ("rename-new", 2)):
                die()
            real_rename(a, b)

        def rmtree(p, *a, **k):
            if at == "mid-remove" and str(p).endswith(".old"):
                die()
            real_rmtree(p, *a, **k)

        os.rename, shutil.rmtree = rename, rmtree
        marker = aio.KINDS[kind].marker
        write = _copy_into(src, marker)
        if at == "mid-write":  # everything but the marker, then half of it
            def write(tmp, whole=_copy_into(src, marker, with_marker=False)):
                whole(tmp)
                (tmp / marker).write_text((src / marker).read_text()[:20])
                die()
        if at == "before-swap":
            aio._fsync_tree = lambda d: die()
        if at == "remove-old":
            aio._remove = lambda p, k: die()
        aio.atomic_write_dir(path, write, kind=kind, overwrite=True)
        os._exit(0)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(3)


def _run_killed(path: Path, src: Path, kind: str, at: str, sigkill: bool) -> None:
    r, w = os.pipe() if sigkill else (None, None)
    pid = os.fork()
    if pid == 0:
        _child_swap(path, src, kind, at, w)
    if sigkill:
        assert os.read(r, 1) == b"x"
        # while the writer is alive mid-swap, a reader leaves its leftovers alone
        before = leftovers(path.parent)
        aio.recover_dir(path, kind, wait_s=0.05)
        assert leftovers(path.parent) == before
        os.kill(pid, signal.SIGKILL)
        os.close(r)
        os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 137, status


@pytest.mark.parametrize("sigkill", [False, True], ids=["exit", "sigkill"])
@pytest.mark.parametrize("at", KILL_AT)
def test_a_space_swap_killed_at_any_step_leaves_old_or_new_and_is_recovered(tmp_path, at, sigkill):
    old, new = text_space(seed=0), text_space(seed=1)
    old.save(tmp_path / "sp")
    new.save(tmp_path / "staging" / "new")
    _run_killed(tmp_path / "sp", tmp_path / "staging" / "new", "space", at, sigkill)
    if at == "rename-new":  # the one state with nothing at the path: what a killed swap used to leave
        assert not (tmp_path / "sp").exists()
    loaded = Space.load(tmp_path / "sp")  # a reader recovers
    want = new if at in ("rename-new", "remove-old", "mid-remove") else old
    assert loaded.identity() == want.identity()
    assert leftovers(tmp_path) == []
    # and the next write works as usual
    text_space(seed=2).save(tmp_path / "sp")
    assert Space.load(tmp_path / "sp").identity() == text_space(seed=2).identity()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("at", ["rename-new", "mid-write"])
def test_a_killed_index_swap_is_recovered_by_the_next_write_or_open(tmp_path, at):
    space = text_space()
    Index.create(tmp_path / "ix", space=space).add_vectors(["a"], np.eye(8, dtype=np.float32)[:1], modality="text")
    Index.create(tmp_path / "staging" / "new", space=space)
    _run_killed(tmp_path / "ix", tmp_path / "staging" / "new", "index", at, sigkill=False)
    assert len(Index.open(tmp_path / "ix", space)) == (0 if at == "rename-new" else 1)
    assert leftovers(tmp_path) == []
    _run_killed(tmp_path / "ix", tmp_path / "staging" / "new", "index", "rename-new", sigkill=False)
    Index.create(tmp_path / "ix", space=space, overwrite=True)  # the next write settles it first
    assert len(Index.open(tmp_path / "ix")) == 0 and leftovers(tmp_path) == []


def test_a_failed_swap_in_process_puts_the_old_version_back(tmp_path, monkeypatch):
    text_space(seed=0).save(tmp_path / "sp")
    real, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        text_space(seed=1).save(tmp_path / "sp")
    monkeypatch.setattr(os, "rename", real)
    assert Space.load(tmp_path / "sp").identity() == text_space(seed=0).identity()
    assert leftovers(tmp_path) == []


def test_a_leftover_that_may_be_the_only_copy_is_never_removed(tmp_path):
    old, new = text_space(seed=0), text_space(seed=1)
    old.save(tmp_path / "sp")
    new.save(tmp_path / "staging" / "new")
    _run_killed(tmp_path / "sp", tmp_path / "staging" / "new", "space", "rename-new", sigkill=False)
    (tmp_path / "sp").mkdir()  # something else appeared at the path meanwhile: both versions are kept
    aio.recover_dir(tmp_path / "sp", "space")
    kept = [tmp_path / n for n in leftovers(tmp_path) if not n.endswith(".lock")]
    assert sorted(p.suffix for p in kept) == [".old", ".tmp"]
    assert sorted(Space.load(p).identity() for p in kept) == sorted([old.identity(), new.identity()])
    (tmp_path / "sp").rmdir()
    assert Space.load(tmp_path / "sp").identity() == new.identity() and leftovers(tmp_path) == []


def test_report_never_replaces_a_file_it_did_not_write(tmp_path):
    """A single-file output (the report) is checked like a folder one: an earlier report is replaced, anything
    else only with --overwrite (H12 found `report --out manifest.jsonl` silently replaced the manifest)."""
    from anybind.io import check_output_file
    from anybind.report import GENERATOR

    mark = GENERATOR.encode()
    victim = tmp_path / "manifest.jsonl"
    victim.write_text('{"id": "a"}\n')
    with pytest.raises(OutputError, match="not written by anybind"):
        check_output_file(victim, mark)
    assert victim.read_text() == '{"id": "a"}\n'
    assert check_output_file(victim, mark, overwrite=True) == victim.absolute()
    earlier = tmp_path / "report.html"
    earlier.write_text("<!doctype html><html><head><meta charset='utf-8'>" + GENERATOR + "</head></html>")
    assert check_output_file(earlier, mark) == earlier.absolute()
    with pytest.raises(OutputError, match="not a regular file"):
        check_output_file(tmp_path, mark, overwrite=True)
    (tmp_path / "link.html").symlink_to(earlier)
    with pytest.raises(OutputError, match="is a link"):
        check_output_file(tmp_path / "link.html", mark)
    assert check_output_file(tmp_path / "new.html", mark) == (tmp_path / "new.html").absolute()

"""Issue 14, items 1-2: no user data is ever lost to an output path, and replacing an artefact is a
recoverable atomic swap (a kill at any step leaves the complete old or new version findable)."""

import hashlib
import json
import os
import shutil
import signal
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import io as aio
from anybind.cli import app
from anybind.errors import OutputError
from anybind.index import Index
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2


def tiny_space(seed=0) -> Space:
    torch.manual_seed(seed)
    cfg = ProjectorConfig(in_dim=8, out_dim=8, kind="linear", dropout=0.0, input_dropout=0.0)
    return Space({"text": "callable:helper_encoders:hashed_text"}, {"text": Projector(cfg)})


def vectors_corpus(root: Path, n=40) -> tuple[Path, list[str]]:
    """Two vector 'modalities' (noisy views of one latent) and a manifest pairing them."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 4))
    ids = np.array([f"r{i}" for i in range(n)])
    enc = []
    for name, d in (("sa", 6), ("sb", 5)):
        np.savez(root / f"{name}.npz", ids=ids, vectors=z @ rng.normal(size=(4, d)))
        enc += ["-e", f"{name}=vectors:{root / f'{name}.npz'}"]
    with open(root / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": str(rid), "split": SPLITS[i % 10], "sa": True, "sb": True}) + "\n")
    return root / "m.jsonl", enc


def tree(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.count("error:") == 1, r.output
    flat = " ".join(r.output.split())
    for w in words:
        assert w in flat, (w, flat)


# ----------------------------------------------------------------------------- item 1: refuse bad outputs
@pytest.mark.parametrize("target", ["victim", "file", ".", "..", "data", "~"])
def test_cli_fit_refuses_a_foreign_output_before_any_work(tmp_path, monkeypatch, target):
    data = tmp_path / "data"
    data.mkdir()
    m, enc = vectors_corpus(data)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.txt").write_text("four years of work")
    monkeypatch.chdir(data if target in (".", "..") else tmp_path)
    out = {"victim": tmp_path / "victim", "file": m, ".": ".", "..": "..", "data": data, "~": "~"}[target]
    before = tree(tmp_path)
    r = cli("fit", m, *enc, "--out", out, "--cache", tmp_path / "cache", "--epochs", "2", "--dim", "4")
    assert_refused(r, str(out))
    assert tree(tmp_path) == before  # nothing deleted, nothing left beside it
    assert not (tmp_path / "cache").exists()  # refused before encoding a single item


def test_cli_fit_replaces_a_space_only_with_overwrite(tmp_path):
    m, enc = vectors_corpus(tmp_path)
    common = [*enc, "--cache", tmp_path / "c", "--epochs", "2", "--dim", "4", "--method", "procrustes"]
    r = cli("fit", m, "--out", tmp_path / "sp", *common)
    assert r.exit_code == 0, r.output
    first = tree(tmp_path / "sp")
    r = cli("fit", m, "--out", tmp_path / "sp", *common, "--seed", "1")
    assert_refused(r, "already holds a saved space", "--overwrite")
    assert tree(tmp_path / "sp") == first
    # a space with the user's notes inside: even --overwrite refuses (the notes would be lost)
    (tmp_path / "sp" / "notes.txt").write_text("mine")
    r = cli("fit", m, "--out", tmp_path / "sp", *common, "--overwrite")
    assert_refused(r, "notes.txt", "move them out")
    (tmp_path / "sp" / "notes.txt").unlink()
    r = cli("fit", m, "--out", tmp_path / "sp", *common, "--overwrite")
    assert r.exit_code == 0, r.output
    assert Space.load(tmp_path / "sp") and leftovers(tmp_path) == []
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert cli("fit", m, "--out", tmp_path / "empty", *common).exit_code == 0
    assert Space.load(tmp_path / "empty")


def test_cli_bind_and_fuse_refuse_a_foreign_output_before_training(tmp_path):
    m, enc = vectors_corpus(tmp_path)
    assert cli("fit", m, *enc, "--out", tmp_path / "sp", "--cache", tmp_path / "c", "--method", "procrustes",
               "--dim", "4").exit_code == 0
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.txt").write_text("x")
    before = tree(tmp_path / "victim")
    r = cli("bind", tmp_path / "sp", "--add", "sc=vectors:/nonexistent.npz", "--data", m,
            "--out", tmp_path / "victim", "--cache", tmp_path / "c2")
    assert_refused(r, "not a saved space", "thesis.txt")
    r = cli("fuse", "train", m, "--space", tmp_path / "sp", "--label", "cls", "--modalities", "sa,sb",
            "--out", tmp_path / "victim", "--cache", tmp_path / "c3")
    assert_refused(r, "not a fusion model", "thesis.txt")
    r = cli("fuse", "train", m, "--space", tmp_path / "sp", "--label", "cls", "--modalities", "sa,sb",
            "--out", tmp_path / "sp", "--cache", tmp_path / "c3", "--overwrite")
    assert_refused(r, "holds a saved space")  # a space is never replaced by a fusion model
    assert tree(tmp_path / "victim") == before and Space.load(tmp_path / "sp")
    assert not (tmp_path / "c2").exists() and not (tmp_path / "c3").exists()


def test_library_save_never_replaces_anything_but_its_own_kind(tmp_path):
    space = tiny_space()
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.txt").write_text("x")
    (tmp_path / "f").write_text("a file")
    for target in ("victim", "f"):
        with pytest.raises(OutputError) as e:
            space.save(tmp_path / target)
        assert "\n" not in str(e.value) and str(tmp_path / target) in str(e.value)
    assert (tmp_path / "victim" / "thesis.txt").read_text() == "x" and (tmp_path / "f").read_text() == "a file"
    # the library replaces a space of the same kind by default (documented), not with overwrite=False
    space.save(tmp_path / "sp")
    tiny_space(seed=1).save(tmp_path / "sp")
    assert Space.load(tmp_path / "sp").identity() == tiny_space(seed=1).identity()
    with pytest.raises(OutputError, match="already holds a saved space"):
        space.save(tmp_path / "sp", overwrite=False)
    Index.create(tmp_path / "ix", space=space)
    with pytest.raises(OutputError, match="holds an index"):
        space.save(tmp_path / "ix")
    assert leftovers(tmp_path) == []


def test_index_never_deletes_files_beside_or_inside_it(tmp_path):
    space = tiny_space()
    space.save(tmp_path / "sp")
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"id": f"r{i}", "text": f"item {i}"}) + "\n" for i in range(6)))
    # a folder holding the user's own saved space under the name an index uses for its copy
    (tmp_path / "work").mkdir()
    space.save(tmp_path / "work" / "space")
    (tmp_path / "work" / "items.lance").mkdir()
    before = tree(tmp_path / "work")
    with pytest.raises(OutputError, match="not an index"):
        Index.create(tmp_path / "work", space=space)
    r = cli("index", tmp_path / "sp", m, "--out", tmp_path / "work", "--cache", tmp_path / "c")
    assert_refused(r, "not an index")
    assert tree(tmp_path / "work") == before and not (tmp_path / "c").exists()
    # --overwrite replaces an index, but never one holding other files too
    assert cli("index", tmp_path / "sp", m, "--out", tmp_path / "ix", "--cache", tmp_path / "c").exit_code == 0
    (tmp_path / "ix" / "notes.txt").write_text("mine")
    r = cli("index", tmp_path / "sp", m, "--out", tmp_path / "ix", "--cache", tmp_path / "c")  # an update: fine
    assert r.exit_code == 0 and "(+0 rows)" in " ".join(r.output.split()), r.output
    r = cli("index", tmp_path / "sp", m, "--out", tmp_path / "ix", "--cache", tmp_path / "c", "--overwrite")
    assert_refused(r, "notes.txt")
    with pytest.raises(OutputError, match="notes.txt"):
        Index.create(tmp_path / "ix", space=space, overwrite=True)
    assert (tmp_path / "ix" / "notes.txt").read_text() == "mine" and len(Index.open(tmp_path / "ix")) == 6
    (tmp_path / "ix" / "notes.txt").unlink()
    r = cli("index", tmp_path / "sp", m, "--out", tmp_path / "ix", "--cache", tmp_path / "c", "--overwrite")
    assert r.exit_code == 0 and "(+6 rows)" in " ".join(r.output.split()), r.output
    assert len(Index.open(tmp_path / "ix")) == 6 and leftovers(tmp_path) == []


def test_every_saved_artefact_carries_its_kind(tmp_path):
    from anybind.fusion.base import FORMAT as FUSION
    from anybind.index import FORMAT as INDEX, META_FILE
    from anybind.scale.shard_write import write_synthetic_shards
    from anybind.scale.stream import FORMAT as SHARDS, META
    from anybind.zeroshot import FORMAT as ZERO_SHOT

    assert {k: (v.marker, v.format) for k, v in aio.KINDS.items()} == {
        "space": ("space.json", "anybind.space"), "index": (META_FILE, INDEX),
        "fusion": ("fusion.json", FUSION), "training-shards": (META, SHARDS),
        "captioner": ("captioner.json", "anybind.captioner"), "zero-shot": ("classifier.json", ZERO_SHOT),
    }
    space = tiny_space()
    space.save(tmp_path / "sp")
    Index.create(tmp_path / "ix", space=space)
    write_synthetic_shards(tmp_path / "sh", 50, dims={"a": 4, "b": 4}, val_rows=10, rows_per_shard=20)
    assert [aio.artefact_kind(tmp_path / d) for d in ("sp", "ix", "sh")] == ["space", "index", "training-shards"]
    for d, kind in (("sp", "space"), ("ix", "index"), ("sh", "training-shards")):
        aio.check_output(tmp_path / d, kind, overwrite=True)  # nothing but its own parts inside


NAMES = st.sampled_from(["space.json", "projectors.safetensors", "thesis.txt", "manifest.jsonl", ".hidden",
                         "index.json", "sub", "x.lock"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(NAMES, st.sampled_from(["{}", '{"format": "anybind.space"}', "junk", "DIR"]),
                               max_size=4),
       overwrite=st.booleans())
def test_a_write_either_refuses_untouched_or_replaces_only_a_space(tmp_path, entries, overwrite):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    out = root / "out"
    out.mkdir()
    for name, content in entries.items():
        if content == "DIR":
            (out / name).mkdir()
            (out / name / "f").write_text("keep")
        else:
            (out / name).write_text(content)
    before = tree(root)

    def write(tmp):
        (tmp / "projectors.safetensors").write_bytes(b"w")
        (tmp / "space.json").write_text('{"format": "anybind.space", "new": 1}')

    real = set(entries)
    was_space = entries.get("space.json") == '{"format": "anybind.space"}'
    safe = not real or (overwrite and was_space and real <= {"space.json", "projectors.safetensors"})
    try:
        aio.atomic_write_dir(out, write, kind="space", overwrite=overwrite)
    except OutputError:
        assert not safe and tree(root) == before
    else:
        assert safe and json.loads((out / "space.json").read_text())["new"] == 1
    assert leftovers(root) == []


# ----------------------------------------------------------------------------- item 2: recoverable swap
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
    old, new = tiny_space(seed=0), tiny_space(seed=1)
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
    tiny_space(seed=2).save(tmp_path / "sp")
    assert Space.load(tmp_path / "sp").identity() == tiny_space(seed=2).identity() and leftovers(tmp_path) == []


@pytest.mark.parametrize("at", ["rename-new", "mid-write"])
def test_a_killed_index_swap_is_recovered_by_the_next_write_or_open(tmp_path, at):
    space = tiny_space()
    Index.create(tmp_path / "ix", space=space).add_vectors(["a"], np.eye(8, dtype=np.float32)[:1], modality="text")
    Index.create(tmp_path / "staging" / "new", space=space)
    _run_killed(tmp_path / "ix", tmp_path / "staging" / "new", "index", at, sigkill=False)
    assert len(Index.open(tmp_path / "ix", space)) == (0 if at == "rename-new" else 1)
    assert leftovers(tmp_path) == []
    _run_killed(tmp_path / "ix", tmp_path / "staging" / "new", "index", "rename-new", sigkill=False)
    Index.create(tmp_path / "ix", space=space, overwrite=True)  # the next write settles it first
    assert len(Index.open(tmp_path / "ix")) == 0 and leftovers(tmp_path) == []


def test_a_failed_swap_in_process_puts_the_old_version_back(tmp_path, monkeypatch):
    tiny_space(seed=0).save(tmp_path / "sp")
    real, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        tiny_space(seed=1).save(tmp_path / "sp")
    monkeypatch.setattr(os, "rename", real)
    assert Space.load(tmp_path / "sp").identity() == tiny_space(seed=0).identity()
    assert leftovers(tmp_path) == []


def test_a_leftover_that_may_be_the_only_copy_is_never_removed(tmp_path):
    old, new = tiny_space(seed=0), tiny_space(seed=1)
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

"""Issue 14, item 1: no user data is ever lost to an output path: the CLI and the library refuse a foreign or
unexpected output before any work, replace only their own kind of artefact (with --overwrite), and an index never
deletes files beside or inside it."""

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import io as aio
from anybind.cli import app
from anybind.errors import OutputError
from anybind.index import Index
from anybind.space import Space

from artefact_helpers import leftovers, text_space

SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2


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
    common = [*enc, "--cache", tmp_path / "c", "--dim", "4", "--method", "procrustes"]
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
    space = text_space()
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
    text_space(seed=1).save(tmp_path / "sp")
    assert Space.load(tmp_path / "sp").identity() == text_space(seed=1).identity()
    with pytest.raises(OutputError, match="already holds a saved space"):
        space.save(tmp_path / "sp", overwrite=False)
    Index.create(tmp_path / "ix", space=space)
    with pytest.raises(OutputError, match="holds an index"):
        space.save(tmp_path / "ix")
    assert leftovers(tmp_path) == []


def test_index_never_deletes_files_beside_or_inside_it(tmp_path):
    space = text_space()
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
    space = text_space()
    space.save(tmp_path / "sp")
    Index.create(tmp_path / "ix", space=space)
    write_synthetic_shards(tmp_path / "sh", 50, dims={"a": 4, "b": 4}, val_rows=10, rows_per_shard=20)
    assert [aio.artefact_kind(tmp_path / d) for d in ("sp", "ix", "sh")] == ["space", "index", "training-shards"]
    for d, kind in (("sp", "space"), ("ix", "index"), ("sh", "training-shards")):
        aio.check_output(tmp_path / d, kind, overwrite=True)  # nothing but its own parts inside


NAMES = st.sampled_from(["space.json", "projectors.safetensors", "thesis.txt", "manifest.jsonl", ".hidden",
                         "index.json", "sub", "x.lock"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
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

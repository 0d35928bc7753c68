"""Clear one-line errors for bad inputs (issue 14, item 12): an input path that is missing, a folder or a FIFO is
refused before it is opened (no traceback, no hang), by the library, the CLI, a search query and an index build."""

import json
import os
import re

import pytest

from anybind.errors import DataError
from anybind.space import Space

from artefact_helpers import cli_error, tiny_space


@pytest.mark.timeout(120)  # before the fix a FIFO blocked the hash forever: fail, do not hang (the first case
# imports the CLI and LanceDB: 30 s was too short on a loaded 2-core machine)
@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_embed_refuses_a_path_that_is_not_a_regular_file(saved_space, tmp_path, kind):
    p = tmp_path / "input.png"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    why = {"missing": "file does not exist", "directory": "is a directory", "fifo": "not a regular file (a FIFO)"}[kind]
    space = Space.load(saved_space)
    with pytest.raises(DataError, match=re.escape(why)) as e:  # the library
        space.embed("image", [str(p)], cache=tmp_path / "c")
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    out = cli_error(["embed", str(saved_space), "-m", "image", str(p), "--cache", str(tmp_path / "c")])  # CLI
    assert why in out and str(p) in out
    # search --image runs the same check
    from anybind.index import Index, QueryError

    index = Index.create(tmp_path / "ix", space=space)
    with pytest.raises(QueryError, match=re.escape(f"cannot read image query {p}: {why}")):
        index.search(image=str(p), cache=tmp_path / "c")


@pytest.mark.timeout(30)
def test_media_loader_refuses_a_fifo_without_blocking(tmp_path):
    from anybind.data.media import load_audio, load_image

    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    for load in (load_image, load_audio):
        with pytest.raises(DataError, match="not a regular file"):
            load(p)


@pytest.mark.timeout(30)
def test_a_file_swapped_for_a_fifo_after_validation_names_its_record(tmp_path):
    """Index.build hashes every file: one turned into a FIFO after the manifest was checked is its record's error."""
    from PIL import Image

    from anybind import load_manifest
    from anybind.index import Index

    (tmp_path / "img").mkdir()
    with open(tmp_path / "m.jsonl", "w") as f:
        for i in range(3):
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / "img" / f"{i}.png")
            f.write(json.dumps({"id": f"r{i}", "text": f"item {i}", "image": f"img/{i}.png"}) + "\n")
    man = load_manifest(tmp_path / "m.jsonl", progress=False)
    (tmp_path / "img" / "1.png").unlink()
    os.mkfifo(tmp_path / "img" / "1.png")
    with pytest.raises(DataError, match=r"record 'r1': cannot read image file .*1.png.*not a regular file \(a FIFO\)"):
        Index.build(tiny_space(), man, tmp_path / "ix", cache=tmp_path / "c", progress=False)

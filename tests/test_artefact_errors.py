"""Clear one-line errors for bad inputs and damaged artefacts (issue 14, items 12-14).

12: an input path that is missing, a folder or a FIFO is refused before it is opened (no traceback, no hang).
13: a saved space verifies its identity on load, and each encoder's identity when it is built.
14: a damaged space (space.json, projectors.safetensors) or vectors file is one line naming the file and why.
"""

import json
import os
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind.cli import app
from anybind.errors import DataError, SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

TEXT = "callable:helper_encoders:hashed_text"
IMAGE = "callable:helper_encoders:image_stats"


def tiny_space(seed: int = 0) -> Space:
    """A text + image space of small projectors (no training: the encoders are the helper ones)."""
    torch.manual_seed(seed)
    proj = {
        "text": Projector(ProjectorConfig(in_dim=8, out_dim=6, kind="linear", dropout=0.0, input_dropout=0.0)),
        "image": Projector(ProjectorConfig(in_dim=7, out_dim=6, kind="mlp", hidden=5)),
    }
    return Space({"text": TEXT, "image": IMAGE}, proj)


def cli_error(args: list[str]) -> str:
    """Run the CLI, expect exit 2 with one ``error:`` message; return that message on one line."""
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.output.count("error:") == 1 and "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


# ----------------------------------------------------------------------------- 12: input files


@pytest.fixture
def saved(tmp_path):
    return tiny_space().save(tmp_path / "sp")


@pytest.mark.timeout(30)  # before the fix a FIFO blocked the hash forever: fail, do not hang
@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_embed_refuses_a_path_that_is_not_a_regular_file(saved, tmp_path, kind):
    p = tmp_path / "input.png"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    why = {"missing": "file does not exist", "directory": "is a directory", "fifo": "not a regular file (a FIFO)"}[kind]
    space = Space.load(saved)
    with pytest.raises(DataError, match=re.escape(why)) as e:  # the library
        space.embed("image", [str(p)], cache=tmp_path / "c")
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    out = cli_error(["embed", str(saved), "-m", "image", str(p), "--cache", str(tmp_path / "c")])  # the CLI
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

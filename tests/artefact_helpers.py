"""Helpers the damaged-artefact tests share (test_artefact_errors_*.py, test_index_json_errors.py): a tiny space of
the helper encoders (saved: conftest's ``saved_space``), the CLI's one-line error, a space refused on load in
one line, and an edit of a saved space.json; for the output-safety tests (test_artefact_safety_*.py), a one-modality
text space and the hidden leftovers of a swap beside an artefact."""

import json

import pytest
import torch
from typer.testing import CliRunner

from anybind.cli import app
from anybind.errors import SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

TEXT = "callable:helper_encoders:hashed_text"
IMAGE = "callable:helper_encoders:image_stats"
OTHER_TEXT = "callable:helper_encoders:slow_text"  # another model under the same modality


def tiny_space(seed: int = 0) -> Space:
    """A text + image space of small projectors (no training: the encoders are the helper ones)."""
    torch.manual_seed(seed)
    proj = {
        "text": Projector(ProjectorConfig(in_dim=8, out_dim=6, kind="linear", dropout=0.0, input_dropout=0.0)),
        "image": Projector(ProjectorConfig(in_dim=7, out_dim=6, kind="mlp", hidden=5)),
    }
    return Space({"text": TEXT, "image": IMAGE}, proj)


def text_space(seed: int = 0) -> Space:
    """A text-only space: one linear 8 -> 8 projector on the hashed helper text encoder."""
    torch.manual_seed(seed)
    cfg = ProjectorConfig(in_dim=8, out_dim=8, kind="linear", dropout=0.0, input_dropout=0.0)
    return Space({"text": TEXT}, {"text": Projector(cfg)})


def leftovers(parent) -> list[str]:
    """The hidden entries (a swap's temporary or old copies) in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def cli_error(args: list[str]) -> str:
    """Run the CLI, expect exit 2 with one ``error:`` message; return that message on one line."""
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def edit_json(space_dir, edit) -> None:
    p = space_dir / "space.json"
    meta = json.loads(p.read_text())
    edit(meta)
    p.write_text(json.dumps(meta))


def refused(space_dir, match: str) -> str:
    """Space.load and `anybind embed` both refuse the space with one line naming its file."""
    with pytest.raises(SpaceError, match=match) as e:
        Space.load(space_dir)
    msg = str(e.value)
    assert "\n" not in msg and str(space_dir) in msg, msg
    out = cli_error(["embed", str(space_dir), "-m", "text", "a dog"])
    assert str(space_dir) in out
    return msg


def drop(d: dict, k) -> None:
    """Delete ``d[k]`` (an expression, for the edits written as lambdas)."""
    del d[k]


def header_cases(name: str, kind: str) -> dict:
    """The damaged headers every artefact's versioned loader (artefact_meta.read_meta) refuses in one line naming
    its file ``name``: corrupt or non-UTF-8 JSON, no object, another artefact's format, a newer format, a
    format_version that is no integer.  Each case: (the bytes, or keys to merge into the JSON; a regex of the error)."""
    return {
        "corrupt": (b"{", f"{name}: corrupt JSON"),
        "not-utf8": (b"\xff\xfe{}", f"{name}: corrupt JSON"),
        "not-an-object": (b"[1, 2]", f"{name}: not an anybind {kind}"),
        "other-kind": ({"format": "anybind.captioner"}, f"{name}: not an anybind {kind}"),
        "newer": ({"format_version": 99}, rf"{name}: saved by a newer anybind \(format 99; this anybind reads up to "
                                          r"\d+\); upgrade anybind"),
        "version-bool": ({"format_version": True}, f"{name}: format_version is True, expected an integer"),
        "version-text": ({"format_version": "3"}, f"{name}: format_version is '3', expected an integer"),
    }


def damage_header(path, edit) -> None:
    """Write a :func:`header_cases` edit into the JSON file ``path``: its bytes, or its keys merged in."""
    path.write_bytes(edit if isinstance(edit, bytes) else json.dumps({**json.loads(path.read_text()), **edit}).encode())

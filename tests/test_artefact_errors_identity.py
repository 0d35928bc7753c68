"""Identities (issue 14, item 13): a saved space verifies its identity on load, and each encoder's identity when it
is built; a space whose encoder identity is unknown is not saved; a format-1 space still loads and is guarded."""

import json

import numpy as np
import pytest

from anybind.encoders.base import get_encoder
from anybind.errors import SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

from artefact_helpers import IMAGE, OTHER_TEXT, TEXT, cli_error, drop, edit_json, refused, tiny_space


@pytest.mark.parametrize(
    "edit, match",
    [
        # the case: another text encoder, and the identity that would have caught it removed
        (lambda m: (m["modalities"]["text"].update(encoder=OTHER_TEXT), drop(m, "identity")), "missing key.s. 'identity'"),
        (lambda m: m["modalities"]["text"].update(encoder=OTHER_TEXT), "does not match its content"),
        (lambda m: drop(m["modalities"]["text"], "identity"), "modalities.text: missing key.s. 'identity'"),
        (lambda m: m["modalities"]["text"].update(identity=None), "modalities.text.identity is None"),
        (lambda m: m["modalities"]["image"]["projector"].update(kind="linear"), "image.mlp.0.bias.* are not described by space.json"),
        (lambda m: m["modalities"]["text"]["projector"].update(dropout=0.5), "does not match its content"),
        (lambda m: m.update(identity="0" * 24), "saved identity 0+ does not match"),
    ],
    ids=["other-encoder-no-identity", "other-encoder", "no-encoder-identity", "null-encoder-identity",
         "projector-kind", "projector-config", "forged-identity"],
)
def test_an_edited_space_is_refused_on_load(saved_space, edit, match):
    edit_json(saved_space, edit)
    refused(saved_space, match)


def test_a_different_model_under_the_recorded_identity_is_refused_when_built(saved_space, tmp_path):
    """space.json claims another encoder identity, consistently (identity recomputed): the live check refuses."""
    from anybind.space_config import space_identity

    space = Space.load(saved_space)
    claimed = space.identities["text"] + "|weights=other"
    space.identities["text"] = claimed
    edit_json(saved_space, lambda m: (m["modalities"]["text"].update(identity=claimed),
                                m.update(identity=space_identity(2, space.encoders, space.identities, space.projectors))))
    loaded = Space.load(saved_space)  # consistent: loads
    live = get_encoder(TEXT).identity
    with pytest.raises(SpaceError, match="encoder for 'text'") as e:
        loaded.embed("text", ["a dog"], cache=tmp_path / "c")
    msg = str(e.value)
    assert "\n" not in msg and claimed in msg and live in msg
    assert loaded.embed("image", [], cache=tmp_path / "c").shape == (0, 6)  # the other modality still works
    out = cli_error(["embed", str(saved_space), "-m", "text", "a dog", "--cache", str(tmp_path / "c")])
    assert "encoder for 'text'" in out


def test_a_hand_built_space_records_its_encoder_identities(saved_space):
    meta = json.loads((saved_space / "space.json").read_text())
    assert meta["format_version"] == 2
    assert all(e["identity"] and e["identity"].startswith(e["encoder"]) for e in meta["modalities"].values())
    assert Space.load(saved_space).identity() == meta["identity"] == tiny_space().identity()


def test_a_space_whose_encoder_identity_is_unknown_is_not_saved(tmp_path):
    space = Space({"x": "nosuch:encoder"}, {"x": Projector(ProjectorConfig(in_dim=3, out_dim=4, kind="linear"))})
    with pytest.raises(SpaceError, match="cannot save the space: no identity for the encoder.s. of 'x' .nosuch:encoder."):
        space.save(tmp_path / "sp")
    assert not (tmp_path / "sp").exists()


def test_a_space_saved_before_identities_were_required_still_loads(tmp_path):
    """tests/fixtures/space_v1: format 1, saved by the code before issue 14 (image had no encoder identity)."""
    import shutil
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    src = fixtures / "space_v1"
    meta = json.loads((src / "space.json").read_text())
    space = Space.load(src)
    assert space.format_version == 1 and space.identity() == meta["identity"]  # indexes built on it stay valid
    want = json.loads((fixtures / "space_v1_expected.json").read_text())
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    y = np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)
    # the same projections as the code that saved it, to float32 rounding: torch's CPU kernels round the last bit
    # differently on another instruction set (an AVX-512 machine differed from the one that wrote the fixture by
    # ~1e-7), so bit equality would test the CPU, not the loader
    np.testing.assert_allclose(space.project("text", x), np.asarray(want["text"], np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(space.project("image", y), np.asarray(want["image"], np.float32), rtol=1e-5, atol=1e-6)
    # re-saved_space, it stays format 1 with the same identity
    again = Space.load(space.save(tmp_path / "again"))
    assert again.format_version == 1 and again.identity() == meta["identity"]
    # its identity still guards it: the image spec edited (its encoder identity is null) is refused
    shutil.copytree(src, tmp_path / "v1")
    edit_json(tmp_path / "v1", lambda m: m["modalities"]["image"].update(encoder=IMAGE + "x"))
    with pytest.raises(SpaceError, match="does not match its content"):
        Space.load(tmp_path / "v1")
    edit_json(tmp_path / "v1", lambda m: drop(m, "identity"))
    with pytest.raises(SpaceError, match="missing key.s. 'identity'"):
        Space.load(tmp_path / "v1")

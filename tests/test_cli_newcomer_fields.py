"""A newcomer's first commands (issue 22): what gets bound by default (language variants are views of their base
modality), a field of one's own, and one clear line for a misspelt field or a spec without its prefix.  No real
model runs: callable encoders from helper_encoders.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from newcomer_helpers import FILE, TEXT, cli, corpus, flat


def _bound(space_dir: Path) -> list[str]:
    return sorted(json.loads((space_dir / "space.json").read_text())["modalities"])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# -- item 1: language variants are views of their base modality ------------------------------------------

@pytest.mark.parametrize("fields, bound, variants", [
    ({"text", "text_fr", "speech", "speech_de", "image"}, ["image", "speech", "text"],
     {"speech": ["speech_de"], "text": ["text_fr"]}),
    ({"text_de", "image"}, ["image", "text_de"], {}),  # no base field: the German caption *is* the text
    ({"speech", "speech_name", "speech_name_de", "audio"}, ["audio", "speech"], {"speech": ["speech_name", "speech_name_de"]}),
])
def test_base_modalities_are_bound_and_variants_left(fields, bound, variants):
    from anybind.data.fields import split_variants

    assert split_variants(fields) == (bound, variants)


def test_fit_without_modalities_binds_the_base_modalities_and_says_which(tmp_path):
    man = corpus(tmp_path, fields=("text", "text_fr", "speech", "speech_de"))
    r = cli("fit", man, "-e", f"text={TEXT}", "-e", f"speech={FILE}", "--epochs", "2", "--out", tmp_path / "sp",
             cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert _bound(tmp_path / "sp") == ["speech", "text"]
    out = flat(r.output)
    assert "binding speech, text; not bound: 1 variants of speech (speech_de), 1 of text (text_fr)" in out, out


def test_library_fit_follows_the_same_rule(tmp_path):
    from anybind import Space

    man = corpus(tmp_path, fields=("text", "text_fr", "speech", "speech_de"))
    h = _Records()
    logging.getLogger("anybind.data.fields").addHandler(h)
    try:
        sp = Space.fit(man, encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2, progress=False)
    finally:
        logging.getLogger("anybind.data.fields").removeHandler(h)
    assert sp.modalities == ["speech", "text"]
    assert sp.info["lineage"][-1]["modalities"] == ["speech", "text"]
    assert any("text_fr" in m and "speech_de" in m and m.startswith("binding speech, text") for m in h.messages)


def test_a_variant_named_or_given_an_encoder_is_bound(tmp_path):
    from anybind import Space

    man = corpus(tmp_path, fields=("text", "text_fr", "speech"))
    sp = Space.fit(man, ["text", "text_fr"], encoders={"text": TEXT, "text_fr": TEXT}, cache=tmp_path / "c",
                   epochs=2, progress=False, recipe="plain")
    assert sp.modalities == ["text", "text_fr"]
    r = cli("fit", man, "-e", f"text={TEXT}", "-e", f"text_fr={TEXT}", "-e", f"speech={FILE}", "--epochs", "2",
             "--out", tmp_path / "sp", cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert _bound(tmp_path / "sp") == ["speech", "text", "text_fr"]


# -- item 4 (CLI side): a field of your own -------------------------------------------------------------

def test_own_field_from_the_cli(tmp_path):
    man = corpus(tmp_path, fields=("text", "imu"))
    r = cli("validate", man)  # no encoder: one warning for the field, not one line per record
    out = r.output
    assert r.exit_code == 0 and out.count("field 'imu'") == 1 and "unknown modality" not in out and "-e imu=PREFIX:NAME" in out and "kinds=" not in out, out
    assert cli("validate", man, "--strict").exit_code == 1
    r = cli("validate", man, "-e", f"imu={FILE}", "--strict")
    assert r.exit_code == 0 and "24 records, none bad" in r.output, r.output
    r = cli("fit", man, "--modalities", "imu,text", "--epochs", "2", "--out", tmp_path / "x", cache=tmp_path / "c")
    assert r.exit_code == 2 and "-e imu=PREFIX:NAME" in flat(r.output) and "kinds=" not in r.output, r.output
    r = cli("fit", man, "-e", f"imu={FILE}", "-e", f"text={TEXT}", "--epochs", "2", "--out", tmp_path / "sp",
             cache=tmp_path / "c")
    assert r.exit_code == 0 and "unknown modality" not in r.output, r.output
    assert _bound(tmp_path / "sp") == ["imu", "text"]


def test_fields_not_asked_for_are_ignored_even_unknown_ones(tmp_path):
    from anybind.data.manifest import load_manifest

    man = corpus(tmp_path, fields=("text", "imu"))
    loaded = load_manifest(man, modalities=["text"])
    assert not loaded.bad and len(loaded.records) == 24


# -- mistakes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "validate"])
def test_misspelt_field_names_the_nearest(tmp_path, command):
    man = corpus(tmp_path)
    extra = ["--out", str(tmp_path / "sp")] if command == "fit" else []
    r = cli(command, man, "--modalities", "imgae,text", *extra)
    assert r.exit_code == 2, r.output
    out = flat(r.output)
    assert f"no field 'imgae' in {man}; did you mean 'image'?" in out and "Traceback" not in out, out
    assert not (tmp_path / "sp").exists()


def test_spec_without_prefix_explains_the_form(tmp_path):
    from anybind.encoders.base import get_encoder
    from anybind.errors import EncoderError

    man = corpus(tmp_path)
    r = cli("fit", man, "-e", "image=resnet50", "--out", tmp_path / "sp")
    out = r.output
    assert r.exit_code == 2 and out.startswith("error: --encoder image=resnet50: ") and out.count("\n") == 1, out
    assert "'resnet50' has no prefix" in out and "PREFIX:NAME" in out and "anybind encoders" in out, out
    assert "image, speech, text" in out and "MODALITY=PREFIX:NAME" in out, out
    with pytest.raises(EncoderError, match="has no prefix: an encoder spec is PREFIX:NAME"):
        get_encoder("resnet50")
    r = cli("encode", man, "-e", "image=nosuch:thing")
    assert r.exit_code == 2 and "unknown prefix 'nosuch'" in flat(r.output), r.output

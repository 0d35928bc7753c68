"""A captioner records the prompt wording each modality's default mode was chosen under (format 5), and one saved
before it did (whose sound and speech modes may have been chosen under the image wording) loads with one warning
line saying how to choose them again (``anybind caption-modes``).  The tiny LM and shapes corpus of
tests/caption_fixtures.py; its non-text modality, "sketch", is decoded with the "Similar items show:" wording."""

import json
import logging

import pytest

from anybind.caption import Captioner
from anybind.caption.retrieval import OTHER_PROMPT, PROMPT
from anybind.errors import CaptionError

LOGGER = "anybind.caption.model"


def _old_format(out, meta, **retrieval):
    """``out``'s captioner.json as anybind wrote it before format 5: each mode choice without its wording."""
    old = {**meta, "format_version": 4, "modes": {m: {k: v for k, v in c.items() if k != "prompt"}
                                                  for m, c in meta["modes"].items()}}
    old["retrieval"] = {**meta["retrieval"], **retrieval}
    (out / "captioner.json").write_text(json.dumps(old))
    return old


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_new_captioner_records_the_wording_its_modes_were_chosen_under(corpus, captioner, tmp_path, caplog):
    tmp, man, space, lm, recs = corpus
    assert captioner.retrieval_prompt == PROMPT and captioner.prompt_for("sketch") == OTHER_PROMPT
    assert captioner.modes["sketch"]["prompt"] == OTHER_PROMPT  # what its val items were decoded with
    out = captioner.save(tmp_path / "cap")
    meta = json.loads((out / "captioner.json").read_text())
    assert meta["format_version"] == 5 and meta["modes"]["sketch"]["prompt"] == OTHER_PROMPT
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        back = Captioner.load(out, lm=lm)
    assert _warnings(caplog) == [] and back.modes == captioner.modes and back.stale_modes() == []
    # the round trip keeps it: saved again, the same record
    back.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "captioner.json").read_text())["modes"] == meta["modes"]


def test_an_old_captioner_loads_with_one_warning_naming_its_folder_and_the_fix(corpus, captioner, tmp_path, caplog):
    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    meta = json.loads((out / "captioner.json").read_text())
    _old_format(out, meta)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        back = Captioner.load(out, lm=lm)
    (line,) = _warnings(caplog)
    assert "\n" not in line and str(out) in line and "sketch" in line
    assert f"anybind caption-modes {out} MANIFEST" in line
    # it keeps working: its modes as saved, captions in the stored mode
    assert back.stale_modes() == ["sketch"] and back.mode_for("sketch") == captioner.mode_for("sketch")
    items = [r["id"] for r in recs if r["split"] == "test"][:3]
    assert back.caption("sketch", items, cache=tmp / "c") == captioner.caption("sketch", items, cache=tmp / "c")
    # a captioner with its own template decoded every modality with it before and after: nothing to doubt
    own = "Close ones:\n{captions}\nThis:\n"
    _old_format(out, meta, prompt=own)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Captioner.load(out, lm=lm).stale_modes() == []
    assert _warnings(caplog) == []


def test_a_choice_under_another_wording_warns_and_a_damaged_one_is_one_line(corpus, captioner, tmp_path, caplog):
    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    meta = json.loads((out / "captioner.json").read_text())
    other = {**meta, "modes": {"sketch": {**meta["modes"]["sketch"], "prompt": PROMPT}}}  # the image wording
    (out / "captioner.json").write_text(json.dumps(other))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Captioner.load(out, lm=lm).stale_modes() == ["sketch"]
    assert len(_warnings(caplog)) == 1
    for bad in (3, "Similar {0}:", "no field"):
        (out / "captioner.json").write_text(json.dumps(
            {**meta, "modes": {"sketch": {**meta["modes"]["sketch"], "prompt": bad}}}))
        with pytest.raises(CaptionError, match="default mode of 'sketch': retrieval prompt") as e:
            Captioner.load(out, lm=lm)
        assert "captioner.json" in str(e.value) and "\n" not in str(e.value)


def test_cli_caption_modes_chooses_again_without_retraining(corpus, captioner, tmp_path, caplog):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    meta = json.loads((out / "captioner.json").read_text())
    old = _old_format(out, meta)
    old["modes"]["sketch"]["mode"] = "mapper" if meta["modes"]["sketch"]["mode"] != "mapper" else "nearest"
    (out / "captioner.json").write_text(json.dumps(old))  # a choice the current wording would not make
    weights = (out / "mapper.safetensors").read_bytes()
    runner = CliRunner()
    r = runner.invoke(app, ["caption-modes", str(out), str(man), "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    assert f"sketch: captioned by {meta['modes']['sketch']['mode']} by default" in " ".join(r.output.split())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        back = Captioner.load(out, lm=lm)
    assert _warnings(caplog) == [] and back.modes == captioner.modes  # the fit's choice: same val items and seed
    assert (out / "mapper.safetensors").read_bytes() == weights  # no retraining
    r = runner.invoke(app, ["caption-modes", str(out), str(man), "--modality", "speech"])
    assert r.exit_code == 2 and "'speech': not bound in this space" in " ".join(r.output.split())

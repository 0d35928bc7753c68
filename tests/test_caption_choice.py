"""The default caption mode per modality, chosen on val (anybind.caption.choice): the trained mapper, the
training-free prompt or the nearest memory caption.  The tiny LM and the shapes corpus of tests/caption_fixtures.py."""

import json
import logging

import pytest

from anybind.caption import Captioner, cider_d
from anybind.caption.choice import choose_modes, val_items
from anybind.caption.model import MODES, PrefixMapper
from anybind.data.manifest import load_manifest
from anybind.encoders.kinds import manifest_kinds
from anybind.errors import CaptionError


def _val(corpus, n=0):
    tmp, man, space, lm, recs = corpus
    m = load_manifest(man, modalities=["text", "sketch"], kinds=manifest_kinds(space.encoders), progress=False)
    return val_items(m, "sketch", "text", n)


def test_fit_chooses_a_mode_on_val_and_records_the_scores_that_chose_it(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    choice = captioner.modes["sketch"]
    val = _val(corpus, 32)
    assert choice["n_val"] == len(val) == sum(r["split"] == "val" for r in recs) and choice["split"] == "val"
    assert set(choice["val_cider_d"]) == set(MODES)
    # the scores are the val items' CIDEr-D under each mode (recomputed), and the best one won
    X = space.embed("sketch", [r.values["sketch"] for r in val], cache=tmp / "c")
    refs = [[r.values["text"]] for r in val]
    for mode, score in choice["val_cider_d"].items():
        assert score == pytest.approx(cider_d(captioner.decode(X, mode=mode, max_tokens=20), refs))
    assert choice["val_cider_d"][choice["mode"]] == max(choice["val_cider_d"].values())
    # caption() uses it by default; an explicit mode overrides it; text (never chosen) stays on the mapper
    items = [r["id"] for r in recs if r["split"] == "test"][:6]
    Xt = space.embed("sketch", items, cache=tmp / "c")
    assert captioner.caption("sketch", items, cache=tmp / "c") == captioner.decode(Xt, mode=choice["mode"])
    assert captioner.caption("sketch", items, cache=tmp / "c", mode="mapper") == captioner.decode(Xt)
    assert captioner.mode_for("text") == "mapper" and "text" not in captioner.modes


def test_nearest_mode_is_the_nearest_memory_caption(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    X = space.embed("sketch", [r["id"] for r in recs[:10]], cache=tmp / "c")
    got = captioner.decode(X, mode="nearest", method="beam")  # no LM
    assert got == [captioner.memory_captions[i] for i in (X @ captioner.memory.T).argmax(1)]
    assert captioner.decode(X[:0], mode="nearest") == []
    short = captioner.decode(X, mode="nearest", max_tokens=2)  # the same guardrail as generation
    assert all(len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) == 2 for c in short)
    assert [lm.tokenizer(c)["input_ids"] for c in short] == [lm.tokenizer(c)["input_ids"][:2] for c in got]
    with pytest.raises(CaptionError, match="unknown caption mode 'best'"):
        captioner.decode(X, mode="best")


def test_a_mapper_that_decodes_badly_loses_the_choice(corpus, captioner):
    """An untrained mapper (random soft tokens) scores below the nearest caption on val: the choice is not fixed."""
    tmp, man, space, lm, recs = corpus
    import torch

    torch.manual_seed(0)
    bad = Captioner(space, lm, PrefixMapper(captioner.mapper.cfg), memory=captioner.memory,
                    memory_captions=captioner.memory_captions)
    got = choose_modes(bad, man, n=8, cache=tmp / "c", max_tokens=12)
    s = got["sketch"]["val_cider_d"]
    assert got["sketch"]["mode"] != "mapper" and s["mapper"] < max(s.values()) and got["sketch"]["n_val"] == 8
    assert bad.modes == got and bad.mode_for("sketch") == got["sketch"]["mode"]
    assert got["sketch"]["prompt_k"] == bad.prompt_k == 3  # no k chosen: the default prompt k


def test_modes_survive_save_and_load_and_bad_entries_are_one_line(corpus, captioner, tmp_path):
    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    back = Captioner.load(out, lm=lm)
    assert back.modes == captioner.modes and back.prompt_k == captioner.prompt_k
    items = [r["id"] for r in recs if r["split"] == "test"][:4]
    assert back.caption("sketch", items, cache=tmp / "c") == captioner.caption("sketch", items, cache=tmp / "c")
    meta = json.loads((out / "captioner.json").read_text())
    assert meta["format_version"] == 5 and meta["modes"]["sketch"]["val_cider_d"]
    for bad, words in (({"sketch": {"mode": "best"}}, "not one of mapper, prompt, nearest"),
                       ([1, 2], "not a mapping"),
                       ({"speech": {"mode": "nearest"}}, "'speech' is not bound in this space"),
                       ({"sketch": {"mode": "nearest", "val_cider_d": "high"}}, "val_cider_d 'high'"),
                       ({"sketch": {"mode": "nearest", "val_cider_d": {"nearest": None}}}, "val_cider_d"),
                       ({"sketch": {"mode": "nearest", "n_val": -3}}, "n_val -3"),
                       ({"sketch": "nearest"}, "is not one of")):
        (out / "captioner.json").write_text(json.dumps({**meta, "modes": bad}))
        with pytest.raises(CaptionError, match=words) as e:
            Captioner.load(out, lm=lm)
        assert "captioner.json" in str(e.value) and "\n" not in str(e.value)
    # a format-3 captioner (before modes): every modality on the mapper, the prompt's k derived
    old = {k: v for k, v in meta.items() if k != "modes"} | {"format_version": 3}
    old["retrieval"] = {k: v for k, v in meta["retrieval"].items() if k != "prompt_k"}
    (out / "captioner.json").write_text(json.dumps(old))
    back = Captioner.load(out, lm=lm)
    assert back.modes == {} and back.mode_for("sketch") == "mapper" and back.prompt_k >= 1


def test_choose_refuses_or_names_what_it_cannot_choose(corpus, captioner, tmp_path, caplog):
    tmp, man, space, lm, recs = corpus
    with pytest.raises(CaptionError, match=r"'speech': not bound in this space \(bound: "):
        choose_modes(captioner, man, ["speech"])
    no_val = tmp_path / "m.jsonl"
    no_val.write_text("".join(json.dumps(r) + "\n" for r in recs if r["split"] != "val"))
    before = dict(captioner.modes)
    with caplog.at_level(logging.WARNING, logger="anybind.caption.choice"):
        assert choose_modes(captioner, no_val, ["sketch"], cache=tmp / "c") == {}
    assert "no val records with sketch" in caplog.text and captioner.modes == before


def test_ties_go_to_the_cheaper_mode_and_the_sample_is_seeded(corpus, captioner, monkeypatch):
    """Equal val scores: nearest before prompt before mapper; the val sample is the same for the same seed."""
    tmp, man, space, lm, recs = corpus
    monkeypatch.setattr(captioner, "modes", dict(captioner.modes))  # the session's captioner keeps its choice
    by_mode = {"mapper": 0.5, "prompt": 0.5, "nearest": 0.5}
    calls = []

    def fake(captions, refs):
        calls.append(len(captions))
        return list(by_mode.values())[len(calls) - 1]

    monkeypatch.setattr("anybind.caption.choice.cider_d", fake)
    assert choose_modes(captioner, man, n=2, cache=tmp / "c", max_tokens=3)["sketch"]["mode"] == "nearest"
    calls.clear()
    by_mode = {"mapper": 0.5, "prompt": 0.5, "nearest": 0.25}
    assert choose_modes(captioner, man, n=2, cache=tmp / "c", max_tokens=3)["sketch"]["mode"] == "prompt"
    assert [r.id for r in _val(corpus, 5)] == [r.id for r in _val(corpus, 5)] != [r.id for r in _val(corpus)][:5]

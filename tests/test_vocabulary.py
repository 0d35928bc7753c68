"""A vocabulary stored with the space (issue 20): saved and loaded with it, checked on load, never stale after
replace_encoder / update, and used by ``anybind explain`` when no --vocab is given -- on a small real Tux Paint
space."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from anybind.data.manifest import load_manifest
from anybind.errors import DataError, SpaceError
from anybind.explain import nearest_words, vocabulary
from anybind.index import Index
from anybind.space import Space
from anybind.vocabulary import (VECTORS_FILE, WORDS_FILE, carry_vocabulary, embed_vocabulary, modality_identity,
                                stored_vocabulary)


@pytest.fixture(scope="module")
def data(serve_small):
    d = serve_small
    space = Space.load(d["space"])
    return d, space, load_manifest(d["manifest"], modalities=space.modalities).records


def with_vocabulary(d, words, cache, out):
    sp = Space.load(d["space"])
    sp.vocabulary = embed_vocabulary(sp, words, cache=cache, source="small.jsonl")
    sp.save(out)
    return sp


def test_a_stored_vocabulary_loads_with_the_space_and_answers_as_the_words_embedded_afresh(data, shared_cache,
                                                                                           tmp_path):
    d, space, recs = data
    words = vocabulary(recs)
    sp = with_vocabulary(d, words, shared_cache, tmp_path / "space")
    assert {WORDS_FILE, VECTORS_FILE} <= {p.name for p in (tmp_path / "space").iterdir()}
    back = Space.load(tmp_path / "space")
    # not part of the identity: the index built with the space before still opens with it
    assert back.identity() == space.identity() == sp.identity()
    assert Index.open(d["index"], back).space is back
    v = stored_vocabulary(back)
    assert v.words == tuple(words) and v.source == "small.jsonl" and v.text_modality == "text"
    assert np.array_equal(v.vectors, space.embed("text", words, cache=shared_cache))
    assert stored_vocabulary(back, "audio") is None and stored_vocabulary(space) is None
    X = space.embed("image", [r.values["image"] for r in recs[:6]], cache=shared_cache)
    assert nearest_words(back, "image", X, v.words, k=5, embedded_words=v.vectors) == \
        nearest_words(space, "image", X, words, k=5, cache=shared_cache)
    # saved again (anything else changed), it is kept; a space without one has none
    back.save(tmp_path / "space")
    assert stored_vocabulary(Space.load(tmp_path / "space")).words == tuple(words)
    assert Space.load(d["space"]).vocabulary is None


def test_a_damaged_edited_or_foreign_vocabulary_is_refused_in_one_line(data, shared_cache, tmp_path):
    d, _, recs = data
    good = tmp_path / "good"
    with_vocabulary(d, vocabulary(recs)[:20], shared_cache, good)
    doc = json.loads((good / WORDS_FILE).read_text())

    def broken(name, edit):
        out = tmp_path / name
        shutil.copytree(good, out)
        edit(out)
        with pytest.raises(SpaceError) as e:
            Space.load(out)
        assert "\n" not in str(e.value) and str(out) in str(e.value)
        return str(e.value)

    assert "digest" in broken("edited", lambda p: (p / WORDS_FILE).write_text(
        json.dumps({**doc, "words": ["zebra"] + doc["words"][1:]})))
    assert "without" in broken("half", lambda p: (p / VECTORS_FILE).unlink())
    assert "upgrade anybind" in broken("newer", lambda p: (p / WORDS_FILE).write_text(
        json.dumps({**doc, "format_version": 99})))
    assert "shape" in broken("count", lambda p: (p / WORDS_FILE).write_text(
        json.dumps({**doc, "count": 19, "words": doc["words"][:19]})))
    assert "corrupt JSON" in broken("junk", lambda p: (p / WORDS_FILE).write_bytes(b"\xff{"))
    # the files of another space (its text projector differs): refused, not used
    other = Space.load(d["space"])
    with torch.no_grad():
        next(other.projectors["text"].parameters()).add_(0.01)
    other.save(tmp_path / "other")
    for f in (WORDS_FILE, VECTORS_FILE):
        shutil.copy(good / f, tmp_path / "other" / f)
    with pytest.raises(SpaceError, match="another 'text' modality"):
        Space.load(tmp_path / "other")


VOCAB_HEADERS = {  # vocabulary.json's header, read by the shared artefact_meta.read_meta
    "corrupt": (b'{"format": ', "corrupt JSON"),
    "not-utf8": (b"\xff{", "corrupt JSON"),
    "not-an-object": (b"[]", "not an anybind vocabulary"),
    "other-kind": ({"format": "anybind.fusion"}, "not an anybind vocabulary"),
    "newer": ({"format_version": 99}, r"saved by a newer anybind \(format 99; this anybind reads up to \d+\); "
                                      "upgrade anybind"),
    "version-bool": ({"format_version": True}, "format_version is True, expected an integer"),
    "no-version": ({"format_version": None}, "format_version is None, expected an integer"),
}


def test_a_bad_vocabulary_header_is_one_line_naming_the_file_and_the_fix(data, shared_cache, tmp_path):
    """Every refusal of the header names vocabulary.json and how to get rid of it (the space is unusable until
    then); before, a foreign file gave no way out and ``"format_version": true`` passed as format 1."""
    d, _, recs = data
    good = tmp_path / "good"
    with_vocabulary(d, vocabulary(recs)[:8], shared_cache, good)
    doc = json.loads((good / WORDS_FILE).read_text())
    for case, (edit, match) in VOCAB_HEADERS.items():
        out = tmp_path / case
        shutil.copytree(good, out)
        (out / WORDS_FILE).write_bytes(edit if isinstance(edit, bytes) else json.dumps({**doc, **edit}).encode())
        with pytest.raises(SpaceError, match=match) as e:
            Space.load(out)
        msg = str(e.value)
        assert msg.startswith(f"{out / WORDS_FILE}: ") and "\n" not in msg, (case, msg)
        assert msg.endswith(f"`anybind explain {out} --build-vocab`"), (case, msg)


def test_a_text_projector_changed_in_memory_neither_uses_nor_saves_the_stale_vocabulary(data, shared_cache, tmp_path,
                                                                                       caplog):
    d, _, recs = data
    sp = with_vocabulary(d, vocabulary(recs)[:20], shared_cache, tmp_path / "a")
    assert stored_vocabulary(sp) is sp.vocabulary
    with torch.no_grad():
        next(sp.projectors["text"].parameters()).mul_(1.5)
    with caplog.at_level(logging.WARNING, logger="anybind"):
        assert stored_vocabulary(sp) is None
        sp.save(tmp_path / "b")
    assert "--build-vocab" in caplog.text
    assert Space.load(tmp_path / "b").vocabulary is None and not (tmp_path / "b" / WORDS_FILE).exists()


def test_replace_encoder_and_update_embed_the_vocabulary_again_an_unchanged_text_keeps_it(data, shared_cache,
                                                                                         tmp_path):
    d, _, recs = data
    words = vocabulary(recs)[:40]
    sp = Space.load(d["space"])
    sp.vocabulary = embed_vocabulary(sp, words, cache=shared_cache)
    # new pairs, all for training (no val split: the last epoch is kept, so the text projector moves)
    rows = [json.loads(line) for line in d["manifest"].read_text().splitlines()]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({**row, "split": "train"}) + "\n" for row in rows))
    up = sp.update(tmp_path / "new.jsonl", cache=shared_cache, epochs=3, lr=1e-2, seed=0)
    assert modality_identity(up, "text") != modality_identity(sp, "text")  # the update moved the text projector
    assert up.vocabulary.words == tuple(words) and up.vocabulary.fits(up)
    assert np.allclose(up.vocabulary.vectors, up.embed("text", words, cache=shared_cache), atol=1e-6)
    assert not np.allclose(up.vocabulary.vectors, sp.vocabulary.vectors, atol=1e-3)
    rep = sp.replace_encoder("text", "text:e5-small", d["manifest"], cache=shared_cache, epochs=3, hidden=64)
    assert rep.vocabulary.words == tuple(words) and rep.vocabulary.fits(rep)
    assert np.allclose(rep.vocabulary.vectors, rep.embed("text", words, cache=shared_cache), atol=1e-6)
    # a derived space whose text modality is the same keeps the very same vocabulary
    same = carry_vocabulary(sp, Space.load(d["space"]))
    assert same.vocabulary is sp.vocabulary
    # without a text modality it has none
    assert carry_vocabulary(sp, Space({"image": sp.encoders["image"]}, {"image": sp.projectors["image"]},
                                      identities=sp.identities)).vocabulary is None


def test_embed_vocabulary_refuses_what_cannot_be_a_vocabulary(data):
    _, space, _ = data
    for words, says in (([], "at least one"), (["dog", "dog"], "repeats"), (["x" * 300], "over 200")):
        with pytest.raises(DataError, match=says):
            embed_vocabulary(space, words)
    with pytest.raises(SpaceError, match="no 'speech'"):
        embed_vocabulary(space, ["dog"], "speech")


def test_cli_build_vocab_stores_it_and_explain_uses_it_without_vocab(data, shared_cache, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    d, space, recs = data
    shutil.copytree(d["space"], tmp_path / "space")
    r = next(r for r in recs if r.has("image"))
    run = CliRunner().invoke
    res = run(app, ["explain", str(tmp_path / "space"), "--build-vocab", "--vocab", str(d["manifest"]),
                    "--max-words", "30", "--cache", str(shared_cache)])
    assert res.exit_code == 0, res.output
    assert "stored a vocabulary of 30 words" in res.output
    v = stored_vocabulary(Space.load(tmp_path / "space"))
    from anybind.explain import read_vocabulary, words_of

    assert list(v.words) == read_vocabulary(d["manifest"], max_words=30) and len(v.words) == 30
    assert len(words_of([r.values["text"] for r in recs])) > 30  # the cap took the most frequent words
    res = run(app, ["explain", str(tmp_path / "space"), "--image", str(r.values["image"]), "-k", "3", "--json",
                    "--cache", str(shared_cache)])
    assert res.exit_code == 0, res.output
    got = [w["word"] for w in json.loads(res.output.splitlines()[-1])["words"]]
    assert got == [w for w, _ in nearest_words(space, "image", [r.values["image"]], list(v.words), k=3,
                                               cache=shared_cache)[0]]
    # a text alone now has a vocabulary; --build-vocab needs --vocab; the original space still has none
    assert run(app, ["explain", str(tmp_path / "space"), "--text", "a dog", "--cache", str(shared_cache)]).exit_code == 0
    bad = run(app, ["explain", str(tmp_path / "space"), "--build-vocab"])
    assert bad.exit_code != 0 and "--build-vocab" in bad.output and "--vocab" in bad.output
    bad = run(app, ["explain", str(d["space"]), "--text", "a dog"])
    assert bad.exit_code != 0 and "--build-vocab" in bad.output


def test_centring_the_space_embeds_its_vocabulary_again(data, shared_cache):
    from anybind.robust import centred

    d, _, recs = data
    words = vocabulary(recs)[:30]
    sp = Space.load(d["space"])
    sp.vocabulary = embed_vocabulary(sp, words, cache=shared_cache)
    c = centred(sp, load_manifest(d["manifest"], modalities=sp.modalities), cache=shared_cache)
    assert modality_identity(c, "text") != modality_identity(sp, "text")
    assert c.vocabulary.fits(c) and c.vocabulary.words == tuple(words)
    assert np.allclose(c.vocabulary.vectors, c.embed("text", words, cache=shared_cache), atol=1e-6)


def test_the_explanations_bench_stores_its_vocabulary_once_and_its_words_answer_as_embedded_afresh(
        data, shared_cache, tmp_path):
    from anybind.bench.tasks_trust import vocabulary_space

    d, space, recs = data
    words = vocabulary([r for r in recs if r.split == "train"])
    sp, voc, how = vocabulary_space(Space.load(d["space"]), words, tmp_path / "space", source="train",
                                    cache=shared_cache)
    assert how == "built and stored" and voc is sp.vocabulary and voc.words == tuple(words)
    assert {WORDS_FILE, VECTORS_FILE} <= {p.name for p in (tmp_path / "space").iterdir()}
    assert stored_vocabulary(Space.load(tmp_path / "space")).words == tuple(words)
    images = [r.values["image"] for r in recs if r.split == "test" and r.has("image")]
    got = nearest_words(sp, "image", images, voc.words, k=5, embedded_words=voc.vectors)
    fresh = nearest_words(space, "image", images, words, k=5, cache=shared_cache)
    assert [[w for w, _ in ws] for ws in got] == [[w for w, _ in ws] for ws in fresh]
    assert np.allclose([[s for _, s in ws] for ws in got], [[s for _, s in ws] for ws in fresh], atol=1e-5)
    # a space that stores these words keeps them (nothing embedded or written again); other words: built anew
    again = vocabulary_space(sp, words, tmp_path / "other", cache=shared_cache)
    assert again[2] == "stored" and again[1] is voc and not (tmp_path / "other").exists()
    fewer = vocabulary_space(sp, words[:10], None, cache=shared_cache)  # no folder: built, kept in memory only
    assert fewer[2] == "built" and fewer[1].words == tuple(words[:10])
    assert sp.vocabulary is voc  # the given space keeps its own vocabulary

"""Explanations (issue 20): leave-one-word-out drops say which words of a caption drove its match, and the
nearest vocabulary words give a lexical view of an embedding -- on a small real Tux Paint space."""

import numpy as np
import pytest

from anybind.data.manifest import load_manifest
from anybind.errors import DataError
from anybind.explain import STOPWORDS, nearest_words, read_vocabulary, vocabulary, word_drops
from anybind.space import Space


@pytest.fixture(scope="module")
def data(serve_small):
    d = serve_small
    space = Space.load(d["space"])
    return d, space, load_manifest(d["manifest"], modalities=space.modalities).records


def test_the_content_word_drives_a_caption_s_match_with_its_image(data, shared_cache):
    _, space, recs = data
    content, n = 0, 0
    for r in recs:
        full, drops = word_drops(space, "text", r.values["text"], "image", r.values["image"], cache=shared_cache)
        assert [d.word for d in drops] == [r.values["text"][d.start : d.end] for d in drops]
        assert full == pytest.approx(float(space.similarity("text", [r.values["text"]], "image", [r.values["image"]],
                                                            cache=shared_cache)[0, 0]), abs=1e-5)
        if len(drops) >= 2:
            n += 1
            content += max(drops, key=lambda d: d.drop).word.lower() not in STOPWORDS
    # measured 34 of 36 on this corpus: the article "A" almost never matters more than the noun
    assert n >= 20 and content >= 0.8 * n
    # the image's own embedding is accepted in place of the file, with the same answer
    r = recs[0]
    x = space.embed("image", [r.values["image"]], cache=shared_cache)[0]
    a = word_drops(space, "text", r.values["text"], "image", r.values["image"], cache=shared_cache)
    b = word_drops(space, "text", r.values["text"], "image", x, cache=shared_cache)
    assert a[0] == pytest.approx(b[0]) and [d.drop for d in a[1]] == pytest.approx([d.drop for d in b[1]])


def test_a_one_word_text_s_word_carries_the_whole_score_and_no_words_is_an_error(data, shared_cache):
    _, space, recs = data
    full, drops = word_drops(space, "text", "frog", "image", recs[0].values["image"], cache=shared_cache)
    assert len(drops) == 1 and drops[0].drop == pytest.approx(full)
    with pytest.raises(DataError, match="no words"):
        word_drops(space, "text", " ... ", "image", recs[0].values["image"])


def test_nearest_words_of_a_caption_hold_its_own_words(data, shared_cache):
    _, space, recs = data
    words = vocabulary(recs)
    assert words == sorted(set(words)) and not set(words) & STOPWORDS and "animals" in words  # labels' words too
    res = nearest_words(space, "text", [r.values["text"] for r in recs], words, k=5, cache=shared_cache)
    hits = 0
    for r, ws in zip(recs, res):
        assert len(ws) == 5 and [s for _, s in ws] == sorted((s for _, s in ws), reverse=True)
        hits += bool({w for w, _ in ws} & set(vocabulary([r], labels=False)))
    assert hits >= 0.8 * len(recs)
    X = space.embed("image", [r.values["image"] for r in recs[:3]], cache=shared_cache)
    assert nearest_words(space, "image", X, words, k=2, cache=shared_cache) == \
        nearest_words(space, "image", [r.values["image"] for r in recs[:3]], words, k=2, cache=shared_cache)
    with pytest.raises(DataError):
        nearest_words(space, "image", X, [], cache=shared_cache)
    assert isinstance(res[0][0][1], float) and np.isfinite(res[0][0][1])


def test_read_vocabulary_from_a_manifest_or_a_words_file(data, tmp_path):
    d, _, recs = data
    assert read_vocabulary(d["manifest"]) == vocabulary(recs)
    f = tmp_path / "words.txt"
    f.write_text("# animals\ndog\n\ncat\ndog\n")
    assert read_vocabulary(f) == ["cat", "dog"]
    f.write_text("# nothing\n")
    with pytest.raises(DataError, match="no words"):
        read_vocabulary(f)
    with pytest.raises(DataError, match="no such vocabulary"):
        read_vocabulary(tmp_path / "missing.txt")


def test_cli_explain_prints_drops_and_nearest_words_as_json(data, shared_cache):
    import json

    from typer.testing import CliRunner

    from anybind.cli import app

    d, space, recs = data
    r = next(r for r in recs if r.has("image") and len(r.values["text"].split()) >= 2)
    args = ["explain", str(d["space"]), "--text", r.values["text"], "--image", str(r.values["image"]),
            "--vocab", str(d["manifest"]), "-k", "3", "--cache", str(shared_cache), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.strip()]
    assert [x["modality"] for x in rows] == ["text", "image"]
    img = rows[1]
    full, drops = word_drops(space, "text", r.values["text"], "image", r.values["image"], cache=shared_cache)
    assert img["score"] == pytest.approx(full, abs=1e-4)
    assert [x["word"] for x in img["drops"]] == [x.word for x in drops]
    want = nearest_words(space, "image", [r.values["image"]], vocabulary(recs), k=3, cache=shared_cache)[0]
    assert [w["word"] for w in img["words"]] == [w for w, _ in want] and len(rows[0]["words"]) == 3
    # the plain form names the words; nothing to explain, or an unbound modality, is one line
    plain = CliRunner().invoke(app, args[:-1])
    assert plain.exit_code == 0 and "nearest words:" in plain.output and "without each word:" in plain.output
    for bad, says in ((["explain", str(d["space"])], "nothing to explain"),
                      (["explain", str(d["space"]), "--text", "a dog"], "--vocab"),
                      (["explain", str(d["space"]), "--text", "a dog", "--item", "smell=x"], "no 'smell'")):
        out = CliRunner().invoke(app, bad)
        assert out.exit_code != 0 and says in out.output, out.output


def test_words_of_keeps_the_most_frequent_words_when_capped():
    from anybind.explain import words_of

    texts = ["zebra zebra zebra", "apple apple", "mango", "kiwi"]
    assert words_of(texts) == ["apple", "kiwi", "mango", "zebra"]
    assert words_of(texts, max_words=2) == ["apple", "zebra"]  # the two most frequent, sorted
    assert words_of(texts, max_words=3) == ["apple", "kiwi", "zebra"]  # ties broken alphabetically

"""``anybind bench --task captioning``'s rows (anybind.bench.tasks_caption): one source scored by every
system, and the speech rows from the spoken-captions test split.  The corpus and captioner:
tests/caption_fixtures.py."""

import numpy as np
import pytest

from anybind.caption import cider_d
from anybind.caption.scores import cider_d_items
from anybind.errors import DataError

from caption_fixtures import COLORS, COUNTS, SHAPES


def test_bench_rows_of_one_source(corpus, captioner):
    """bench --task captioning scores each source (here the sketch modality) the same way: the captioner chosen on
    val, the training-free retrieval prompt, retrieval captioning, and the references (the upper bound)."""
    from anybind.bench.tasks_caption import _rows, decoders
    from anybind.data.manifest import Record

    tmp, man, space, lm, recs = corpus
    test = [Record(r["id"], "test", {"sketch": r["id"], "text": r["text"]}) for r in recs if r["split"] == "test"]
    lm_systems = decoders(captioner, {0: captioner}, 2)
    rows, systems, secs, X = _rows(space, lm_systems, "sketch", test, tmp / "c", {"max_tokens": 12})
    names = list(rows)
    assert names == ["anybind captioner, retrieval k=0 (projection memory; k chosen on val)",
                     "training-free retrieval prompt (k=2, frozen LM, no mapper)",
                     "retrieval (nearest train caption)", "reference captions (upper bound of R@1)"]
    assert systems[names[1]] == captioner.decode(X, max_tokens=12, retrieval_k=2, prefix=False, projection="none")
    assert systems[names[0]] == captioner.caption("sketch", [t.id for t in test], cache=tmp / "c", max_tokens=12,
                                                  mode="mapper")
    # retrieval captioning is the library's nearest mode (one mechanism), cut to max_tokens as users get it
    ids = [t.id for t in test]
    assert systems[names[2]] == captioner.caption("sketch", ids, cache=tmp / "c", max_tokens=12, mode="nearest")
    short = _rows(space, {names[2]: lm_systems[names[2]]}, "sketch", test, tmp / "c", {"max_tokens": 2})[1][names[2]]
    assert short == captioner.caption("sketch", ids, cache=tmp / "c", max_tokens=2, mode="nearest")
    assert all(len(captioner.lm.tokenizer(c, add_special_tokens=False)["input_ids"]) == 2 for c in short)
    ref = rows["reference captions (upper bound of R@1)"]
    texts = [t.values["text"] for t in test]
    assert ref["CIDEr-D"] == pytest.approx(cider_d(texts, [[t] for t in texts]))  # 3-word captions: 7.5, not 10
    assert all(ref["CIDEr-D"] >= v["CIDEr-D"] for v in rows.values())
    assert all(set(v) == {"BLEU-4", "CIDEr-D", "text->sketch/R@1"} for v in rows.values())
    assert rows[names[0]]["CIDEr-D"] > rows[names[1]]["CIDEr-D"] and secs >= 0 and X.shape == (len(test), space.dim)


def test_bench_speech_rows_come_from_the_spoken_captions_test_split(tmp_path):
    """bench --task captioning --opt sources=image,audio,speech: the speech rows are the spoken-captions corpus'
    test clips (held-out voices), the image and audio rows the Tux Paint test split; no records, one line."""
    from anybind.bench.tasks_caption import _test_records
    from anybind.data.manifest import Manifest, Record

    tux = Manifest(tmp_path / "tux.jsonl", [
        Record("bear", "test", {"image": "bear.png", "audio": "bear.ogg", "text": "A bear."}),
        Record("cat", "test", {"image": "cat.png", "text": "A cat."}),
        Record("dog", "train", {"image": "dog.png", "audio": "dog.ogg", "text": "A dog."}),
    ], [], {})
    speech = Manifest(tmp_path / "speech.jsonl", [
        Record(f"{a}@{v}", split, {"speech": f"{a}-{v}.wav", "text": f"A {a}.", "image": f"{a}.png"},
               labels={"voice": v})
        for a, v, split in [("bear", "en+m1", "train"), ("bear", "en+f3", "test"), ("cat", "en+f3", "test"),
                            ("cat", "en+m7", "val")]
    ] + [Record("bear-1@en+f3", "test", {"speech": "bear-en+f3.wav", "text": "A bear.", "image": "bear-1.png"},
               labels={"voice": "en+f3"})],
        [], {})  # a second image of the same caption, the same clip in the same voice: one speech row
    assert [r.id for r in _test_records("image", tux, speech)] == ["bear", "cat"]
    assert [r.id for r in _test_records("audio", tux, speech)] == ["bear"]
    got = _test_records("speech", tux, speech)
    assert [r.id for r in got] == ["bear-1@en+f3", "cat@en+f3"] and {r.labels["voice"] for r in got} == {"en+f3"}
    assert [r.id for r in _test_records("speech", tux, speech, n_test=1)] == ["bear-1@en+f3"]
    with pytest.raises(DataError, match="no speech corpus"):
        _test_records("speech", tux, None)
    with pytest.raises(DataError, match=r"tux.jsonl: no audio test records with captions"):
        _test_records("audio", Manifest(tmp_path / "tux.jsonl", tux.records[1:], [], {}), speech)


def test_bench_speech_rows_on_a_tiny_spoken_corpus(corpus, captioner, tmp_path, monkeypatch):
    """The bench's speech rows end to end on a tiny spoken corpus: "speech" (clip vectors: the scene in a third
    basis, a voice offset and noise) added to the space through text from the train voice, as the bench adds
    Whisper features; its held-out-voice test clips (one row per distinct clip) captioned by the same systems as the
    other sources, no label bridge; the scores are those of the clips' own embeddings."""
    from anybind.bench.tasks_caption import NEAREST, _test_records, decoders, source_result, vs_nearest
    from anybind.data.manifest import Manifest, Record

    tmp, _, space, lm, recs = corpus
    rng = np.random.default_rng(1)
    basis, voice = rng.normal(size=(9, 20)), {v: rng.normal(size=20) for v in ("v1", "t1")}

    def clip(caption, v):
        w = caption.rstrip(".").split()
        z = np.zeros(9)
        z[COUNTS.index(w[0])] = z[2 + COLORS.index(w[1])] = z[6 + SHAPES.index(w[2].rstrip("s"))] = 1.0
        return z @ basis + 0.5 * voice[v] + 0.2 * rng.normal(size=20)

    sp_recs, keys, vecs = [], [], []
    for r in recs:
        v = "t1" if r["split"] == "test" else "v1"
        key = f"{r['id']}@{v}.wav"
        keys.append(key)
        vecs.append(clip(r["text"], v))
        sp_recs.append(Record(f"{r['id']}@{v}", r["split"], {"speech": key, "text": r["text"]}, labels={"voice": v}))
    first = next(r for r in sp_recs if r.split == "test")  # a second record of the same caption shares its clip
    sp_recs.append(Record(f"{first.id}-copy", "test", dict(first.values), labels={"voice": "t1"}))
    np.savez(tmp_path / "speech.npz", ids=np.array(keys), vectors=np.asarray(vecs, np.float32))
    speech = Manifest(tmp_path / "speech.jsonl", sp_recs, [], {})
    space2 = space.add_modality("speech", f"vectors:{tmp_path / 'speech.npz'}", speech, anchors=["text"],
                                cache=tmp / "c", seed=0)
    test = _test_records("speech", None, speech)
    assert len(test) == len([r for r in recs if r["split"] == "test"]) and first.id in [r.id for r in test]
    lm_systems = decoders(captioner, {0: captioner}, 2)
    res = source_result(space2, lm_systems, "speech", test, tmp / "c",
                        {"max_tokens": 12}, lambda t: len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]))
    names = [n.split(": ", 1)[1] for n in res["rows"]]
    assert all(n.startswith("speech->caption: ") for n in res["rows"])
    assert names == ["anybind captioner, retrieval k=0 (projection memory; k chosen on val)",
                     "training-free retrieval prompt (k=2, frozen LM, no mapper)",
                     "retrieval (nearest train caption)", "reference captions (upper bound of R@1)"]
    X = space2.embed("speech", [r.values["speech"] for r in test], cache=tmp / "c")
    np.testing.assert_array_equal(res["X"], X)
    assert res["generated"] == captioner.decode(X, max_tokens=12)
    rows = {n.split(": ", 1)[1]: v for n, v in res["rows"].items()}
    assert all(set(v) == {"BLEU-4", "CIDEr-D", "text->source R@1"} for v in rows.values())
    refs = [[r.values["text"]] for r in test]
    nearest = captioner.decode(X, mode="nearest", max_tokens=12)
    assert rows["retrieval (nearest train caption)"]["CIDEr-D"] == pytest.approx(cider_d(nearest, refs))
    # the clips carry their scenes through the space: far better than the same captions given to other clips
    shuffled = nearest[1:] + nearest[:1]
    assert cider_d(nearest, refs) > 2 * cider_d(shuffled, refs) and rows["reference captions (upper bound of R@1)"][
        "text->source R@1"] > 5 / len(test)
    m = res["metrics"]
    assert m["speech->caption/n_test"] == len(test) and m["speech->caption/CIDEr-D"] == rows[names[0]]["CIDEr-D"]
    assert m["speech->caption/R@1"] == rows[names[0]]["text->source R@1"] and m["speech->caption/tokens_per_s"] > 0
    # each system's paired interval of CIDEr-D minus the nearest caption's, over the same clips; the main one a metric
    ci = res["vs_nearest"]
    assert list(ci) == names[:2]
    own = np.array(cider_d_items(res["generated"], refs)) - np.array(cider_d_items(nearest, refs))
    lo, hi = ci[names[0]]
    assert lo <= own.mean() <= hi and lo < hi
    assert (m["speech->caption/CIDEr-D minus nearest/lo"], m["speech->caption/CIDEr-D minus nearest/hi"]) == (lo, hi)
    assert vs_nearest({"a": nearest, NEAREST: nearest}, refs) == {"a": (0.0, 0.0)}  # the same captions: no difference
    assert vs_nearest({"a": nearest}, refs) == {}
    assert res["tokens"] == sum(len(lm.tokenizer(g, add_special_tokens=False)["input_ids"]) + 1 for g in res["generated"])
    # the row users get by default: speech has no val choice in this captioner (the mapper: the first row's captions)
    from anybind.bench.tasks_caption import default_row

    name, row, caps = default_row(captioner, "speech", res, lm_systems, 2, space2, test, tmp / "c",
                                  {"max_tokens": 12})
    assert name == "speech->caption: default (chosen on val: mapper: no val choice for speech)"
    assert row == res["rows"][f"speech->caption: {names[0]}"] and caps == res["generated"]
    choice = {"mode": "nearest", "val_cider_d": {"mapper": 0.1, "prompt": 0.2, "nearest": 0.3}, "n_val": 5}
    monkeypatch.setitem(captioner.modes, "speech", choice)
    name, row, caps = default_row(captioner, "speech", res, lm_systems, 2, space2, test, tmp / "c",
                                  {"max_tokens": 12})
    assert caps == nearest and name == ("speech->caption: default (chosen on val: nearest; val CIDEr-D on 5 items: mapper 0.100, "
                    "prompt 0.200, nearest 0.300)")
    assert row["CIDEr-D"] == pytest.approx(cider_d(captioner.decode(X, mode="nearest"), refs))

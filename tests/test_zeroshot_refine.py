"""Zero-shot class vectors refined on unlabelled target-domain items (balanced self-training), then frozen and applied
item by item (issue 16)."""

import json

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from anybind.encoders.base import get_encoder
from anybind.errors import DataError, SpaceError
from anybind.zeroshot import ZeroShotClassifier
from anybind.zeroshot_adapt import balanced_assignments, refine_class_vectors

from toy_spaces import photo_space

CLASSES = ["dog", "bicycle", "violin", "mountain", "teapot", "lighthouse"]


def _drifted(tmp_path, n=240, drift=0.9, noise=0.2, seed=0):
    """A text-aligned toy space whose 'photos' of class c sit at its prompt's embedding plus ``drift`` times the next
    class's, plus noise within the prompts' span: each class's photos cluster around their own centre, but the
    nearest prompt often is the next class's.  Splits: train (the unlabelled set), test (scored)."""
    E = get_encoder("text:minilm").encode([f"a {c}." for c in CLASSES])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    ids, vecs, lines = [], [], []
    for split in ("train", "test"):
        for i in range(n):
            c = i % len(CLASSES)
            ids.append(f"{split}{i}")
            vecs.append(E[c] + drift * E[(c + 1) % len(CLASSES)] + noise * rng.normal(size=len(CLASSES)) @ E)
            lines.append({"id": f"{split}{i}", "split": split, "photo": True, "labels": {"kind": CLASSES[c]}})
    return photo_space(tmp_path, ids, vecs, lines)


@pytest.fixture
def drifted(tmp_path):
    return _drifted(tmp_path)


def test_refined_class_vectors_beat_balancing_alone_where_items_cluster_away_from_the_prompts(drifted, tmp_path):
    space, man = drifted
    cache = tmp_path / "c"
    train, test = man.split("train"), man.split("test")
    for r in train:  # the unlabelled set's labels are never read
        r.labels.clear()
    bal = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."]).calibrate(train, cache=cache)
    ref = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."], refine=0.5).calibrate(
        train, cache=cache)
    a_bal = bal.evaluate(test, "kind", cache=cache)["accuracy"]
    a_ref = ref.evaluate(test, "kind", cache=cache)["accuracy"]
    assert a_bal < 0.7 and a_ref >= a_bal + 0.1
    info = ref.calibration_["refine"]
    assert info["mix"] == 0.5 and 1 <= info["rounds"] <= 10 and "refine" not in bal.calibration_
    text = bal.class_vectors(cache)
    np.testing.assert_allclose(np.linalg.norm(ref.class_vectors(cache), axis=1), 1, atol=1e-5)
    assert not np.allclose(ref.class_vectors(cache), text)  # moved towards the items
    # inductive: an item's prediction does not depend on the batch it comes in; evaluate == predict
    one = [ref.predict([r], cache=cache)[0] for r in test[:12]]
    assert one == ref.predict(test, cache=cache)[:12]
    truth = [r.labels["kind"] for r in test]
    assert np.mean([p == t for p, t in zip(ref.predict(test, cache=cache), truth)]) == pytest.approx(a_ref)
    # mix 0: the text vectors alone (exactly the balanced classifier)
    zero = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."], refine=0.0).calibrate(
        train, cache=cache)
    np.testing.assert_array_equal(zero.bias_, bal.bias_)


def test_a_refined_classifier_saves_and_loads_its_class_vectors(drifted, tmp_path):
    space, man = drifted
    cache = tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", refine=0.75, refine_rounds=4).calibrate(
        man.split("train"), cache=cache)
    path = clf.save(tmp_path / "clf")
    back = ZeroShotClassifier.load(path, space)
    assert (back.refine, back.refine_rounds) == (0.75, 4)
    np.testing.assert_array_equal(back.class_vectors(), clf.class_vectors())
    assert back.predict(man.split("test"), cache=cache) == clf.predict(man.split("test"), cache=cache)
    # an unrefined classifier of format version 1 (no refine keys, no class vectors) still loads
    plain = ZeroShotClassifier(space, CLASSES, modality="photo").calibrate(man.split("train"), cache=cache)
    p1 = plain.save(tmp_path / "v1")
    meta = json.loads((p1 / "classifier.json").read_text())
    for k in ("refine", "refine_rounds"):
        meta.pop(k)
    meta["format_version"] = 1
    (p1 / "classifier.json").write_text(json.dumps(meta))
    old = ZeroShotClassifier.load(p1, space)
    assert old.refine == 0 and old.refined_ is None and old.predict(man.split("test"), cache=cache) == plain.predict(
        man.split("test"), cache=cache)
    # class vectors missing from a refined classifier's file: refused naming the file
    from safetensors.numpy import load_file, save_file

    t = load_file(str(path / "bias.safetensors"))
    t.pop("class_vectors")
    save_file(t, str(path / "bias.safetensors"))
    with pytest.raises(SpaceError, match="no class_vectors for a classifier refined") as e:
        ZeroShotClassifier.load(path, space)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kw, message", [({"refine": 1.5}, "refine mix 1.5"), ({"refine": True}, "refine mix True"),
                                         ({"refine_rounds": 0}, "refine rounds 0"),
                                         ({"refine_rounds": 2.5}, "refine rounds 2.5")])
def test_bad_refine_options_are_refused_in_one_line(drifted, kw, message):
    space, _ = drifted
    with pytest.raises(DataError, match=message) as e:
        ZeroShotClassifier(space, CLASSES, modality="photo", **kw)
    assert "\n" not in str(e.value)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(12, 60), k=st.integers(2, 6), t=st.floats(1, 50), seed=st.integers(0, 2**16))
@example(n=12, k=2, t=50.0, seed=167)  # 1,000 Sinkhorn iterations left it 0.003 off its shares (CI, 12-06)
def test_balanced_assignments_give_each_item_one_unit_and_each_class_its_share(n, k, t, seed):
    rng = np.random.default_rng(seed)
    S = rng.uniform(-1, 1, size=(n, k))
    prior = rng.uniform(0.5, 2, size=k)
    prior /= prior.sum()
    A = balanced_assignments(S, prior, t)
    np.testing.assert_allclose(A.sum(1), 1, atol=1e-9)
    np.testing.assert_allclose(A.mean(0), prior, atol=1e-3)
    C, _ = refine_class_vectors(np.eye(k, 8), rng.normal(size=(n, 8)), prior, t, mix=0.5, rounds=3)
    assert C.shape == (k, 8) and np.all(np.isfinite(C))


def test_cli_balance_refine_then_eval_with_the_classifier(drifted, tmp_path):
    from typer.testing import CliRunner

    from anybind import Space
    from anybind.cli import app

    space, man = drifted
    space.save(tmp_path / "sp")
    cache = str(tmp_path / "c")
    runner = CliRunner()
    common = ["balance", str(tmp_path / "sp"), "--on", str(tmp_path / "m.jsonl"), "--modality", "photo",
              "--cache", cache, "--classes-from", str(tmp_path / "m.jsonl"), "--label", "kind"]
    for extra, out in (([], "bal"), (["--refine", "0.5"], "ref")):
        r = runner.invoke(app, [*common, *extra, "-o", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
    assert "class vectors refined first: prototype weight 0.5" in r.output
    r = runner.invoke(app, [*common, "--refine", "2", "-o", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "refine mix 2" in r.output and not (tmp_path / "bad").exists()
    acc = {}
    for out in ("bal", "ref"):
        r = runner.invoke(app, ["eval", str(tmp_path / "sp"), str(tmp_path / "m.jsonl"), "--zero-shot", "kind",
                                "--classifier", str(tmp_path / out), "--no-diagnostics", "--cache", cache,
                                "--json", str(tmp_path / f"{out}.json")])
        assert r.exit_code == 0, r.output
        acc[out] = json.loads((tmp_path / f"{out}.json").read_text())["zeroshot/photo/kind/classifier/accuracy"]
    clf = ZeroShotClassifier.load(tmp_path / "ref", Space.load(tmp_path / "sp"))
    assert acc["ref"] == clf.evaluate(man.split("test"), "kind", cache=cache)["accuracy"] >= acc["bal"] + 0.1


def test_zero_shot_with_given_class_vectors_checks_them(drifted, tmp_path):
    from anybind.evaluate import zero_shot

    space, man = drifted
    test, cache = man.split("test"), tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", refine=0.5).calibrate(man.split("train"), cache=cache)
    got = zero_shot(space, test, "photo", "kind", classes=CLASSES, vectors=clf.class_vectors(), cache=cache)
    truth = [r.labels["kind"] for r in test]
    want = np.mean([CLASSES[i] == t for i, t in zip(clf.raw_scores(test, cache).argmax(1), truth)])
    assert got["accuracy"] == pytest.approx(want)
    for kw, message in (({"classes": CLASSES, "vectors": clf.class_vectors()[:2]}, r"class vectors of shape \(2, 384\)"),
                        ({"vectors": clf.class_vectors()}, "vectors needs classes=")):
        with pytest.raises(DataError, match=message) as e:
            zero_shot(space, test, "photo", "kind", cache=cache, **kw)
        assert "\n" not in str(e.value)


def test_index_classify_with_a_refined_classifier_ranks_as_it_predicts(drifted, tmp_path):
    """Index.classify(bias=clf) and zero_shot_topk(bias=clf) score against the classifier's own class vectors: a
    refined classifier's (they re-embedded its class text, so ranked the items otherwise than clf.predict)."""
    from anybind.index import Index
    from anybind.index.classify import zero_shot_topk

    space, man = drifted
    cache = tmp_path / "c"
    test = man.split("test")
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."], refine=0.5).calibrate(
        man.split("train"), cache=cache)
    ix = Index.build(space, man, tmp_path / "ix", modalities=["photo"], cache=cache, ann=False, split="test")
    got = {r["id"]: r for r in ix.classify(CLASSES, k=len(CLASSES), cache=cache, bias=clf)}
    raw = clf.raw_scores(test, cache=cache)
    pred = clf.predict(test, cache=cache)
    assert pred != ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."]).predict(test, cache=cache)
    for r, s, p in zip(test, raw, pred):
        row = dict(got[r.id]["classes"])
        assert got[r.id]["classes"][0][0] == p
        assert [row[c] for c in CLASSES] == pytest.approx(s.tolist(), abs=1e-5)  # the raw scores, refined vectors
    X = space.embed("photo", [r.values["photo"] for r in test], cache=cache)
    S, top = zero_shot_topk(space, X, CLASSES, k=1, cache=cache, bias=clf)
    assert [CLASSES[i] for i in top[:, 0]] == pred


def test_zero_shot_with_given_class_vectors_embeds_no_class_text_and_checks_them_first(drifted, tmp_path,
                                                                                        monkeypatch):
    """zero_shot(vectors=) embedded the class prompts and threw them away, and checked the vectors only after every
    item was embedded (a wrong shape failed after the whole test split was encoded)."""
    from anybind.evaluate import zero_shot

    space, man = drifted
    test, cache = man.split("test"), tmp_path / "c"
    V = ZeroShotClassifier(space, CLASSES, modality="photo", refine=0.5).calibrate(
        man.split("train"), cache=cache).class_vectors()
    embedded = []
    real = space.embed
    monkeypatch.setattr(space, "embed", lambda m, values, **kw: embedded.append(m) or real(m, values, **kw))
    with pytest.raises(DataError, match=r"class vectors of shape \(2, 384\)"):
        zero_shot(space, test, "photo", "kind", classes=CLASSES, vectors=V[:2], cache=cache)
    assert embedded == []
    got = zero_shot(space, test, "photo", "kind", classes=CLASSES, vectors=V, cache=cache)
    assert embedded == ["photo"] and got["n"] == len(test)

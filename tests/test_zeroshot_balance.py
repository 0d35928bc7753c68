"""Zero-shot class biases balanced on unlabelled target-domain items, then applied item by item (issue 16)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from anybind import Space
from anybind.encoders.base import get_encoder
from anybind.errors import DataError, SpaceError
from anybind.evaluate import evaluate, zero_shot
from anybind.zeroshot import ZeroShotClassifier, fit_bias, softmax

from toy_spaces import photo_space

CLASSES = ["dog", "bicycle", "violin", "mountain", "teapot", "lighthouse"]
HUB = "dog"


def _skewed(tmp_path, n=240, shift=0.9, noise=0.35, seed=0):
    """A text-aligned toy space whose 'photos' (class text embedding + noise) all carry a shared shift towards one
    class's prompt ('dog'): a domain whose zero-shot predictions collapse onto a hub.  Splits: train (the unlabelled
    balancing set), test (scored)."""
    txt = get_encoder("text:minilm")
    E = txt.encode([f"a {c}." for c in CLASSES])
    rng = np.random.default_rng(seed)
    ids, vecs, lines = [], [], []
    for split in ("train", "test"):
        for i in range(n):
            c = i % len(CLASSES)
            v = E[c] + shift * E[CLASSES.index(HUB)] + noise * rng.normal(size=E.shape[1])
            ids.append(f"{split}{i}")
            vecs.append(v)
            lines.append({"id": f"{split}{i}", "split": split, "photo": True, "labels": {"kind": CLASSES[c]}})
    return photo_space(tmp_path, ids, vecs, lines)


def _balanced_accuracy(zs):
    M = np.asarray(zs["confusion"], float)
    return float(np.mean(np.diag(M) / M.sum(1)))


@pytest.fixture
def skewed(tmp_path):
    return _skewed(tmp_path)


def test_balancing_on_unlabelled_items_undoes_a_hub_and_raises_balanced_accuracy(skewed, tmp_path):
    space, man = skewed
    cache = tmp_path / "c"
    train, test = man.split("train"), man.split("test")
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."])
    plain = zero_shot(space, test, "photo", "kind", classes=CLASSES, templates=["a {}."], cache=cache)
    assert clf.evaluate(test, "kind", cache=cache)["confusion"] == plain["confusion"]  # before calibrate: plain
    hub_share = np.asarray(plain["confusion"])[:, 0].sum() / len(test)
    assert hub_share > 0.4  # the shift collapses predictions onto 'dog'
    # labels of the balancing set are never read: strip them
    for r in train:
        r.labels.clear()
    clf.calibrate(train, cache=cache)
    after = np.asarray(clf.calibration_["predicted_after"])
    assert np.asarray(clf.calibration_["predicted_before"])[0] == max(clf.calibration_["predicted_before"])
    assert after.max() - after.min() <= len(train) // len(CLASSES)  # close to uniform on the balancing set
    np.testing.assert_allclose(clf.predict_proba(train, cache=cache).mean(0), 1 / len(CLASSES), atol=1e-5)
    bal = clf.evaluate(test, "kind", cache=cache)
    assert _balanced_accuracy(bal) > _balanced_accuracy(plain) + 0.15
    assert clf.bias_[0] == clf.bias_.min()  # the hub is pushed down
    # inductive: an item's prediction does not depend on the batch it comes in
    one = [clf.predict([r], cache=cache)[0] for r in test[:12]]
    assert one == clf.predict(test, cache=cache)[:12]


def test_a_given_prior_is_matched(skewed, tmp_path):
    space, man = skewed
    shares = {c: float(i + 1) for i, c in enumerate(CLASSES)}
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", prior=shares, temperature=20)
    clf.calibrate(man.split("train"), cache=tmp_path / "c")
    want = np.array(list(shares.values())) / sum(shares.values())
    np.testing.assert_allclose(clf.predict_proba(man.split("train"), cache=tmp_path / "c").mean(0), want, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 60), k=st.integers(2, 7), t=st.floats(0.5, 80), seed=st.integers(0, 10_000))
def test_fit_bias_matches_any_prior_on_any_scores(n, k, t, seed):
    rng = np.random.default_rng(seed)
    S = rng.uniform(-1, 1, size=(n, k))
    prior = rng.dirichlet(np.ones(k)) * 0.9 + 0.1 / k
    b, info = fit_bias(S, prior, t, max_iter=20000, tol=1e-9)
    assert abs(b.mean()) < 1e-9
    if info["converged"]:
        np.testing.assert_allclose(softmax(t * S + b).mean(0), prior, atol=1e-6)


def test_refusals_are_one_line(skewed, tmp_path):
    space, man = skewed
    cache = tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, modality="photo")
    cases = [
        (lambda: clf.calibrate([], cache=cache), "an unlabelled set of 0 items is too small"),
        (lambda: clf.calibrate(man.split("train")[:7], cache=cache), "7 items is too small to balance 6 classes"),
        (lambda: clf.calibrate(np.full((20, space.dim), np.nan, np.float32)), "item 0: its embedding holds NaN"),
        (lambda: clf.calibrate(np.zeros((20, 3), np.float32)), f"expected (n, {space.dim})"),
        (lambda: clf.calibrate("train0"), "not one string"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="audio"), "modality 'audio' is not in the space"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="text"), "is the text modality"),
        (lambda: ZeroShotClassifier(space, ["dog"], modality="photo"), "two or more distinct classes"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="photo", temperature=float("nan")), "temperature"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="photo", prior={"dog": 1}), "no share for 'bicycle'"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="photo", prior=[1, 1, 1, 1, 1, -1]), "positive"),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="photo", prior="skewed"), "'balanced'"),
        (lambda: zero_shot(space, man.split("test"), "photo", "kind", classes=CLASSES, bias=[0.1, 0.2], cache=cache),
         "2 offsets (finite: True) for 6 classes"),
        (lambda: zero_shot(space, man.split("test"), "photo", "kind", classes=CLASSES, bias=["x"] * 6, cache=cache),
         "bias: list is not numbers"),
        (lambda: zero_shot(space, man.split("test"), "photo", "kind", bias=[0.0] * 6, cache=cache),
         "bias needs classes="),
        (lambda: ZeroShotClassifier(space, CLASSES, modality="photo", prior={c: "x" for c in CLASSES}),
         "prior: 'x' is not a number"),
    ]
    for call, message in cases:
        with pytest.raises(DataError) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value)
    rec = man.split("test")[0]
    rec.values.pop("photo")
    with pytest.raises(DataError, match=r"^record test0: no 'photo' value to classify$"):
        clf.calibrate([rec] * 20, cache=cache)


def test_save_load_round_trip_and_refusals(skewed, tmp_path):
    space, man = skewed
    cache = tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, names={"dog": "puppy"}, modality="photo", temperature=7.5,
                             templates=["a photo of a {}.", "a {}."]).calibrate(man.split("train"), cache=cache)
    path = clf.save(tmp_path / "clf")
    from anybind import io as aio
    from anybind.errors import OutputError

    assert aio.artefact_kind(path) == "zero-shot"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a zero-shot classifier"):
        clf.save(tmp_path / "foreign")
    assert (tmp_path / "foreign" / "thesis.txt").read_text() == "mine"
    back = ZeroShotClassifier.load(path, space)
    assert (back.classes, back.names, back.templates, back.temperature) == (clf.classes, clf.names, clf.templates, 7.5)
    assert back.names[0] == "puppy"
    np.testing.assert_array_equal(back.bias_, clf.bias_)
    assert back.calibration_ == clf.calibration_
    test = man.split("test")
    assert back.predict(test, cache=cache) == clf.predict(test, cache=cache)
    # an uncalibrated classifier saves and loads as uncalibrated
    plain = ZeroShotClassifier.load(ZeroShotClassifier(space, CLASSES, modality="photo").save(tmp_path / "p"), space)
    assert plain.bias_ is None and not plain.offsets.any()
    # another space, a damaged file, a folder that is not a classifier
    (tmp_path / "o").mkdir()
    other, _ = _skewed(tmp_path / "o", shift=0.5)
    with pytest.raises(SpaceError, match="calibrate it again with this space"):
        ZeroShotClassifier.load(path, other)
    (path / "classifier.json").write_text("{not json")
    with pytest.raises(SpaceError, match="corrupt JSON"):
        ZeroShotClassifier.load(path, space)
    with pytest.raises(SpaceError, match="not a saved zero-shot classifier"):
        ZeroShotClassifier.load(tmp_path / "o", space)


def test_cli_balance_then_eval_with_the_classifier(skewed, tmp_path):
    from anybind.cli import app

    space, man = skewed
    space.save(tmp_path / "sp")
    runner = CliRunner()
    common = ["balance", str(tmp_path / "sp"), "--on", str(tmp_path / "m.jsonl"), "--modality", "photo",
              "--cache", str(tmp_path / "c")]
    r = runner.invoke(app, [*common, "--classes-from", str(tmp_path / "m.jsonl"), "--label", "kind",
                            "-o", str(tmp_path / "clf")])
    assert r.exit_code == 0, r.output
    assert "6 classes balanced on 240 unlabelled train items" in r.output
    r = runner.invoke(app, [*common, "--split", "test", "--class", "dog", "--class", "teapot", "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--split test" in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "sp"), str(tmp_path / "m.jsonl"), "--zero-shot", "kind",
                            "--classifier", str(tmp_path / "clf"), "--no-diagnostics", "--cache", str(tmp_path / "c"),
                            "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    # the library's evaluate gives the same, and balancing beats the plain zero-shot of the same run
    clf = ZeroShotClassifier.load(tmp_path / "clf", Space.load(tmp_path / "sp"))
    again = evaluate(Space.load(tmp_path / "sp"), tmp_path / "m.jsonl", zero_shot_label="kind", cache=tmp_path / "c",
                     zero_shot_classifier=clf)
    key = "zeroshot/photo/kind/classifier/accuracy"
    assert res[key] == again[key] > res["zeroshot/photo/kind/accuracy"] + 0.1


def test_index_classify_ranks_by_the_balanced_offsets(skewed, tmp_path):
    from anybind.index import Index
    from anybind.index.classify import zero_shot_topk

    space, man = skewed
    cache = tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."]).calibrate(man.split("train"), cache=cache)
    ix = Index.build(space, man, tmp_path / "ix", modalities=["photo"], cache=cache, ann=False, split="test")
    plain = ix.classify(CLASSES, modality="photo", templates=["a {}."], k=len(CLASSES), cache=cache)
    bal = ix.classify(CLASSES, modality="photo", templates=["a {}."], k=len(CLASSES), cache=cache, bias=clf.offsets)
    want = dict(zip((r.id for r in man.split("test")), clf.predict(man.split("test"), cache=cache)))
    assert {r["id"]: r["classes"][0][0] for r in bal} == want  # the classifier's own predictions, item by item
    assert {r["id"]: r["classes"][0][0] for r in plain} != want
    for p, b in zip(plain, bal):  # the scores shown stay raw: the same set, ranked differently
        pd, bd = dict(p["classes"]), dict(b["classes"])
        assert pd.keys() == bd.keys() and all(abs(pd[c] - bd[c]) < 1e-5 for c in pd)
    X = space.embed("photo", [r.values["photo"] for r in man.split("test")], cache=cache)
    S, top = zero_shot_topk(space, X, CLASSES, templates=["a {}."], k=1, cache=cache, bias=clf.offsets)
    assert [CLASSES[i] for i in top[:, 0]] == list(want.values())
    with pytest.raises(Exception, match=r"bias: 2 offsets \(finite: True\) for 6 classes") as e:
        ix.classify(CLASSES, modality="photo", cache=cache, bias=[0.0, 1.0])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("temperature", -1), ("modality", "audio"), ("classes", ["dog"]),
                                         ("prior_shares", [float("nan")] * 6), ("templates", ["no slot"])])
def test_a_tampered_classifier_json_is_refused_naming_the_file(skewed, tmp_path, field, value):
    space, man = skewed
    path = ZeroShotClassifier(space, CLASSES, modality="photo", prior=[1, 2, 3, 4, 5, 6]).calibrate(
        man.split("train"), cache=tmp_path / "c").save(tmp_path / "clf")
    meta = json.loads((path / "classifier.json").read_text())
    meta[field] = value
    (path / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match="damaged zero-shot classifier") as e:
        ZeroShotClassifier.load(path, space)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_scoring_the_items_the_biases_were_balanced_on_is_refused(skewed, tmp_path):
    from anybind.cli import app

    space, man = skewed
    cache = tmp_path / "c"
    train, test = man.split("train"), man.split("test")
    clf = ZeroShotClassifier(space, CLASSES, modality="photo").calibrate(train[:100], cache=cache)
    for scored in (train[90:140], test[:5] + train[99:100]):
        with pytest.raises(DataError, match=r"record train(90|99): .*balanced on") as e:
            clf.evaluate(scored, "kind", cache=cache)
        assert "\n" not in str(e.value)
    assert clf.evaluate(train[100:] + test, "kind", cache=cache)["n"] == 140 + len(test)  # disjoint: scored
    # saved and loaded, through anybind eval on the split it was balanced on
    back = ZeroShotClassifier.load(clf.save(tmp_path / "clf"), space)
    with pytest.raises(DataError, match="balanced on"):
        back.evaluate(train[:3], "kind", cache=cache)
    space.save(tmp_path / "sp")
    r = CliRunner().invoke(app, ["balance", str(tmp_path / "sp"), "--on", str(tmp_path / "m.jsonl"), "--modality",
                                 "photo", "--cache", str(cache), "--class", "dog", "--class", "teapot",
                                 "-o", str(tmp_path / "c2")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "sp"), str(tmp_path / "m.jsonl"), "--split", "train",
                                 "--zero-shot", "kind", "--classifier", str(tmp_path / "c2"), "--no-diagnostics",
                                 "--cache", str(cache)])
    assert r.exit_code != 0 and "balanced on" in r.output


def test_evaluate_reports_the_classifier_even_where_nothing_is_left_to_score(skewed, tmp_path):
    space, man = skewed
    clf = ZeroShotClassifier(space, CLASSES, modality="photo").calibrate(man.split("train"), cache=tmp_path / "c")
    res = evaluate(space, man, split="val", zero_shot_label="kind", cache=tmp_path / "c", zero_shot_classifier=clf)
    assert res["zeroshot/photo/kind/classifier/n"] == 0  # said, not silently left out
    assert "zeroshot/photo/kind/classifier/accuracy" not in res  # not an accuracy of NaN over no item
    res = evaluate(space, man, split="test", modalities=["text"], zero_shot_label="kind", cache=tmp_path / "c",
                   zero_shot_classifier=clf)
    assert res["zeroshot/photo/kind/classifier/n"] == len(man.split("test"))


def test_fit_bias_on_many_items_and_classes_holds_no_full_size_copies():
    import tracemalloc

    rng = np.random.default_rng(0)
    S = rng.uniform(-1, 1, size=(4000, 600)).astype(np.float32)  # 9.6 MB
    prior = np.full(600, 1 / 600)
    small, _ = fit_bias(S[:300], prior, 10, max_iter=3, block_floats=1000)  # blocks give the one-block answer
    np.testing.assert_allclose(small, fit_bias(S[:300], prior, 10, max_iter=3)[0], atol=1e-9)
    tracemalloc.start()
    fit_bias(S, prior, 10, max_iter=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * S.nbytes  # float64 copies of the (items x classes) scores would be 2x S each


def test_a_numpy_temperature_is_a_temperature(skewed, tmp_path):
    space, man = skewed
    for t in np.array([5, 20], np.float32).tolist() + list(np.array([5, 20], np.float32)) + [np.int64(20)]:
        clf = ZeroShotClassifier(space, CLASSES, modality="photo", temperature=t)
        assert clf.temperature == float(t) and type(clf.temperature) is float
        assert fit_bias(np.eye(6), np.full(6, 1 / 6), t)[1]["converged"]
    for bad in (True, np.bool_(True), "10", np.float32("nan")):
        with pytest.raises(DataError, match="temperature"):
            ZeroShotClassifier(space, CLASSES, modality="photo", temperature=bad)


def test_index_classify_checks_that_the_offsets_are_for_the_classes_given(skewed, tmp_path):
    """Offsets given as bare numbers could only be checked for their count: the classes in another order, or other
    classes of the same count, were ranked with offsets meant for other classes, silently.  Given the classifier (or
    a {class: offset} mapping) the offsets are matched to the classes by name; a mismatch is refused in one line
    naming what differs."""
    from anybind.index import Index
    from anybind.index.classify import zero_shot_topk
    from anybind.index.errors import IndexError_

    space, man = skewed
    cache = tmp_path / "c"
    clf = ZeroShotClassifier(space, CLASSES, modality="photo", templates=["a {}."]).calibrate(man.split("train"),
                                                                                              cache=cache)
    ix = Index.build(space, man, tmp_path / "ix", modalities=["photo"], cache=cache, ann=False, split="test")
    want = ix.classify(CLASSES, modality="photo", templates=["a {}."], k=3, cache=cache, bias=clf.offsets)
    # the classifier itself: its templates and modality by default; a mapping in any order
    assert ix.classify(CLASSES, k=3, cache=cache, bias=clf) == want
    mapping = dict(reversed(list(zip(CLASSES, clf.offsets))))
    assert ix.classify(CLASSES, modality="photo", templates=["a {}."], k=3, cache=cache, bias=mapping) == want
    X = space.embed("photo", [r.values["photo"] for r in man.split("test")], cache=cache)
    S, top = zero_shot_topk(space, X, CLASSES, k=1, cache=cache, bias=clf)
    assert [CLASSES[i] for i in top[:, 0]] == [r["classes"][0][0] for r in want]
    other = ["violin", "dog", *CLASSES[2:]]
    cases = [
        (dict(classes=CLASSES[::-1]), "bias: the classifier's classes in another order (class 0 is 'lighthouse' "
                                      "here, 'dog' in the classifier)"),
        (dict(classes=CLASSES[:5]), "bias: the classifier has 6 classes (dog, bicycle, violin, mountain, teapot, "
                                    "lighthouse), 5 given"),
        (dict(classes=["cat", *CLASSES[1:]]), "bias: 'cat' is not a class of the classifier (class 0 there is 'dog';"),
        (dict(classes=CLASSES, templates=["a photo of a {}."]), "bias: the classifier was balanced with the "
                                                                "templates ['a {}.'], not ['a photo of a {}.']"),
        (dict(classes=CLASSES, modality="text"), "bias: the classifier's offsets are for photo items"),
        (dict(classes=CLASSES, bias={c: 0.0 for c in CLASSES[1:]}), "bias: no offset for class 'dog'"),
        (dict(classes=CLASSES[:5], bias={c: 0.0 for c in CLASSES}), "bias: an offset for 'lighthouse', which is not "
                                                                    "one of the 5 classes given"),
        (dict(classes=other, bias=clf.offsets[::-1].copy()), None),  # bare numbers: only their count can be checked
    ]
    for kw, message in cases:
        kw = {"bias": clf, "cache": cache, **kw}
        if message is None:
            ix.classify(kw.pop("classes"), **kw)
            continue
        with pytest.raises(IndexError_) as e:
            ix.classify(kw.pop("classes"), **kw)
        assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_a_class_given_twice_is_refused_in_one_line(skewed):
    """Offsets for a class list holding one class twice (and so missing another): offsets_for ran out of classes to
    blame and raised a bare StopIteration (a 500 in the service); a {class: offset} mapping blamed the missing class's
    offset as 'not one of the classes given'."""
    from anybind.evaluate import check_offsets
    from anybind.index.classify import class_bias
    from anybind.index.errors import IndexError_

    space, _ = skewed
    clf = ZeroShotClassifier(space, CLASSES, modality="photo")
    dup = [CLASSES[0], *CLASSES[:-1]]
    with pytest.raises(DataError, match=r"^bias: class 'dog' is given twice \(6 classes given, each once\)"):
        clf.offsets_for(dup)
    with pytest.raises(DataError, match=r"^bias: class 'dog' is given twice"):
        check_offsets(dict(zip(CLASSES, range(6))), 6, dup)
    for bias in (clf, dict(zip(CLASSES, range(6)))):
        with pytest.raises(IndexError_, match=r"^bias: class 'dog' is given twice") as e:
            class_bias(space, dup, bias)
        assert "\n" not in str(e.value)

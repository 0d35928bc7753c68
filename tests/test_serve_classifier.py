"""A balanced zero-shot classifier in the service (issue 16): ``anybind serve --classifier NAME=DIR`` and
``/classify(/upload)`` with ``classifier``: the classifier's classes, prompt names, templates and balanced offsets,
answering as the library's :class:`~anybind.zeroshot.ZeroShotClassifier` does (real Tux Paint stamps, real encoders)."""

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from anybind.serve import ServeConfig, Service, create_app
from anybind.zeroshot import ZeroShotClassifier


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


@pytest.fixture(scope="module")
def svc(data, shared_cache):
    s = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    yield s
    s.close()


@pytest.fixture(scope="module")
def clf_dir(data, svc, shared_cache, tmp_path_factory):
    """Balanced on the train images (unlabelled: paths only) over the stamps' categories."""
    classes = sorted({r.labels["category"] for r in data["records"]})
    train = [r.values["image"] for i, r in enumerate(data["records"]) if i % 5 < 3]
    clf = ZeroShotClassifier(svc.space, classes, modality="image", temperature=10)
    clf.calibrate(train[: max(len(train), 2 * len(classes))], cache=shared_cache)
    return clf.save(tmp_path_factory.mktemp("clf") / "tux-categories")


@pytest.fixture(scope="module")
def refined_dir(data, svc, shared_cache, tmp_path_factory):
    """As clf_dir, its class vectors also refined on the train images (refine=0.5)."""
    classes = sorted({r.labels["category"] for r in data["records"]})
    train = [r.values["image"] for i, r in enumerate(data["records"]) if i % 5 < 3]
    clf = ZeroShotClassifier(svc.space, classes, modality="image", temperature=10, refine=0.5)
    clf.calibrate(train, cache=shared_cache)
    return clf.save(tmp_path_factory.mktemp("clf") / "tux-refined")


@pytest.fixture(scope="module")
def client(svc, clf_dir, refined_dir):
    with TestClient(create_app(service=svc, classifiers={"cats": clf_dir, "refined": refined_dir})) as c:
        yield c


def _test_images(data):
    return [r.values["image"] for i, r in enumerate(data["records"]) if i % 5 == 4][:3]


def _upload(client, path, labels, **form):
    return client.post("/classify/upload", data={"labels": labels, **form},
                       files=[("files", (Path(path).name, Path(path).read_bytes(), "image/png"))])


def test_an_upload_classified_with_the_classifier_answers_as_the_library_does(client, svc, clf_dir, data,
                                                                              shared_cache):
    clf = ZeroShotClassifier.load(clf_dir, svc.space)
    assert np.ptp(clf.offsets) > 0  # really balanced: the offsets move the ranking
    for path in _test_images(data):
        res = _upload(client, path, clf.classes, classifier="cats")
        assert res.status_code == 200, res.text
        out = res.json()
        assert out["classifier"] == "cats" and out["templates"] == clf.templates
        got = {c["label"]: c for c in out["results"]}
        raw = clf.raw_scores([path], cache=shared_cache)[0]
        proba = clf.predict_proba([path], cache=shared_cache)[0]
        for j, c in enumerate(clf.classes):
            assert got[c]["score"] == pytest.approx(float(raw[j]), abs=1e-5)
            assert got[c]["offset"] == pytest.approx(float(clf.offsets[j]), abs=1e-9)
            assert got[c]["probability"] == pytest.approx(float(proba[j]), abs=1e-5)
        ranked = [c["label"] for c in out["results"]]
        assert ranked[0] == clf.predict([path], cache=shared_cache)[0]
        assert all(a["score"] + a["offset"] >= b["score"] + b["offset"] - 1e-7
                   for a, b in zip(out["results"], out["results"][1:]))
        # no classifier, over its prompt names ('amphibians' for 'animals/amphibians'): the same raw scores as
        # before, no offsets, the space's softmax
        plain = _upload(client, path, clf.names).json()
        assert plain["classifier"] is None and all(c["offset"] is None for c in plain["results"])
        assert {c["label"]: c["score"] for c in plain["results"]} == pytest.approx(
            {n: float(raw[j]) for j, n in enumerate(clf.names)}, abs=1e-5)
        # the classifier named with its prompt names in its order: the same answer, labelled by them
        by_names = _upload(client, path, clf.names, classifier="cats").json()["results"]
        assert [c["probability"] for c in by_names] == pytest.approx([c["probability"] for c in out["results"]])
        assert sorted(c["probability"] for c in plain["results"]) != pytest.approx(
            sorted(c["probability"] for c in out["results"]), abs=1e-3)


def test_a_refined_classifier_answers_with_its_refined_class_vectors(client, svc, refined_dir, data, shared_cache):
    """The service scored a refined classifier's queries against its class text re-embedded, not its refined
    vectors: scores, probabilities and the top class differed from clf.predict_proba / predict."""
    clf = ZeroShotClassifier.load(refined_dir, svc.space)
    assert clf.refined_ is not None and not np.allclose(clf.class_vectors(), ZeroShotClassifier(
        svc.space, clf.classes, modality="image").class_vectors(shared_cache), atol=1e-3)
    for path in _test_images(data):
        res = _upload(client, path, clf.classes, classifier="refined")
        assert res.status_code == 200, res.text
        got = {c["label"]: c for c in res.json()["results"]}
        raw = clf.raw_scores([path], cache=shared_cache)[0]
        proba = clf.predict_proba([path], cache=shared_cache)[0]
        assert [got[c]["score"] for c in clf.classes] == pytest.approx(raw.tolist(), abs=1e-5)
        assert [got[c]["probability"] for c in clf.classes] == pytest.approx(proba.tolist(), abs=1e-5)
        assert res.json()["results"][0]["label"] == clf.predict([path], cache=shared_cache)[0]


def test_what_does_not_fit_the_classifier_is_refused_in_one_line(client, svc, clf_dir, data):
    clf = ZeroShotClassifier.load(clf_dir, svc.space)
    path = _test_images(data)[0]
    cases = [
        (dict(labels=clf.classes[::-1], classifier="cats"), "classifier 'cats': the classifier's classes in another order"),
        (dict(labels=clf.classes[:-1], classifier="cats"), f"classifier 'cats': the classifier has {len(clf.classes)} classes"),
        (dict(labels=clf.classes, classifier="cats", templates=["a photo of a {}."]),
         "classifier 'cats': the classifier was balanced with the templates"),
        (dict(labels=[clf.classes[0], *clf.classes[:-1]], classifier="cats"),
         f"classifier 'cats': class {clf.classes[0]!r} is given twice"),
        (dict(labels=clf.classes, classifier="dogs"), "no classifier 'dogs' in this service (it serves: cats, refined)"),
        (dict(labels=clf.classes, classifier="cats", text="a bird"),
         "classifier 'cats' classifies image items (its offsets were balanced on them); this query is image + text"),
    ]
    for form, message in cases:
        res = _upload(client, path, **form)
        assert res.status_code == 400 and res.json()["detail"].startswith(message), (form, res.text)
        assert "\n" not in res.json()["detail"]
    res = client.post("/classify", json={"text": "a bird", "labels": clf.classes, "classifier": "cats"})
    assert res.status_code == 400, res.text
    assert res.json()["detail"].startswith("classifier 'cats' classifies image items (its offsets were balanced on "
                                           "them); this query is text"), res.text
    # the JSON route without a classifier is unchanged
    res = client.post("/classify", json={"text": "a bird", "labels": clf.classes})
    assert res.status_code == 200 and res.json()["classifier"] is None


def test_health_lists_the_classifiers_and_the_schema_only_gains(client, svc, clf_dir):
    clf = ZeroShotClassifier.load(clf_dir, svc.space)
    h = client.get("/health").json()
    assert h["classifiers"]["cats"] == {"modality": "image", "classes": clf.classes, "templates": clf.templates,
                                        "temperature": clf.temperature, "prior": "balanced"}
    assert sorted(h["classifiers"]) == ["cats", "refined"]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    req = schemas["ClassifyRequest"]
    assert req["required"] == ["labels"] and "classifier" in req["properties"]  # optional: old requests still valid
    with TestClient(create_app(service=svc)) as plain:
        assert plain.get("/health").json()["classifiers"] == {}
        assert plain.get("/openapi.json").json()["components"]["schemas"] == schemas  # the same routes, always
        res = plain.post("/classify", json={"text": "a bird", "labels": ["bird", "cat"], "classifier": "cats"})
        assert res.status_code == 400 and res.json()["detail"] == (
            "no classifier 'cats' in this service (it serves none: anybind serve --classifier NAME=DIR)")


def test_a_classifier_of_another_space_is_refused_before_serving(svc, clf_dir, tmp_path):
    from anybind.errors import SpaceError

    other = tmp_path / "other"
    other.mkdir()
    for f in clf_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "classifier.json").read_text())
    meta["space_identity"] = "0123456789abcdef"
    (other / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match="fitted with space 0123456789abcdef, but the given space is") as e:
        create_app(service=svc, classifiers={"x": other})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="classifier name 'a b'"):
        create_app(service=svc, classifiers={"a b": clf_dir})


def test_a_classifier_no_request_could_name_is_refused_before_serving(svc):
    """A classifier with more classes than a request may give labels (or a class name longer than a label may be)
    was served, and every request naming it got a 400 (the page's too): refused when the app is made instead."""
    from anybind.serve.schemas import MAX_LABEL, MAX_LABELS

    many = ZeroShotClassifier(svc.space, [f"class {i}" for i in range(MAX_LABELS + 1)], modality="image")
    long = ZeroShotClassifier(svc.space, ["x" * (MAX_LABEL + 1), "y"], modality="image")
    for clf, message in ((many, f"classifier 'c' has {MAX_LABELS + 1} classes: a request takes at most {MAX_LABELS} "
                                "labels"),
                         (long, f"classifier 'c' has a class of {MAX_LABEL + 1} characters: a label may have at most "
                                f"{MAX_LABEL}")):
        with pytest.raises(ValueError) as e:
            create_app(service=svc, classifiers={"c": clf})
        assert str(e.value) == message


def test_cli_serve_takes_classifiers(data, clf_dir, shared_cache, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from anybind.cli import app

    answers = []

    def run(app_, **kw):  # instead of listening: one request through the app the CLI built
        with TestClient(app_) as c:
            answers.append(c.get("/health").json()["classifiers"])

    monkeypatch.setattr(uvicorn, "run", run)
    base = ["serve", str(data["space"]), "--index", str(data["index"]), "--cache", str(shared_cache)]
    r = CliRunner().invoke(app, [*base, "--classifier", f"cats={clf_dir}"])
    assert r.exit_code == 0, r.output
    assert list(answers[0]) == ["cats"]
    for bad, message in [("cats", "--classifier 'cats': give NAME=DIR"),
                         (f"cats={tmp_path / 'none'}", "none")]:
        r = CliRunner().invoke(app, [*base, "--classifier", bad])
        assert r.exit_code != 0 and message in r.stderr and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(app, [*base, "--classifier", f"a={clf_dir}", "--classifier", f"a={clf_dir}"])
    assert r.exit_code != 0 and "--classifier 'a' given twice" in r.stderr, r.output


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs the Debian package chromium")
def test_the_page_classifies_an_upload_with_a_served_classifier(svc, clf_dir, data, shared_cache):
    """The page offers the served classifiers; picking one classifies an uploaded image with it (its classes, its
    offsets): the top class shown is the library's prediction."""
    from anybind.serve import serve_in_thread
    from web_page import chromium_page, settled

    clf = ZeroShotClassifier.load(clf_dir, svc.space)
    path = _test_images(data)[0]
    with serve_in_thread(create_app(service=svc, classifiers={"cats": clf_dir})) as url, chromium_page() as page:
        page.goto(url + "/")
        page.locator("#classifier-box:not([hidden])").wait_for(timeout=30_000)
        page.select_option("#classifier", "cats")
        page.set_input_files("#file", path)
        page.locator("#classes:not([hidden])", has_text="balanced").wait_for(timeout=60_000)
        settled(page)
        top = page.locator("#classes .row span").first.inner_text()
        assert top == clf.predict([path], cache=shared_cache)[0]
        assert not page.problems, page.problems

"""``POST /explain`` (issue 20): why a stored item matches a text, from the service -- the word drops and the
nearest vocabulary words the library gives, on the indexed embedding; errors are one line."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from anybind.data.manifest import load_manifest
from anybind.explain import nearest_words, vocabulary, word_drops
from anybind.serve import create_app
from anybind.space import Space


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


def test_explain_gives_the_library_s_drops_and_nearest_words_for_a_stored_image(data, shared_cache):
    space = Space.load(data["space"])
    recs = load_manifest(data["manifest"], modalities=space.modalities).records
    r = next(r for r in recs if r.has("image") and len(r.values["text"].split()) >= 2)
    text = "a " + r.values["text"].lower()
    with TestClient(create_app(data["space"], data["index"])) as client:
        res = client.post("/explain", json={"text": text, "id": r.id, "k": 4})
        assert res.status_code == 200, res.text
        out = res.json()
        assert out["modality"] == "image" and out["id"] == r.id
        full, drops = word_drops(space, "text", text, "image", r.values["image"], cache=shared_cache)
        assert out["score"] == pytest.approx(full, abs=1e-3)
        assert [d["word"] for d in out["drops"]] == [d.word for d in drops]
        assert [d["drop"] for d in out["drops"]] == pytest.approx([d.drop for d in drops], abs=1e-3)
        # the space stores no vocabulary: it is the index's texts (label words are not indexed items)
        words = vocabulary(recs, labels=False)
        assert out["vocabulary"] == len(words) and out["vocabulary_source"] == "index"
        want = nearest_words(space, "image", [r.values["image"]], words, k=4, cache=shared_cache)[0]
        assert [w["word"] for w in out["words"]] == [w for w, _ in want]
        # another of the record's items by name; k=0: no words
        res = client.post("/explain", json={"text": text, "id": r.id, "modality": "text", "k": 0})
        assert res.status_code == 200 and res.json()["modality"] == "text" and res.json()["words"] == []
        for body, code, says in (({"text": text, "id": "no/such/id"}, 404, "no item"),
                                 ({"text": "  ", "id": r.id}, 400, "empty text"),
                                 ({"text": text, "id": r.id, "text_modality": "image"}, 400, "does not read text"),
                                 ({"text": text, "id": r.id, "color": 1}, 422, "")):
            bad = client.post("/explain", json=body)
            assert bad.status_code == code and says in json.dumps(bad.json()), bad.text
        paths = client.get("/openapi.json").json()["paths"]
        assert "/explain" in paths and {"/search", "/search/upload", "/classify"} <= set(paths)


def test_the_vocabulary_is_embedded_once_per_index_snapshot(data):
    from anybind.serve import ServeConfig, Service
    from anybind.serve.explain_route import lookup

    space = Space.load(data["space"])
    r = next(r for r in load_manifest(data["manifest"], modalities=space.modalities).records if r.has("image"))
    svc = Service.load(data["space"], data["index"], config=ServeConfig())
    try:
        with TestClient(create_app(service=svc)) as client:
            first = client.post("/explain", json={"text": "a small animal", "id": r.id, "k": 3}).json()
            kept = lookup(svc).embedded["text"]
            assert len(kept.words) == len(kept.vectors) == first["vocabulary"] and kept.source == "index"
            second = client.post("/explain", json={"text": "a red flower", "id": r.id, "k": 3}).json()
            assert lookup(svc).embedded["text"] is kept and second["words"] == first["words"]
    finally:
        svc.close()


def test_a_vocabulary_stored_with_the_space_is_the_one_explain_uses(data, shared_cache, tmp_path):
    from anybind.serve import ServeConfig, Service
    from anybind.serve.explain_route import lookup
    from anybind.vocabulary import embed_vocabulary

    space = Space.load(data["space"])
    recs = load_manifest(data["manifest"], modalities=space.modalities).records
    words = vocabulary(recs)  # with the labels' words ("animals"), which the index's texts lack
    assert set(words) - set(vocabulary(recs, labels=False))
    space.vocabulary = embed_vocabulary(space, words, cache=shared_cache)
    space.save(tmp_path / "space")
    r = next(r for r in recs if r.has("image"))
    svc = Service.load(tmp_path / "space", data["index"], config=ServeConfig())  # the same index: identity kept
    try:
        with TestClient(create_app(service=svc)) as client:
            out = client.post("/explain", json={"text": "a small animal", "id": r.id, "k": 5}).json()
            assert out["vocabulary"] == len(words) and out["vocabulary_source"] == "space"
            want = nearest_words(space, "image", [r.values["image"]], words, k=5, cache=shared_cache)[0]
            assert [w["word"] for w in out["words"]] == [w for w, _ in want]
            assert np.array_equal(lookup(svc).embedded["text"].vectors, space.vocabulary.vectors)
    finally:
        svc.close()


def test_an_index_built_from_a_space_with_a_vocabulary_keeps_it_and_a_service_from_the_index_alone_uses_it(
        data, shared_cache, tmp_path):
    """The index's copy of the space keeps the vocabulary (an index is self-contained): ``create_app(None, INDEX)``
    explains with the stored words; ``anybind serve SPACE --index INDEX`` uses SPACE's, one built after the index."""
    from anybind.index import Index
    from anybind.vocabulary import VECTORS_FILE, WORDS_FILE, embed_vocabulary

    space = Space.load(data["space"])
    recs = load_manifest(data["manifest"], modalities=space.modalities).records
    words = vocabulary(recs)  # with the labels' words, which the index's texts lack
    space.vocabulary = embed_vocabulary(space, words, cache=shared_cache, source="small.jsonl")
    space.save(tmp_path / "space")
    Index.build(Space.load(tmp_path / "space"), data["manifest"], tmp_path / "index", cache=shared_cache)
    copy = tmp_path / "index" / "space"
    assert {WORDS_FILE, VECTORS_FILE} <= {p.name for p in copy.iterdir()}
    # its size: the vectors once more (count x dim x float32) plus the safetensors header
    assert len(words) * space.dim * 4 <= (copy / VECTORS_FILE).stat().st_size < len(words) * space.dim * 4 + 1024
    kept = Index.open(tmp_path / "index").space.vocabulary
    assert kept.words == tuple(words) and np.array_equal(kept.vectors, space.vocabulary.vectors)
    r = next(r for r in recs if r.has("image"))
    want = nearest_words(space, "image", [r.values["image"]], words, k=5, cache=shared_cache)[0]
    with TestClient(create_app(None, tmp_path / "index")) as client:  # the index alone
        out = client.post("/explain", json={"text": "a small animal", "id": r.id, "k": 5}).json()
        assert out["vocabulary_source"] == "space" and out["vocabulary"] == len(words)
        assert [w["word"] for w in out["words"]] == [w for w, _ in want]
    # the index made before the vocabulary has none in its copy: alone, it explains with its texts' words;
    # with the space folder (what `anybind serve SPACE --index INDEX` loads) it uses the stored one
    assert Index.open(data["index"]).space.vocabulary is None
    for space_dir, source in ((None, "index"), (tmp_path / "space", "space")):
        with TestClient(create_app(space_dir, data["index"])) as client:
            out = client.post("/explain", json={"text": "a small animal", "id": r.id, "k": 5}).json()
            assert out["vocabulary_source"] == source, space_dir

"""Any modality queries (issue 15): a ``vectors:`` modality (precomputed features looked up by key) queried by its
features -- in the library (``Space.embed``, ``Index.search(inputs=...)``), by a ``.npy`` upload and by JSON
``inputs[].features`` in the service -- and the service's JSON search by a raw query ``vector`` in the space.

A tiny space of two synthetic sensors (``a``: 24 features, ``b``: 20; tests/scale_helpers.synthetic_corpus)."""

import numpy as np
import pytest

from serve_data import npy_bytes as _npy

from anybind.errors import DataError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from serve_data import vectors_world

    return vectors_world(tmp_path_factory.mktemp("vectors-queries"))


@pytest.fixture(scope="module")
def client(tiny):
    from serve_data import served

    yield from served(tiny["index"], tiny["dir"] / "cache", max_array_values=100)




def _refused_in_one_line(client, body: dict, status: int, why: str) -> None:
    """``POST /search`` of ``body`` answers ``status`` with ``why`` in its detail (a FastAPI 422's messages joined),
    on one line."""
    res = client.post("/search", json=body)
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(e["msg"] for e in detail)
    assert why in text and "\n" not in text


def _top(res) -> tuple[str, float]:
    assert res.status_code == 200, res.text
    h = res.json()["hits"][0]
    return h["id"], h["score"]


# -- the library ------------------------------------------------------------------------------------------------

def test_features_stand_for_their_key_in_the_library(tiny):
    from anybind.index import Index

    space, A, ids = tiny["space"], tiny["A"], tiny["ids"]
    by_key = space.embed("a", [ids[3], ids[7]])
    by_features = space.embed("a", [A[3], A[7][None]])  # (24,) and (1, 24)
    assert np.allclose(by_features, by_key, atol=1e-6)
    hits = Index.open(tiny["index"]).search(inputs={"a": A[7]}, modality="a", k=2)
    assert hits[0].id == ids[7] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_features_as_a_list_or_a_tensor_are_features_not_a_key(tiny):
    """A feature vector given as a list of numbers or a torch tensor was taken for a key: "cannot decode [-0.57,
    ...]: no vector for id '[-0.57, ...]'" (a line of 1,100 characters for 24 numbers)."""
    import torch

    space, A, ids = tiny["space"], tiny["A"], tiny["ids"]
    by_key = space.embed("a", [ids[3]] * 3)
    got = space.embed("a", [A[3].tolist(), tuple(A[3].tolist()), torch.from_numpy(A[3])])
    assert np.allclose(got, by_key, atol=1e-6)
    with pytest.raises(DataError, match="a feature vector of shape \\(2,\\): this modality's features have 24"):
        space.embed("a", [[1.0, 2.0]])
    with pytest.raises(DataError, match="no vector for id \"\\['r0003', 'r0004'\\]\""):  # strings: still a key
        space.embed("a", [["r0003", "r0004"]])


@pytest.mark.parametrize("v", [1e30, -3e38])
def test_features_whose_projection_overflows_are_refused(tiny, client, v):
    """Finite features too large for float32's norm (1e30: the projection's sum of squares is inf) were embedded
    as an all-zero 'unit' vector: /embed/upload answered 200 with it, Space.embed returned it, and a search said
    the inputs cancel out."""
    x = np.full(24, v, np.float32)
    with pytest.raises(DataError) as e:
        tiny["space"].embed("a", [tiny["A"][1], x])
    assert "a: item 1: its projection overflows float32" in str(e.value) and "\n" not in str(e.value)
    res = client.post("/embed/upload", files={"files": ("q.npy", _npy(x))}, data={"file_modality": "a"})
    assert res.status_code == 400 and "its projection overflows float32" in res.json()["detail"], res.text
    res = client.post("/search", json={"inputs": [{"modality": "a", "features": x.tolist()}]})
    assert res.status_code == 400 and "its projection overflows float32" in res.json()["detail"], res.text


@pytest.mark.parametrize("x, why", [
    (np.zeros(5), "a feature vector of shape (5,): this modality's features have 24 values"),
    (np.full(24, np.nan), "a feature vector holds NaN or infinite values"),
    (np.full(24, 1e300), "a feature vector holds NaN or infinite values"),  # beyond float32
    (np.zeros((2, 24)), "a feature vector of shape (2, 24)"),
    (np.array(["x"] * 24), "a feature vector of <U1 values: give real numbers"),
])
def test_bad_features_are_one_line(tiny, x, why):
    with pytest.raises(DataError) as e:
        tiny["space"].embed("a", [x])
    assert why in str(e.value) and "\n" not in str(e.value)


# -- the service: .npy uploads ----------------------------------------------------------------------------------

def test_a_features_upload_finds_its_record(client, tiny):
    A, ids = tiny["A"], tiny["ids"]
    for i in (0, 11, 42):
        res = client.post("/search/upload", files={"files": ("feat.npy", _npy(A[i]))},
                          data={"k": "3", "modality": "a", "file_modality": "a"})
        assert _top(res) == (ids[i], pytest.approx(1.0, abs=1e-5))
        assert res.json()["query_modalities"] == ["a"]
    # fused with the other sensor's features of the same record: still that record, across modalities
    res = client.post("/search/upload", files=[("files", ("a.npy", _npy(A[11]))),
                                               ("files", ("b.npy", _npy(np.load(tiny["dir"] / "b.npz")["vectors"][11])))],
                      data={"file_modality": ["a", "b"], "k": "1", "modality": "b"})
    assert _top(res)[0] == ids[11] and res.json()["query_modalities"] == ["a", "b"]


def test_embed_upload_of_features_equals_the_space(client, tiny):
    res = client.post("/embed/upload", files={"files": ("feat.npy", _npy(tiny["A"][5].astype(np.float64)))},
                      data={"file_modality": "a"})
    assert res.status_code == 200, res.text
    item = res.json()["items"][0]
    assert item["modality"] == "a" and item["name"] == "feat.npy"
    assert np.allclose(item["vector"], tiny["space"].embed("a", [tiny["ids"][5]])[0], atol=1e-6)


@pytest.mark.parametrize("data, form, status, why", [
    (_npy(np.zeros(24)), {}, 400, "'q.npy' is an array (application/x-npy), but several modalities read arrays (a, b); "
                                  "name one with file_modality"),
    (_npy(np.zeros(5)), {"file_modality": "a"}, 400, "'q.npy': an array of shape (5,): this modality's features have "
                                                     "24 values"),
    (_npy(np.full(24, np.inf)), {"file_modality": "a"}, 400, "'q.npy': an array holds NaN or infinite values"),
    (_npy(np.zeros(500)), {"file_modality": "a"}, 400, "an array of shape (500,) (500 values); this service takes at "
                                                       "most 100 values (the limit, ServeConfig.max_array_values)"),
    (_npy(np.array([None] * 24, dtype=object), allow_pickle=True), {"file_modality": "a"}, 415,
     "holds Python objects (a pickle); refusing to unpickle it"),
    (_npy(np.zeros(24, dtype=[("x", "f4")])), {"file_modality": "a"}, 415, "save a plain numeric"),
    (_npy(np.zeros(24))[:-8], {"file_modality": "a"}, 415, "truncated .npy file"),
])
def test_features_uploads_refused_in_one_line(client, data, form, status, why):
    for route in ("/search/upload", "/embed/upload"):
        res = client.post(route, files={"files": ("q.npy", data)}, data=form)
        assert res.status_code == status, res.text
        detail = res.json()["detail"]
        assert why in detail and "\n" not in detail


# -- the service: JSON features and a raw vector ----------------------------------------------------------------

def test_json_features_find_the_record(client, tiny):
    A, ids = tiny["A"], tiny["ids"]
    up = client.post("/search/upload", files={"files": ("f.npy", _npy(A[23]))},
                     data={"k": "5", "modality": "a", "file_modality": "a"}).json()["hits"]
    js = client.post("/search", json={"inputs": [{"modality": "a", "features": A[23].tolist()}], "k": 5,
                                      "modality": "a"})
    assert _top(js)[0] == ids[23]
    assert [(h["id"], round(h["score"], 5)) for h in js.json()["hits"]] == [(h["id"], round(h["score"], 5)) for h in up]


def test_json_classify_takes_features(client, tiny):
    res = client.post("/classify", json={"inputs": [{"modality": "a", "features": tiny["A"][2].tolist()}],
                                         "labels": ["x", "y"]})
    # this space binds no text modality to embed class names with: refused for that reason, not for the features
    assert res.status_code == 400 and "needs a bound 'text' modality" in res.json()["detail"]


@pytest.mark.parametrize("body, status, why", [
    ({"inputs": [{"modality": "a", "features": []}]}, 422, "at least 1 item"),
    ({"inputs": [{"modality": "a", "features": [0.1] * 65537}]}, 422, "at most 65536 items"),
    ({"inputs": [{"modality": "a", "features": ["x"] * 24}]}, 422, "valid number"),
    ({"inputs": [{"modality": "a", "features": [1e300] * 24}]}, 400, "inputs[0]: features holds NaN or infinite"),
    ({"inputs": [{"modality": "a", "features": [1.0, 2.0]}]}, 400,
     "inputs[0]: features of shape (2,): this modality's features have 24 values"),
    ({"inputs": [{"modality": "a", "features": [0.1] * 101}]}, 400,
     "inputs[0]: 101 features; this service takes at most 100 values (the limit, ServeConfig.max_array_values)"),
    ({"inputs": [{"modality": "zz", "features": [1.0]}]}, 400, "inputs[0]: unknown modality 'zz': this space binds a, b"),
    ({"inputs": [{"modality": "a"}]}, 422, "an input needs exactly one of text or features"),
    ({"inputs": [{"modality": "a", "text": "hi", "features": [1.0]}]}, 422, "exactly one of text or features"),
    ({"inputs": [{"modality": "a", "text": "hi"}]}, 400, "modality 'a' does not read text (it reads features): upload a .npy array"),
    ({}, 400, "empty query: give text, inputs or a vector"),
])
def test_json_features_refused_in_one_line(client, body, status, why):
    _refused_in_one_line(client, body, status, why)


def test_non_finite_json_features_are_422(client):
    body = '{"inputs": [{"modality": "a", "features": [NaN' + ", 1" * 23 + "]}]}"
    res = client.post("/search", content=body.encode(), headers={"content-type": "application/json"})
    assert res.status_code == 422 and "finite number" in res.text


# -- the service: a raw query vector ----------------------------------------------------------------------------

def test_json_vector_finds_the_record_and_fuses(client, tiny):
    A, ids, space = tiny["A"], tiny["ids"], tiny["space"]
    v = space.embed("a", [ids[23]])[0]
    res = client.post("/search", json={"vector": v.tolist(), "k": 5, "modality": "a"})
    assert _top(res) == (ids[23], pytest.approx(1.0, abs=1e-5)) and res.json()["query_modalities"] == []
    from anybind.index import Index

    lib = Index.open(tiny["index"]).search(v, modality="a", k=5)  # what the library answers for the same vector
    assert [(h["id"], round(h["score"], 5)) for h in res.json()["hits"]] == [(h.id, round(h.score, 5)) for h in lib]
    # fused with the features of the same record at weight 1 (the same direction): the same hits
    both = client.post("/search", json={"vector": v.tolist(), "inputs": [{"modality": "a", "features": A[23].tolist()}],
                                        "k": 5, "modality": "a"})
    assert [h["id"] for h in both.json()["hits"]] == [h["id"] for h in res.json()["hits"]]
    assert both.json()["query_modalities"] == ["a"]
    # fused with another record's features at weight 3: that record leads
    other = client.post("/search", json={"vector": v.tolist(), "k": 1, "modality": "a",
                                         "inputs": [{"modality": "a", "features": A[40].tolist(), "weight": 3}]})
    assert _top(other)[0] == ids[40]


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_a_raw_vector_of_any_finite_scale_has_its_direction(client, tiny, scale):
    """A query vector is a direction: one of 1e20s (its sum of squares overflows float32) was refused as "the
    fused query vector is zero (the inputs cancel out)", one of 1e-30s (it underflows) as "a vector of zero norm"
    -- in the library (Index.search, anybind search --vector) and the service."""
    from anybind.index import Index

    v = tiny["space"].embed("a", [tiny["ids"][23]])[0]
    index = Index.open(tiny["index"])
    want = [(h.id, round(h.score, 5)) for h in index.search(v, modality="a", k=5)]
    assert [(h.id, round(h.score, 5)) for h in index.search(v * np.float32(scale), modality="a", k=5)] == want
    both = index.search(v * np.float32(scale), inputs={"a": tiny["A"][23]}, modality="a", k=5)
    assert [h.id for h in both] == [h for h, _ in want]
    res = client.post("/search", json={"vector": (v.astype(np.float64) * scale).tolist(), "k": 5, "modality": "a"})
    assert res.status_code == 200, res.text
    assert [(h["id"], round(h["score"], 5)) for h in res.json()["hits"]] == want


@pytest.mark.parametrize("body, status, why", [
    ({"vector": [0.5] * 3}, 400, "vector of shape (3,): this index holds 8-d vectors, give one of shape (8,)"),
    ({"vector": [0.0] * 8}, 400, "vector is all zeros"),
    ({"vector": [1e300] * 8}, 400, "vector holds NaN or infinite values"),  # beyond float32
    ({"vector": []}, 422, "at least 1 item"),
    ({"vector": [0.1] * 65537}, 422, "at most 65536 items"),
    ({"vector": ["x"] * 8}, 422, "valid number"),
    ({"vector": [1.0] * 8, "inputs": [{"modality": "a", "features": [1.0]}]}, 400, "inputs[0]: features of shape"),
])
def test_json_vector_refused_in_one_line(client, body, status, why):
    _refused_in_one_line(client, body, status, why)


def test_non_finite_json_vector_is_422(client):
    res = client.post("/search", content=b'{"vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}',
                      headers={"content-type": "application/json"})
    assert res.status_code == 422 and "finite number" in res.text

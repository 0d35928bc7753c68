"""Any modality queries (issue 15): a ``vectors:`` modality (precomputed features looked up by key) queried by its
features -- in the library (``Space.embed``, ``Index.search(inputs=...)``), by a ``.npy`` upload and by JSON
``inputs[].features`` in the service -- and the service's JSON search by a raw query ``vector`` in the space.

A tiny space of two synthetic sensors (``a``: 24 features, ``b``: 20; tests/scale_helpers.synthetic_corpus)."""

import io

import numpy as np
import pytest

from anybind.errors import DataError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from scale_helpers import synthetic_corpus

    from anybind.index import Index
    from anybind.space import Space

    d = tmp_path_factory.mktemp("vectors-queries")
    manifest, encoders = synthetic_corpus(d, n=60)
    space = Space.fit(manifest, encoders=encoders, cache=d / "cache", epochs=3, dim=8, seed=0, progress=False)
    Index.build(space, manifest, d / "index", cache=d / "cache")
    npz = np.load(d / "a.npz")
    return {"dir": d, "space": space, "index": d / "index", "ids": [str(i) for i in npz["ids"]], "A": npz["vectors"]}


@pytest.fixture(scope="module")
def client(tiny):
    from serve_data import served

    yield from served(tiny["index"], tiny["dir"] / "cache", max_array_values=100)


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


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


# -- the command line: anybind search --query MODALITY=features.npy ------------------------------------------------

def _cli_search(tiny, *args):
    from typer.testing import CliRunner

    from anybind.cli import app

    return CliRunner().invoke(app, ["search", str(tiny["index"]), "--cache", str(tiny["dir"] / "cache"), "--json",
                                    *args])


def test_cli_query_by_a_features_file_finds_its_record(tiny, tmp_path):
    """``--query a=feat.npy`` was read as the key 'feat.npy' ("no vector for id 'feat.npy'"): a ``.npy`` file of a
    ``vectors:`` modality's features is its features, as an upload of it is; a key is still a key."""
    import json

    from anybind.index import Index

    A, ids = tiny["A"], tiny["ids"]
    B = np.load(tiny["dir"] / "b.npz")["vectors"]
    np.save(tmp_path / "a.npy", A[11].astype(np.float64))
    np.save(tmp_path / "a2.npy", A[11][None])  # (1, 24): one vector too
    np.save(tmp_path / "b.npy", B[11])
    want = [(h.id, round(h.score, 5)) for h in Index.open(tiny["index"]).search(inputs={"a": A[11]}, modality="a", k=3)]
    assert want[0] == (ids[11], pytest.approx(1.0, abs=1e-5))
    for q in (f"a={tmp_path / 'a.npy'}", f"a={tmp_path / 'a2.npy'}", f"a={ids[11]}"):
        res = _cli_search(tiny, "--query", q, "-m", "a", "-k", "3")
        assert res.exit_code == 0, res.output
        assert [(h["id"], round(h["score"], 5)) for h in json.loads(res.output)] == want
    # two sensors' features fused, found across modalities
    res = _cli_search(tiny, "--query", f"a={tmp_path / 'a.npy'}", "--query", f"b={tmp_path / 'b.npy'}", "-m", "b",
                      "-k", "1")
    assert res.exit_code == 0 and json.loads(res.output)[0]["id"] == ids[11], res.output


@pytest.mark.parametrize("name, content, why", [
    ("short.npy", np.zeros(5), "an array of shape (5,): this modality's features have 24 values"),
    ("two.npy", np.zeros((2, 24)), "an array of shape (2, 24): this modality's features have 24 values"),
    ("nan.npy", np.full(24, np.nan), "an array holds NaN or infinite values"),
    ("text.npy", np.array(["x"] * 24), "an array of <U1 values: give real numbers"),
    ("objects.npy", np.array([None] * 24, dtype=object), "holds Python objects (a pickle); refusing to unpickle it"),
    ("record.npy", np.zeros(24, dtype=[("x", "f4")]), "save a plain numeric"),
    ("truncated.npy", b"truncated", "not a readable .npy file"),
    ("folder.npy", None, "is a directory"),
])
def test_cli_bad_features_file_is_one_line_naming_it(tiny, tmp_path, name, content, why):
    p = tmp_path / name
    if content is None:
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(_npy(np.zeros(24))[:40])
    else:
        np.save(p, content, allow_pickle=content.dtype.hasobject)
    res = _cli_search(tiny, "--query", f"a={p}", "-m", "a")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"--query a={p}" in out and why in out, res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_cli_missing_features_file_is_named(tiny, tmp_path):
    """A ``.npy`` value that is neither a file nor a key of the vectors file: the file is said missing."""
    res = _cli_search(tiny, "--query", f"a={tmp_path / 'nope.npy'}")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and f"--query a={tmp_path / 'nope.npy'}: no such file" in out, res.output


def test_cli_embed_reads_a_features_file_one_row_per_item(tiny, tmp_path):
    """``anybind embed SPACE -m a feats.npy``: a ``.npy`` of a ``vectors:`` modality's features is embedded as
    those features, a 2-D array one item per row (named FILE[i]); a key is still a key; a bad file is one line."""
    import json

    from typer.testing import CliRunner

    from anybind.cli import app

    A, ids, space = tiny["A"], tiny["ids"], tiny["space"]
    space.save(tmp_path / "space")
    np.save(tmp_path / "one.npy", A[4])
    np.save(tmp_path / "rows.npy", A[[5, 6, 7]])
    res = CliRunner().invoke(app, ["embed", str(tmp_path / "space"), "-m", "a", "--cache", str(tiny["dir"] / "cache"),
                                   str(tmp_path / "one.npy"), str(tmp_path / "rows.npy"), ids[8]])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    rows_file = str(tmp_path / "rows.npy")
    assert [r["item"] for r in rows] == [str(tmp_path / "one.npy"), f"{rows_file}[0]", f"{rows_file}[1]",
                                         f"{rows_file}[2]", ids[8]]
    want = space.embed("a", [ids[i] for i in (4, 5, 6, 7, 8)])
    assert np.allclose([r["vector"] for r in rows], want, atol=1e-5)
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    np.save(tmp_path / "nan.npy", np.where(np.arange(24) == 3, np.nan, A[[1, 2]]))
    for name, why in (("bad.npy", "row 0 of shape (5,): this modality's features have 24 values"),
                      ("nan.npy", "row 0 holds NaN or infinite values")):
        res = CliRunner().invoke(app, ["embed", str(tmp_path / "space"), "-m", "a", str(tmp_path / name)])
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and f"{tmp_path / name}: an array {why}" in out, res.output


def _sparse_npy(path, shape, dtype="<f8") -> None:
    """A ``.npy`` whose header says ``shape`` and whose data are a hole (a sparse file: no disk, no time)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)


@pytest.mark.parametrize("shape, several, why", [
    ((1 << 18, 25), True, "row 0 of shape (25,): this modality's features have 24 values"),
    ((1 << 18, 24), False, f"an array of shape ({1 << 18}, 24): this modality's features have 24 values"),
])
def test_a_big_features_file_is_not_read_whole_to_be_refused(tiny, tmp_path, shape, several, why):
    """The command line read a features file whole (bytes, then an array copy: 2x its size, a 10 GB file 20 GB)
    before checking its shape from its header: it is memory-mapped, a wrong shape is refused reading ~nothing."""
    import tracemalloc

    from anybind.cli._common import query_items
    from anybind.index import QueryError

    p = tmp_path / "big.npy"
    _sparse_npy(p, shape)  # 50 MiB, of the wrong shape
    tracemalloc.start()
    try:
        with pytest.raises(QueryError) as e:
            query_items(tiny["space"], [("a", str(p))], several=several)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert why in str(e.value) and "\n" not in str(e.value)
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB traced to refuse a 50 MiB file by its header"


def test_cli_explain_item_takes_a_features_file(tiny, tmp_path):
    """``anybind explain --item a=feat.npy`` took the path for a key ("no vector for id"): a ``.npy`` of a
    ``vectors:`` modality's features is explained as those features (as ``search --query`` reads it), named by
    the file; a key is still a key; a bad file is one line naming it."""
    import json

    import torch
    from typer.testing import CliRunner

    from anybind.cli import app
    from anybind.explain import word_drops
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.space import Space

    torch.manual_seed(0)
    space = Space({"text": "callable:helper_encoders:hashed_text", "a": f"vectors:{tiny['dir'] / 'a.npz'}"},
                  {"text": Projector(ProjectorConfig(in_dim=8, out_dim=6, kind="linear", dropout=0.0)),
                   "a": Projector(ProjectorConfig(in_dim=24, out_dim=6, kind="linear", dropout=0.0))})
    space.save(tmp_path / "sp")
    A, ids = tiny["A"], tiny["ids"]
    feat = tmp_path / "feat.npy"
    np.save(feat, A[11])
    text = "a loud red bird"
    score, drops = word_drops(space, "text", text, "a", ids[11])
    for item, name in ((f"a={feat}", str(feat)), (f"a={ids[11]}", ids[11])):
        res = CliRunner().invoke(app, ["explain", str(tmp_path / "sp"), "--text", text, "--item", item, "--json"])
        assert res.exit_code == 0, res.output
        (row,) = [json.loads(line) for line in res.output.splitlines() if line.strip()]
        assert row["modality"] == "a" and row["item"] == name
        assert row["score"] == pytest.approx(score, abs=1e-4)
        assert [d["drop"] for d in row["drops"]] == pytest.approx([d.drop for d in drops], abs=1e-4)
    np.save(tmp_path / "short.npy", np.zeros(5))
    res = CliRunner().invoke(app, ["explain", str(tmp_path / "sp"), "--text", text, "--item",
                                   f"a={tmp_path / 'short.npy'}"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and f"--item a={tmp_path / 'short.npy'}: an array of shape (5,)" in out, res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1

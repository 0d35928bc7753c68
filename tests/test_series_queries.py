"""Any modality queries (issue 15): a time-series space on real series (GunPoint), queried through
``Space.embed(inputs=...)``, the service's ``.npy`` uploads and ``anybind search --query timeseries=q.npy``.

The series encoder is a plugin that reads arrays (``callable:helper_encoders:series_shape``, ``reads_arrays``);
``timeseries:minirocket`` declares the same (checked without building it)."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.data.series import npy_header
from anybind.errors import DataError, SpaceError

SERIES = "callable:helper_encoders:series_shape"
TEXT = "callable:helper_encoders:hashed_text"


@pytest.fixture(scope="module")
def gp(tmp_path_factory):
    """GunPoint (6 series per official file, 12 records: series + text), a space fitted on it and its index."""
    from anybind.corpora.timeseries import build_timeseries
    from anybind.data.manifest import load_manifest
    from anybind.index import Index
    from anybind.space import Space

    root = tmp_path_factory.mktemp("series-queries")
    build_timeseries(root / "gp", datasets=["GunPoint"], limit=6, progress=False)
    mpath = root / "gp" / "manifest.jsonl"
    space = Space.fit(mpath, modalities=["timeseries", "text"], encoders={"timeseries": SERIES, "text": TEXT},
                      cache=root / "cache", epochs=3, dim=16, seed=0, progress=False)
    space.save(root / "space")
    Index.build(space, mpath, root / "index", cache=root / "cache")
    man = load_manifest(mpath, modalities=["timeseries", "text"])
    return {"root": root, "space": space, "index": root / "index", "records": man.records}


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


# -- Space.embed(inputs=...) ----------------------------------------------------------------------------------------

def test_space_embeds_inputs_of_any_modality(gp):
    space, recs = gp["space"], gp["records"]
    paths = [r.values["timeseries"] for r in recs[:3]]
    arr = np.load(paths[0])
    out = space.embed(inputs={"timeseries": [*paths, arr], "text": recs[0].values["text"]}, cache=gp["root"] / "cache")
    assert sorted(out) == ["text", "timeseries"]
    assert out["timeseries"].shape == (4, 16) and out["text"].shape == (1, 16)
    assert np.allclose(out["timeseries"][:3], space.embed("timeseries", paths), atol=1e-6)
    assert np.allclose(out["timeseries"][3], out["timeseries"][0], atol=1e-6)  # the array is the first file's series
    assert np.allclose(out["text"], space.embed("text", [recs[0].values["text"]]), atol=1e-6)


@pytest.mark.parametrize("call, why", [
    (lambda s: s.embed(inputs={"timeseries": [], "speech": ["a.wav"], "image": ["b.png"]}),
     "unknown modalities 'speech', 'image' in inputs: this space binds text, timeseries"),
    (lambda s: s.embed(inputs={"timeseries": [], "speech": "a.wav"}), "unknown modality 'speech' in inputs"),
    (lambda s: s.embed("text", ["x"], inputs={"text": ["y"]}), "not both"),
    (lambda s: s.embed(inputs=["text"]), "inputs must be a mapping"),
    (lambda s: s.embed("text"), "embed takes (modality, items) or inputs="),
])
def test_space_embed_inputs_mistakes_are_one_line(gp, call, why):
    with pytest.raises(SpaceError) as e:
        call(gp["space"])
    assert why in str(e.value) and "\n" not in str(e.value)


# -- the .npy header --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
       dtype=st.sampled_from(["<f8", "<f4", ">f4", "<i2", "u1", "?", "<f2"]), fortran=st.booleans())
def test_npy_header_reads_what_numpy_wrote(shape, dtype, fortran):
    arr = np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    assert npy_header(_npy(arr), "q.npy") == (tuple(shape), np.dtype(dtype))
    if arr.nbytes:
        with pytest.raises(DataError, match="q.npy: truncated .npy file"):
            npy_header(_npy(arr)[:-1], "q.npy")


def test_minirocket_and_fracast_read_arrays():
    from anybind.encoders.fracast import FracastEncoder
    from anybind.encoders.series_base import SeriesEncoder
    from anybind.encoders.timeseries import MiniRocketEncoder

    assert SeriesEncoder.reads_arrays and MiniRocketEncoder.reads_arrays and FracastEncoder.reads_arrays


# -- the service --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(gp):
    from serve_data import served

    yield from served(gp["index"], gp["root"] / "cache", max_array_values=1000)


def test_a_series_upload_finds_its_record(client, gp):
    assert client.get("/health").json()["upload_modalities"] == {"array": "timeseries"}
    for r in gp["records"][:6]:
        arr = np.load(r.values["timeseries"]).ravel()  # (150,), not the indexed file's (1, 150): other bytes
        res = client.post("/search/upload", files={"files": ("walk.npy", _npy(arr))},
                          data={"k": "3", "modality": "timeseries"})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["query_modalities"] == ["timeseries"]
        assert body["hits"][0]["id"] == r.id and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_a_series_upload_embeds_as_the_space_does(client, gp):
    path = gp["records"][0].values["timeseries"]
    res = client.post("/embed/upload", files={"files": ("x.npy", Path(path).read_bytes())})
    assert res.status_code == 200, res.text
    assert np.allclose(res.json()["items"][0]["vector"], gp["space"].embed("timeseries", [path])[0], atol=1e-5)


class _Unpickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_uploads_of_pickles_and_oversized_arrays_are_refused_in_one_line(client, tmp_path):
    marker = tmp_path / "unpickled"
    evil = np.empty(2, dtype=object)
    evil[0] = _Unpickled(str(marker))
    header_only = _npy(np.zeros((1, 4)))[:-32]  # declares 32 bytes it does not hold
    cases = [
        (_npy(evil, allow_pickle=True), 415, "'evil.npy': the .npy holds Python objects (a pickle); refusing"),
        (_npy(np.ones(3, complex)), 415, "a .npy of complex128 values"),
        (header_only, 415, "truncated .npy file"),
        (_npy(np.ones((2, 600))), 400, "an array of shape (2, 600) (1200 values); this service takes at most 1000"),
    ]
    for blob, status, why in cases:
        for route in ("/search/upload", "/embed/upload", "/classify/upload"):
            data = {"labels": ["point"]} if route == "/classify/upload" else {}
            res = client.post(route, files={"files": ("evil.npy", blob)}, data=data)
            assert res.status_code == status, (route, res.text)
            detail = res.json()["detail"]
            assert why in detail and "\n" not in detail, (route, detail)
    assert not marker.exists()


def test_a_series_modality_asked_with_text_says_to_upload(client):
    res = client.post("/search", json={"inputs": [{"modality": "timeseries", "text": "a gun"}]})
    assert res.status_code == 400
    assert res.json()["detail"] == ("modality 'timeseries' does not read text (it reads files): upload a .npy array "
                                    "to /search/upload (or /embed/upload, /classify/upload) with "
                                    "file_modality=timeseries")
    res = client.post("/search/upload", files={"files": ("x.npy", _npy(np.ones(20)))}, data={"file_modality": "text"})
    assert res.status_code == 400 and "modality 'text' reads text input" in res.json()["detail"]


def test_which_modality_takes_an_array(gp):
    """One array modality: the default; two: file_modality must name one; none: said so."""
    from anybind.index import Index
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.serve.state import Service
    from anybind.space import Space

    ident = ProjectorConfig(in_dim=18, out_dim=18, kind="identity", standardize=False)
    text = ProjectorConfig(in_dim=8, out_dim=18, kind="linear", standardize=False)
    two = Space({"ts": SERIES, "ts_b": SERIES, "text": TEXT},
                {"ts": Projector(ident), "ts_b": Projector(ident), "text": Projector(text)})
    blob = _npy(np.sin(np.arange(40.0)))
    svc = Service(two, Index.create(gp["root"] / "two", space=two))
    try:
        assert svc.array_modalities == ["ts", "ts_b"] and svc.upload_modality("array") is None
        with pytest.raises(Exception, match="several modalities read arrays \\(ts, ts_b\\); name one with file_modality"):
            svc.stage(blob, "q.npy", None)
        m, item, path, _ = svc.stage(blob, "q.npy", "ts_b")
        assert m == "ts_b" and path.suffix == ".npy" and path.read_bytes() == blob and item == str(path)
    finally:
        svc.close()


# -- the CLI ------------------------------------------------------------------------------------------------------

def test_cli_searches_with_a_series_file(gp, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    r = gp["records"][3]
    q = tmp_path / "q.npy"
    np.save(q, np.load(r.values["timeseries"]).ravel())
    res = CliRunner().invoke(app, ["search", str(gp["index"]), "--query", f"timeseries={q}", "-m", "timeseries",
                                   "--json", "-k", "2", "--cache", str(gp["root"] / "cache")])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert hits[0]["id"] == r.id and hits[0]["modality"] == "timeseries"


def test_an_array_upload_reserves_its_values_as_float64():
    from anybind.serve.budget import file_pixels
    from anybind.serve.config import ServeConfig

    cfg = ServeConfig(max_array_values=1000)
    assert file_pixels(_npy(np.ones((2, 300), np.float32)), cfg) == 600 * 8 // 3
    assert file_pixels(_npy(np.ones((2, 600))), cfg) == -(-1000 * 8 // 3)  # refused when staged: at most the cap
    assert file_pixels(_npy(np.array([None, 1], dtype=object), allow_pickle=True), cfg) == 0  # refused, never loaded


def _crafted_npy(shape) -> bytes:
    """A format 1.0 ``.npy`` whose header declares ``shape`` (numpy writes no negative dimension; a client may)."""
    head = repr({"descr": "<f8", "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * (-(10 + len(head) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + b"\0" * 64


@pytest.mark.parametrize("shape", [(-1,), (-2, 3), (-(10**12),)])
def test_a_negative_dimension_is_refused_and_reserves_no_negative_budget(shape):
    """A header's negative dimension made its value count negative: it passed the size check and, summed with the
    other files of one upload, cancelled their pixels out of the in-flight budget."""
    from anybind.serve.budget import upload_pixels
    from anybind.serve.config import ServeConfig

    with pytest.raises(DataError, match=r"q.npy: .*negative"):
        npy_header(_crafted_npy(shape), "q.npy")
    cfg = ServeConfig(max_array_values=1000)
    big = _npy(np.ones((2, 300), np.float32))
    assert upload_pixels([(big, "a.npy"), (_crafted_npy(shape), "b.npy")], cfg) == 600 * 8 // 3

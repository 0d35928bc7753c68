"""Any modality queries from the command line (issue 15): a ``vectors:`` modality's features given as a ``.npy`` file
to ``anybind search --query``, ``anybind embed``, ``anybind explain --item`` and ``anybind caption --item``, and the
refusals of bad files (one line naming the file; a big file refused from its header).  The tiny space of
tests/test_vectors_queries.py (``serve_data.vectors_world``)."""

import numpy as np
import pytest
from serve_data import npy_bytes as _npy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from serve_data import vectors_world

    return vectors_world(tmp_path_factory.mktemp("vectors-cli"))


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

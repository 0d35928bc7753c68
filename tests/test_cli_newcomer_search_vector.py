"""`anybind search --vector` (issue 22): a search with a raw vector, and its mistakes as one line each."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from newcomer_helpers import cli


# -- search with a vector -----------------------------------------------------------------------------------

@pytest.fixture
def vec_index(tmp_path):
    from anybind.index import Index

    ix = Index.create(tmp_path / "ix", dim=8, identity="newcomer-test")
    ix.add_vectors(["a", "b", "c"], np.eye(8, dtype=np.float32)[:3], modality="text")
    return tmp_path / "ix"


def test_search_with_a_vector(vec_index, tmp_path):
    q = tmp_path / "q.npy"
    np.save(q, np.eye(8, dtype=np.float64)[1] * 3)
    r = cli("search", vec_index, "--vector", q, "--json", "-k", "2")
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.stdout)][0] == "b"
    np.save(q, np.eye(8, dtype=np.float32)[1][None])  # (1, 8), as `anybind embed ... --out` writes one item
    assert json.loads(cli("search", vec_index, "--vector", q, "--json").stdout)[0]["id"] == "b"


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, q=np.ones(8, np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("value, why", [
    (np.ones(3, np.float32), "of shape (3,): this index holds 8-d vectors"),
    (np.ones((2, 8), np.float32), "of shape (2, 8)"),
    (np.full(8, np.nan, np.float32), "NaN or infinite"),
    (np.full(8, 1e300), "NaN or infinite"),  # overflows float32
    (np.zeros(8, np.float32), "all zeros"),
    (np.array(["a"] * 8), "holds <U1 values"),
    (np.array([1 + 2j] * 8), "holds complex128 values"),
    (np.array([object()] * 8, dtype=object), "not a .npy array of numbers"),  # would need unpickling
    (b"not an array", "not a .npy array of numbers (not a .npy file (no NUMPY magic number))"),  # not "a pickle"
    (b"PK,PL\n1,2\n", "(not a .npy file (no NUMPY magic number))"),  # starts like a zip, is none
    (b"\x93NUM", "(not a .npy file (no NUMPY magic number))"),  # shorter than the magic string
    # read by the library's load_npy (memory-mapped): its refusals, under the one --vector wording
    (np.zeros(8, dtype=[("a", "<f4")]), "not a .npy array of numbers (structured (record) arrays"),
    (_npz_bytes(), "not a .npy array of numbers (expected one array, found NpzFile)"),
    (b"", "not a .npy array of numbers (truncated or corrupt .npy file"),
])
def test_search_vector_mistakes_are_one_line(vec_index, tmp_path, value, why):
    q = tmp_path / "q.npy"
    if isinstance(value, bytes):
        q.write_bytes(value)
    else:
        np.save(q, value, allow_pickle=value.dtype == object)
    r = cli("search", vec_index, "--vector", q)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --vector {q}") and why in lines[0], r.output

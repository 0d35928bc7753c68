"""A damaged ``vectors:`` file (issue 14, item 14): .npy, .npz and .parquet files that are corrupt, lie in their
header, hold objects, pickles, strings or ragged rows are one line naming the file; nothing is ever unpickled."""

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.encoders.base import get_encoder
from anybind.errors import DataError
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

from artefact_helpers import cli_error


class _Touch:
    """Unpickling this would create the marker file: proof that nothing is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def _vectors_file(tmp_path, case):
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = ["r0", "r1", "r2"]
    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    if case.endswith("npy"):
        p = tmp_path / "v.npy"
        p.with_name("v.npy.ids.txt").write_text("\n".join(ids))
    elif case.endswith("npz"):
        p = tmp_path / "v.npz"
    else:
        p = tmp_path / "v.parquet"
    if case == "corrupt-npy":
        p.write_bytes(b"\x93NUMPY\x01\x00garbage")
    elif case == "truncated-npy":
        np.save(p, good)
        p.write_bytes(p.read_bytes()[:-5])
    elif case == "lying-header-npy":  # states 29 TiB: refused before allocating
        with open(p, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)})
            f.write(b"\0" * 64)
    elif case == "object-npy":
        np.save(p, np.array([[1.0, None], [2.0, "x"], [3.0, 4.0]], dtype=object), allow_pickle=True)
    elif case == "pickled-npy":
        p.write_bytes(pickle.dumps(_Touch(tmp_path / "UNPICKLED")))
    elif case == "strings-npy":
        np.save(p, np.array([["a", "b"]] * 3))
    elif case == "complex-npy":
        np.save(p, good.astype(np.complex64))
    elif case == "not-a-zip-npz":
        p.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "object-npz":
        np.savez(p, ids=np.array(ids), vectors=np.array([[1, None]] * 3, dtype=object))
    elif case == "lying-header-npz":
        import io
        import zipfile

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)})
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("vectors.npy", buf.getvalue() + b"\0" * 64)
            ids_buf = io.BytesIO()
            np.save(ids_buf, np.array(ids))
            z.writestr("ids.npy", ids_buf.getvalue())
    elif case == "ragged-parquet":
        pq.write_table(pa.table({"id": ids, "vector": [[1.0, 2.0], [3.0], [4.0, 5.0]]}), p)
    elif case == "null-row-parquet":
        pq.write_table(pa.table({"id": ids, "vector": [[1.0, 2.0], None, [4.0, 5.0]]}), p)
    elif case == "null-value-parquet":
        pq.write_table(pa.table({"id": ids, "vector": [[1.0, 2.0], [None, 1.0], [4.0, 5.0]]}), p)
    elif case == "string-vector-parquet":
        pq.write_table(pa.table({"id": ids, "vector": [["a"], ["b"], ["c"]]}), p)
    elif case == "string-columns-parquet":
        pq.write_table(pa.table({"id": ids, "x": ["1", "2", "3"]}), p)
    elif case == "not-parquet":
        p.write_bytes(b"PAR1 this is not parquet PAR1")
    return p


VECTOR_CASES = {
    "corrupt-npy": "not a readable .npy vectors file",
    "truncated-npy": "not a readable .npy vectors file",
    "lying-header-npy": "not a readable .npy vectors file .* greater than file size",
    "object-npy": "not a readable .npy vectors file .*Python objects",
    "pickled-npy": "not a readable .npy vectors file .*pickled",
    "strings-npy": "vectors have dtype <U1, expected real numbers",
    "complex-npy": "vectors have dtype complex64, expected real numbers",
    "not-a-zip-npz": "not a readable .npz vectors file",
    "object-npz": "'vectors' is an object array",
    "lying-header-npz": r"'vectors' states shape \(1000000000000, 8\) but holds only",
    "ragged-parquet": r"the 'vector' column is ragged \(rows of lengths \[1, 2\]\)",
    "null-row-parquet": r"the 'vector' column is not a list for ids \['r1'\]",
    "null-value-parquet": "the 'vector' column has missing values",
    "string-vector-parquet": "vectors have dtype <U1",
    "string-columns-parquet": r"numeric columns \(not \['x'\]\)",
    "not-parquet": "not a readable .parquet vectors file",
}


@pytest.mark.parametrize("case", sorted(VECTOR_CASES))
def test_a_bad_vectors_file_is_one_line_naming_it(tmp_path, case):
    p = _vectors_file(tmp_path, case)
    with pytest.raises(DataError, match=VECTOR_CASES[case]) as e:
        get_encoder(f"vectors:{p}", cached=False)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "UNPICKLED").exists()  # nothing is ever unpickled


def test_embed_with_a_damaged_vectors_file_is_one_cli_line(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "v.parquet"
    pq.write_table(pa.table({"id": ["r0", "r1"], "vector": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}), p)
    spec = f"vectors:{p}"
    space = Space({"vec": spec}, {"vec": Projector(ProjectorConfig(in_dim=3, out_dim=4, kind="linear"))})
    space.save(tmp_path / "sp")
    assert CliRunner().invoke(app, ["embed", str(tmp_path / "sp"), "-m", "vec", "r0", "--cache", str(tmp_path / "c")]
                              ).exit_code == 0
    pq.write_table(pa.table({"id": ["r0", "r1"], "vector": [[1.0, 2.0, 3.0], [4.0]]}), p)
    monkeypatch.setattr("anybind.space_core.get_encoder", lambda s: get_encoder(s, cached=False))  # as a new process
    out = cli_error(["embed", str(tmp_path / "sp"), "-m", "vec", "r0", "--cache", str(tmp_path / "c")])
    assert f"{p}: the 'vector' column is ragged" in out

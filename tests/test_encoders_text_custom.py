"""The text encoder (real MiniLM from its package), callable and vectors encoders, the registry."""


import numpy as np
import pytest

from anybind.encoders.base import Encoder, get_encoder, register_encoder, registered_prefixes
from anybind.errors import DataError, EncoderError


def test_minilm_offline_real_semantics():
    enc = get_encoder("text:minilm")
    assert enc.modality == "text" and enc.dim == 384
    X = enc.encode(["a small dog barking", "a puppy making noise", "a tax form for income"])
    assert X.shape == (3, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-4)
    assert X[0] @ X[1] > X[0] @ X[2] + 0.2
    assert np.allclose(X, enc.encode(["a small dog barking", "a puppy making noise", "a tax form for income"]), atol=1e-6)
    assert enc.identity.startswith("text:minilm|weights=")
    assert get_encoder("text") is enc  # bare modality -> default spec, one instance


def test_empty_text_rejected():
    with pytest.raises(DataError, match="empty text"):
        get_encoder("text:minilm").load("  ")


def test_unknown_prefix_lists_known():
    with pytest.raises(EncoderError, match="prefix 'smell' is not registered"):
        get_encoder("smell:nose")
    assert {"text", "image", "audio", "callable", "vectors"} <= set(registered_prefixes())


def test_register_user_encoder():
    class Const(Encoder):
        modality, dim, input_kind = "imu", 3, "key"

        def __init__(self, name):
            self.name = name

        @property
        def identity(self):
            return f"imu:{self.name}|v1"

        def encode_loaded(self, batch):
            return np.ones((len(batch), 3)) * len(self.name)

    register_encoder("imu")(Const)
    enc = get_encoder("imu:abc", cached=False)
    assert enc.spec == "imu:abc" and np.all(enc.encode(["x", "y"]) == 3)


def test_callable_encoder_identity_and_errors():
    enc = get_encoder("callable:helper_encoders:hashed_text")
    assert enc.dim == 8 and enc.input_kind == "text" and "src=" in enc.identity
    with pytest.raises(EncoderError, match="cannot import module"):
        get_encoder("callable:no_such_module_xyz:f")
    with pytest.raises(EncoderError, match="not a callable"):
        get_encoder("callable:helper_encoders:__doc__")
    with pytest.raises(EncoderError, match="must be 'callable:<module>:<function>'"):
        get_encoder("callable:justonepart")


@pytest.mark.parametrize("fmt", ["npz", "npy", "parquet"])
def test_vectors_encoder_formats(tmp_path, fmt):
    ids = ["a", "b", "c"]
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    if fmt == "npz":
        p = tmp_path / "v.npz"
        np.savez(p, ids=np.array(ids), vectors=X)
    elif fmt == "npy":
        p = tmp_path / "v.npy"
        np.save(p, X)
        (tmp_path / "v.npy.ids.txt").write_text("\n".join(ids))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = tmp_path / "v.parquet"
        pq.write_table(pa.table({"id": ids, "vector": X.tolist()}), p)
    enc = get_encoder(f"vectors:{p}", cached=False)
    assert enc.dim == 4
    assert np.array_equal(enc.encode(["c", "a"]), X[[2, 0]])
    with pytest.raises(DataError, match="no vector for id 'zz'"):
        enc.encode(["zz"])


def test_vectors_encoder_bad_files(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((2, 2)))
    with pytest.raises(DataError, match="ids.txt"):
        get_encoder(f"vectors:{p}", cached=False)
    (tmp_path / "v.npy.ids.txt").write_text("a\na")
    with pytest.raises(DataError, match="duplicate ids"):
        get_encoder(f"vectors:{p}", cached=False)
    q = tmp_path / "w.npz"
    np.savez(q, ids=np.array(["a", "b"]), vectors=np.array([[1.0, np.nan], [0, 0]]))
    with pytest.raises(DataError, match="non-finite"):
        get_encoder(f"vectors:{q}", cached=False)
    with pytest.raises(DataError, match="does not exist"):
        get_encoder(f"vectors:{tmp_path / 'none.npz'}", cached=False)

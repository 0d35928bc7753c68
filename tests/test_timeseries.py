"""Time series: the series loader, the MiniRocket / Fracast encoders, the corpus builder, fit + zero-shot."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anybind.encoders.timeseries import (
    FRACAST_DIM,
    MINIROCKET_FEATURES,
    as_series,
    load_series,
    reference_series,
    resample_linear,
    znormalise,
)
from anybind.errors import DataError, EncoderError

AEON_DATA = Path(__import__("anybind.encoders.timeseries", fromlist=["aeon_data_dir"]).aeon_data_dir())


# ----------------------------------------------------------------------------- loading


def test_npy_1d_and_2d(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", np.arange(5, dtype=np.int16))
    a = load_series(tmp_path / "a.npy")
    assert a.shape == (3, 4) and a.dtype == np.float64 and np.array_equal(a, x)
    assert load_series(tmp_path / "b.npy").shape == (1, 5)


def test_csv_rows_are_time_steps(tmp_path):
    (tmp_path / "h.csv").write_text("acc_x,acc_y\n1,10\n2,20\n3,30\n")
    (tmp_path / "n.csv").write_text("1;10\n2;20\n3;30\n")
    (tmp_path / "w.txt").write_text("1 10\n2 20\n\n3 30\n")
    want = np.array([[1, 2, 3], [10, 20, 30]], dtype=np.float64)
    for name in ("h.csv", "n.csv", "w.txt"):
        assert np.array_equal(load_series(tmp_path / name), want), name


def test_format_is_sniffed_not_named(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((2, 3)))
    shutil.copy(tmp_path / "s.npy", tmp_path / "s.csv")
    assert load_series(tmp_path / "s.csv").shape == (2, 3)
    (tmp_path / "t.npy").write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match=r"t\.npy.*not a \.npy"):
        load_series(tmp_path / "t.npy")
    # text that merely starts like a zip's "PK" is not an .npz, and holds no pickle
    for i, text in enumerate(("PK,PL\n1,2\n", "PK")):
        (tmp_path / f"pk{i}.npy").write_text(text)
        with pytest.raises(DataError, match=r"not a \.npy file \(no NUMPY magic number\)"):
            load_series(tmp_path / f"pk{i}.npy")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("missing.npy", None, "does not exist"),
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n  \n", "no rows"),
        ("header_only.csv", b"a,b\n", "no data rows"),
        ("word.csv", b"1,2\n3,abc\n", "line 2: 'abc' is not a number"),
        ("hole.csv", b"1,2\n3,\n", "line 2: empty cell"),
        ("ragged.csv", b"1,2\n3,4,5\n", "line 2 has 3 columns"),
        ("nan.csv", b"1,2\nnan,4\n", r"non-finite.*channel 0, step 1"),
        ("short.csv", b"1,2\n", "1 time step"),
        ("binary.csv", b"\xff\xfe\x00garbage", "neither a .npy file nor UTF-8"),
    ],
)
def test_bad_text_files_name_the_file(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        load_series(p)
    assert name in str(e.value)


def test_bad_npy_files_name_the_file(tmp_path):
    cases = {
        "nan.npy": np.array([[1.0, np.nan, 3.0]]),
        "inf.npy": np.array([1.0, np.inf, 3.0]),
        "cube.npy": np.zeros((2, 3, 4)),
        "none.npy": np.zeros((3, 0)),
        "text.npy": np.array(["a", "b"]),
        "cplx.npy": np.array([1 + 1j, 2 + 0j]),
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError) as e:
            load_series(tmp_path / name)
        assert name in str(e.value), name
    full = (tmp_path / "nan.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(full[: len(full) - 5])
    with pytest.raises(DataError, match=r"cut\.npy"):
        load_series(tmp_path / "cut.npy")


class _Boom:
    """Unpickling this creates a folder: the marker of a loader that unpickles."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickles_are_refused_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _Boom(str(marker)), 1.0
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(DataError, match=r"evil\.npy.*pickle"):
        load_series(tmp_path / "evil.npy")
    assert not marker.exists()


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(2, 40)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    )
)
def test_npy_and_csv_round_trip(tmp_path_factory, x):
    d = tmp_path_factory.mktemp("rt")
    np.save(d / "x.npy", x)
    (d / "x.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in x.T) + "\n")
    assert np.array_equal(load_series(d / "x.npy"), x)
    assert np.array_equal(load_series(d / "x.csv"), x)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(2, 300), st.integers(8, 600), st.floats(-1e3, 1e3), st.floats(1e-3, 1e3))
def test_preprocessing_is_scale_free_and_keeps_ends(c, n, length, shift, scale):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((c, n))
    r = resample_linear(x, length)
    assert r.shape == (c, length)
    assert np.allclose(r[:, 0], x[:, 0]) and np.allclose(r[:, -1], x[:, -1])
    z = znormalise(x)
    assert np.allclose(znormalise(x * scale + shift), z, atol=1e-6)
    assert np.allclose(znormalise(np.full((2, n), shift)), 0.0)


def test_manifest_reports_bad_series_and_keeps_the_rest(tmp_path):
    from anybind.data.manifest import load_manifest

    np.save(tmp_path / "good.npy", np.arange(10.0))
    np.save(tmp_path / "bad.npy", np.array([1.0, np.nan, 2.0]))
    lines = [
        {"id": "good", "split": "train", "timeseries": "good.npy", "text": "a ramp"},
        {"id": "bad", "split": "train", "timeseries": "bad.npy", "text": "a hole"},
        {"id": "gone", "split": "train", "timeseries": "gone.csv", "text": "nothing"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    man = load_manifest(tmp_path / "m.jsonl")
    assert [r.id for r in man.records] == ["good"]
    reasons = {b.id: b.reason for b in man.bad}
    assert "bad.npy" in reasons["bad"] and "non-finite" in reasons["bad"]
    assert "gone.csv" in reasons["gone"]


def test_as_series_validates_arrays():
    assert as_series([1, 2, 3]).shape == (1, 3)
    with pytest.raises(DataError, match="in memory"):
        as_series(np.array([[1.0]]), "in memory")


# ----------------------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def minirocket():
    """One fitted MiniRocket for the module (the first fit/transform compiles numba kernels, ~30 s cold)."""
    from anybind.encoders.base import get_encoder

    enc = get_encoder("timeseries:minirocket")
    enc.encode([np.sin(np.linspace(0, 9, 50))])  # fit + compile once
    return enc


def _series(seed: int, c: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((c, n)), axis=1)


@pytest.mark.slow
def test_minirocket_features_do_not_depend_on_the_batch(minirocket):
    items = [_series(i, c, n) for i, (c, n) in enumerate([(1, 30), (6, 100), (3, 700), (2, 9), (1, 2048)])]
    all_at_once = minirocket.encode(items)
    assert all_at_once.shape == (5, MINIROCKET_FEATURES) and all_at_once.dtype == np.float32
    one_by_one = np.concatenate([minirocket.encode([x]) for x in items])
    shuffled = minirocket.encode(items[::-1])[::-1]
    with_others = minirocket.encode([_series(99, 2, 50)] + items[1:3], batch_size=2)[1:]
    assert np.array_equal(all_at_once, one_by_one)
    assert np.array_equal(all_at_once, shuffled)
    assert np.array_equal(all_at_once[1:3], with_others)
    # scale- and offset-free (z-normalised channels), and not a constant map
    assert np.array_equal(minirocket.encode([items[1] * 1000 + 5])[0], all_at_once[1])
    assert np.abs(all_at_once[0] - all_at_once[1]).max() > 0.05


@pytest.mark.slow
def test_minirocket_is_fitted_on_a_pinned_reference(minirocket, tmp_path):
    from anybind.encoders.base import get_encoder

    # a fresh instance (fitted again) gives the same features and identity
    fresh = get_encoder("timeseries:minirocket", cached=False)
    x = [_series(3, 2, 120)]
    state = np.random.get_state()
    assert np.array_equal(fresh.encode(x), minirocket.encode(x))
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator untouched
    assert fresh.identity == minirocket.identity and "aeon=" in fresh.identity
    assert reference_series().shape == (128, 512)
    # fitted on your own reference: another encoder, identity pinned to the reference's content
    np.save(tmp_path / "ref.npy", np.stack([_series(i, 1, 200)[0] for i in range(20)]))
    own = get_encoder(f"timeseries:minirocket@{tmp_path / 'ref.npy'}", cached=False)
    assert own.identity != minirocket.identity
    f_own = own.encode(x)
    assert f_own.shape == (1, MINIROCKET_FEATURES) and not np.array_equal(f_own, minirocket.encode(x))
    np.save(tmp_path / "ref.npy", np.stack([_series(i, 1, 200)[0] for i in range(21)]))
    assert get_encoder(f"timeseries:minirocket@{tmp_path / 'ref.npy'}", cached=False).identity != own.identity
    assert "BasicMotions" in get_encoder("timeseries:minirocket@BasicMotions", cached=False).identity
    with pytest.raises(EncoderError, match="neither a .npy file nor a bundled aeon dataset"):
        _ = get_encoder("timeseries:minirocket@NoSuchSet", cached=False).identity
    with pytest.raises(EncoderError, match="unknown time series encoder"):
        get_encoder("timeseries:rocket", cached=False)


def test_fracast_shape_determinism_and_lengths():
    from anybind.encoders.base import get_encoder

    enc = get_encoder("timeseries:fracast")
    assert enc.dim == FRACAST_DIM == 192 and "weights=" in enc.identity
    items = [_series(0, 3, 100), _series(1, 1, 5), _series(2, 2, 3000)]
    F = enc.encode(items)
    assert F.shape == (3, 192) and np.isfinite(F).all()
    one = np.concatenate([enc.encode([x]) for x in items])
    assert np.allclose(F, one, atol=1e-6, rtol=0)
    assert np.allclose(enc.encode([items[0] * 7 - 3])[0], F[0], atol=1e-5)  # min-max normalised per channel
    assert np.abs(F[0] - F[2]).max() > 1e-3


def test_encoders_refuse_bad_inputs(tmp_path):
    from anybind.cache import FeatureCache
    from anybind.encoders.base import get_encoder

    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan, 1.0]))
    enc = get_encoder("timeseries:fracast")
    with pytest.raises(DataError, match=r"nan\.npy"):
        FeatureCache(tmp_path / "cache").encode(enc, [str(tmp_path / "nan.npy")], progress=False)
    with pytest.raises(DataError, match="not a time series"):
        enc.load({"a": 1})


# ----------------------------------------------------------------------------- corpus


def _read_manifest(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]


def test_corpus_builder_splits_counts_and_files(tmp_path):
    from anybind.corpora.timeseries import build_timeseries
    from anybind.encoders.timeseries import load_aeon_split

    out = tmp_path / "ts"
    s = build_timeseries(out, datasets=["BasicMotions", "PickupGestureWiimoteZ"], limit=12, progress=False)
    recs = _read_manifest(out)
    assert s.records == len(recs) == 48 and s.skipped == {}
    by = {(r["labels"]["dataset"], r["split"]) for r in recs}
    assert ("BasicMotions", "test") in by and ("PickupGestureWiimoteZ", "val") in by
    # the dataset's own test set is the test split; val is carved per class from its train set
    assert all(r["split"] == "test" for r in recs if "/test/" in r["id"])
    assert all(r["split"] in ("train", "val") for r in recs if "/train/" in r["id"])
    for ds in ("BasicMotions", "PickupGestureWiimoteZ"):
        tr = [r for r in recs if r["labels"]["dataset"] == ds and r["split"] in ("train", "val")]
        for c in {r["labels"]["class"] for r in tr}:
            n = [r for r in tr if r["labels"]["class"] == c]
            nval = sum(r["split"] == "val" for r in n)
            assert nval == (0 if len(n) < 2 else min(max(round(0.2 * len(n)), 1), len(n) - 1))
    # files hold exactly the .ts values; texts describe the class
    X, _, _ = load_aeon_split("BasicMotions", "TEST")
    r0 = next(r for r in recs if r["id"] == "BasicMotions/test/0000")
    assert np.array_equal(load_series(out / r0["timeseries"]), X[0])
    assert r0["meta"] == {"channels": 6, "length": 100}
    texts = {r["labels"]["class"]: r["text"] for r in recs}
    assert texts["pick-up"] == "a hand picking something up"
    assert {r["text"] for r in recs if r["labels"]["dataset"] == "BasicMotions"} <= {
        "a person standing still", "a person walking", "a person running", "a person playing badminton"}
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["kept"] == 48 and meta["dropped"] == 0 and "BSD-3-Clause" in meta["license"]
    assert "BSD 3-Clause" in (out / "LICENSE").read_text() and "UCR time series archive" in (out / "LICENSE").read_text()
    # deterministic: a rebuild is byte-identical
    first = (out / "manifest.jsonl").read_bytes()
    build_timeseries(out, datasets=["BasicMotions", "PickupGestureWiimoteZ"], limit=12, progress=False)
    assert (out / "manifest.jsonl").read_bytes() == first


def test_corpus_damaged_inputs_are_reported_not_fatal(tmp_path):
    from anybind.corpora.timeseries import build_timeseries

    data = tmp_path / "data"
    (data / "BasicMotions").mkdir(parents=True)
    src = (AEON_DATA / "BasicMotions" / "BasicMotions_TRAIN.ts").read_text().split("\n")
    i = next(k for k, ln in enumerate(src) if ln.startswith("@data")) + 3  # series 2 gets a NaN
    src[i] = "NaN," + src[i].split(",", 1)[1]
    (data / "BasicMotions" / "BasicMotions_TRAIN.ts").write_text("\n".join(src))  # no TEST file
    shutil.copytree(AEON_DATA / "GunPoint", data / "GunPoint")
    (data / "GunPoint" / "GunPoint_TEST.ts").write_text("@problemName GunPoint\n@data\nnot,a,series:zz\n")
    out = tmp_path / "ts"
    s = build_timeseries(out, datasets=["BasicMotions", "GunPoint"], data_dir=data, progress=False)
    meta = json.loads((out / "corpus.json").read_text())
    assert s.skipped == {"bad_series": 1} and meta["skipped_ids"] == {"bad_series": ["BasicMotions/train/0002"]}
    assert "non-finite" in meta["bad_series_reasons"]["BasicMotions/train/0002"]
    assert set(meta["missing_sources"]) == {"BasicMotions/test", "GunPoint/test"}
    assert s.records == 39 + 50 and s.splits["test"] == 0
    with pytest.raises(DataError, match="unknown time series dataset"):
        build_timeseries(tmp_path / "x", datasets=["NoSuchSet"], progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no time series could be read"):
        build_timeseries(tmp_path / "y", datasets=["BasicMotions"], data_dir=empty, progress=False)
    assert not (tmp_path / "y").exists()


def test_cli_corpus_timeseries(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    res = CliRunner().invoke(app, ["corpus", "timeseries", "--out", str(tmp_path / "c"), "--dataset", "GunPoint",
                                   "--limit", "4"])
    assert res.exit_code == 0, res.output
    assert "8 records" in res.output
    res = CliRunner().invoke(app, ["corpus", "timeseries", "--out", str(tmp_path / "d"), "--dataset", "Nope"])
    assert res.exit_code == 2 and "unknown time series dataset" in res.output


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_fit_and_zero_shot_on_basicmotions(minirocket, tmp_path):
    from anybind.corpora.timeseries import build_timeseries
    from anybind.data.manifest import load_manifest
    from anybind.evaluate import zero_shot
    from anybind.space import Space

    out = tmp_path / "bm"
    build_timeseries(out, datasets=["BasicMotions"], progress=False)
    man = load_manifest(out / "manifest.jsonl", modalities=["timeseries", "text"])
    space = Space.fit(man, modalities=["timeseries", "text"], cache=tmp_path / "cache", lock="text", init="ridge",
                      seed=0, progress=False)
    assert space.encoders["timeseries"] == "timeseries:minirocket"  # the modality's default encoder
    test = man.split("test")
    desc = {r.labels["class"]: r.values["text"] for r in man.records}
    zs = zero_shot(space, test, "timeseries", "class", names=lambda c: desc[c], templates=("{}", "a recording of {}."),
                   cache=tmp_path / "cache")
    assert zs["n"] == 40 and zs["classes"] == 4
    assert zs["accuracy"] >= 0.25 + 0.4, zs  # chance 0.25; measured 0.95
    # the saved space reloads and embeds a series file identically
    space.save(tmp_path / "space")
    again = Space.load(tmp_path / "space")
    v = test[0].values["timeseries"]
    assert np.allclose(space.embed("timeseries", [v], cache=tmp_path / "cache"),
                       again.embed("timeseries", [v], cache=tmp_path / "cache"), atol=1e-6)

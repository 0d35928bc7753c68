"""FusionClassifier: every kind learns, survives missing modalities, balances, saves exactly."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from anybind import Space, load_manifest
from anybind.data.manifest import Record
from anybind.errors import DataError
from anybind.fusion import FusionClassifier, ogm_coefficients

SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
FAST_SPACE = {"epochs": 25, "patience": 8, "hidden": 64, "dim": 32, "progress": False}
N_CLASSES = 4


def make_labelled(tmp_path, n=320, seed=0, noise=(0.6, 0.6, 0.6)):
    """Three vector modalities, each a noisy view of a class-dependent latent: labels recoverable from each."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    centres = rng.normal(size=(N_CLASSES, 8)) * 2.0
    z = centres[y] + 0.3 * rng.normal(size=(n, 8))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for (name, d), s in zip((("sa", 24), ("sb", 20), ("sc", 16)), noise):
        X = z @ rng.normal(size=(8, d)) + s * rng.normal(size=(n, d)) * np.sqrt(8)
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            rec = {"id": str(rid), "split": SPLIT_CYCLE[i % 10], "sa": True, "sb": True, "sc": True,
                   "labels": {"cls": f"c{y[i]}"}}
            f.write(json.dumps(rec) + "\n")
    return tmp_path / "m.jsonl", specs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    m, specs = make_labelled(tmp)
    space = Space.fit(m, encoders=specs, cache=tmp / "c", **FAST_SPACE)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    return tmp, space, man


FIT = {"epochs": 30, "hidden": 32, "seed": 0}


@pytest.mark.parametrize("kind", ["late", "concat", "gated", "attention"])
def test_every_kind_learns_above_chance(setup, kind):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind=kind, **FIT).fit(man, "cls", cache=tmp / "c")
    res = clf.evaluate(man.split("test"), missing="all-subsets", cache=tmp / "c")
    assert len(res) == 2**3 - 1
    assert res["sa+sb+sc"] > 0.7  # chance is 0.25
    hist = clf.history_
    assert len(hist) == 30 and set(hist[-1]["contribution"]) == {"sa", "sb", "sc"}
    assert "ogm_ratio" in hist[-1] and "ogm_coeff" in hist[-1]


def test_dropout_and_reconstruction_keep_single_modalities_close(setup):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="attention", dropout=0.5, reconstruct=True, **FIT)
    clf.fit(man, "cls", cache=tmp / "c")
    res = clf.evaluate(man.split("test"), cache=tmp / "c")
    full = res["sa+sb+sc"]
    for m in ("sa", "sb", "sc"):
        assert res[m] >= full - 0.15, res
    # the decoder really reconstructs: a dropped modality's prediction points towards its true embedding
    X, mask = clf._inputs(man.split("test"), tmp / "c")
    m2 = mask.copy()
    m2[:, 1] = False
    with torch.no_grad():
        rec = clf.net.reconstruct(torch.from_numpy(X * m2[..., None]), torch.from_numpy(m2)).numpy()
    cos = (rec[:, 1] * X[:, 1]).sum(-1)
    Xtr, _ = clf._inputs(man.split("train"), tmp / "c")
    mean = Xtr[:, 1].mean(0)
    baseline = X[:, 1] @ (mean / np.linalg.norm(mean))  # best input-blind guess
    assert cos.mean() > baseline.mean() + 0.1, (cos.mean(), baseline.mean())


def test_record_without_modality_is_a_data_error(setup):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb"], kind="late", epochs=3, hidden=16).fit(man, "cls", cache=tmp / "c")
    recs = man.split("test")[:3] + [Record(id="lonely", split="test", values={"sc": "r0"}, labels={"cls": "c0"})]
    with pytest.raises(DataError, match="lonely"):
        clf.predict(recs, cache=tmp / "c")
    # a record with only one of the modalities is fine
    one = [Record(id="r1", split="test", values={"sb": "r1"})]
    assert clf.predict(one, cache=tmp / "c")[0] in clf.classes_


def test_save_load_identical_predictions(setup):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="gated", epochs=5, hidden=16).fit(man, "cls", cache=tmp / "c")
    test = man.split("test")
    before = clf.predict_proba(test, cache=tmp / "c")
    clf.save(tmp / "fz")
    clf.save(tmp / "fz")  # overwrite atomically
    assert not [p for p in tmp.iterdir() if p.name.startswith(".fz")]
    loaded = FusionClassifier.load(tmp / "fz", space)
    assert np.array_equal(before, loaded.predict_proba(test, cache=tmp / "c"))
    assert loaded.predict(test, cache=tmp / "c") == clf.predict(test, cache=tmp / "c")
    assert loaded.history_ == json.loads(json.dumps(clf.history_))


def test_ogm_coefficient_below_one_for_dominant_modality():
    ratios, coeffs = ogm_coefficients(torch.tensor([0.9, 0.3, 0.3]), alpha=0.5)
    assert coeffs[0] < 1 and coeffs[1] == 1 and coeffs[2] == 1
    assert ratios[0] > 1 > ratios[1]


def test_ogm_modulates_the_dominant_modality_in_training(tmp_path):
    m, specs = make_labelled(tmp_path, noise=(0.05, 2.5, 2.5))  # sa nearly clean, sb/sc very noisy
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST_SPACE)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="late", balance="ogm-ge", epochs=10, hidden=32)
    clf.fit(man, "cls", cache=tmp_path / "c")
    last = clf.history_[-1]
    assert last["ogm_coeff"]["sa"] < 1
    assert last["ogm_coeff"]["sa"] < min(last["ogm_coeff"]["sb"], last["ogm_coeff"]["sc"])
    assert last["contribution"]["sa"] >= last["contribution"]["sb"]


def test_modality_dropout_never_drops_everything(setup):
    _, space, _ = setup
    clf = FusionClassifier(space, ["sa", "sb", "sc"], dropout=0.9)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand((2000, 3), generator=g) < 0.6
    mask[~mask.any(1), 0] = True
    kept = clf._drop(mask, g)
    assert kept.any(1).all()  # at least one modality survives in every row
    assert not (kept & ~mask).any()  # never invents an absent modality
    rate = 1 - kept.sum() / mask.sum()
    assert 0.3 < float(rate) < 0.9  # dropping happens, bounded by the keep-one rule


def test_reconstruct_false_at_inference_uses_the_masked_path(setup):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb", "sc"], kind="concat", **FIT).fit(man, "cls", cache=tmp / "c")
    test = man.split("test")
    a = clf.evaluate(test, cache=tmp / "c")
    b = clf.evaluate(test, cache=tmp / "c", reconstruct=False)
    assert a["sa+sb+sc"] == b["sa+sb+sc"]  # nothing to fill when all are present
    assert b["sa+sb+sc"] > 0.7 and min(b[m] for m in ("sa", "sb", "sc")) > 0.4
    res, cnt = clf.evaluate(test, cache=tmp / "c", counts=True)
    assert res == a
    assert set(cnt.values()) == {len(test)}


@pytest.fixture(scope="module")
def tux_top(tux_dir, tmp_path_factory):
    """A real Tux Paint slice: 160 stamps from the 4 largest top-level categories, image + English caption."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    big = [c for c, _ in Counter(r["labels"]["top"] for r in recs).most_common(4)]
    out = tmp_path_factory.mktemp("fusetux") / "manifest.jsonl"
    per = {c: 0 for c in big}
    with open(out, "w") as f:
        for i, r in enumerate(recs):
            c = r["labels"]["top"]
            if c not in per or per[c] >= 40:
                continue
            per[c] += 1
            keep = {"id": r["id"], "text": r["text"], "image": str(tux_dir / r["image"]), "labels": {"top": c},
                    "split": ("test" if per[c] % 4 == 0 else "train")}
            f.write(json.dumps(keep) + "\n")
    return out


def test_real_tuxpaint_top_category_survives_a_missing_modality(tux_top, shared_cache):
    man = load_manifest(tux_top, modalities=["image", "text"])
    space = Space.fit(man, modalities=["image", "text"], encoders={"image": "image:efficientnet-lite0+bridge"},
                      cache=shared_cache, epochs=15, dim=64, hidden=128, progress=False)
    clf = FusionClassifier(space, ["image", "text"], kind="attention", dropout=0.3, epochs=40, seed=0)
    clf.fit(man, "top", cache=shared_cache)
    test = man.split("test")
    res = clf.evaluate(test, cache=shared_cache)
    assert set(res) == {"image", "text", "image+text"}
    majority = max(Counter(r.labels["top"] for r in test).values()) / len(test)
    for subset, acc in res.items():
        assert acc > majority + 0.15, (subset, res, majority)
    assert res["image+text"] >= max(res["image"], res["text"]) - 0.05


def test_cli_fuse_train_and_eval_all_subsets(setup, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, space, man = setup
    space.save(tmp_path / "sp")
    runner = CliRunner()
    r = runner.invoke(app, ["fuse", "train", str(man.path), "--space", str(tmp_path / "sp"), "--label", "cls",
                            "--modalities", "sa,sb,sc", "--out", str(tmp_path / "model"), "--kind", "late",
                            "--epochs", "15", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # Rich wraps lines at the terminal width
    assert "4 classes" in out and "contribution" in out
    r = runner.invoke(app, ["fuse", "eval", str(tmp_path / "model"), str(man.path), "--space", str(tmp_path / "sp"),
                            "--missing", "all-subsets", "--json", str(tmp_path / "res.json"),
                            "--png", str(tmp_path / "rob.png"), "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "res.json").read_text())
    assert len(res["accuracy"]) == 7 and res["accuracy"]["sa+sb+sc"] > 0.7
    assert "sa+sb+sc" in r.output and (tmp_path / "rob.png").stat().st_size > 1000
    r = runner.invoke(app, ["fuse", "train", str(man.path), "--space", str(tmp_path / "sp"), "--label", "nope",
                            "--modalities", "sa", "--out", str(tmp_path / "m2"), "--cache", str(tmp / "c")])
    assert r.exit_code == 2 and "nope" in " ".join(r.output.split())

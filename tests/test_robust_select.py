"""Selection on another corpus (issue 16): Space.fit(select_data=...) chooses the epoch, the WiSE-FT alpha and the
ridge shrinkage on a held-out corpus' val records instead of the training data's own."""

import json

import numpy as np
import pytest

from anybind import Space, load_manifest
from anybind.cache import FeatureCache
from anybind.errors import DataError
from anybind.train import FeatureSet, selection_set, val_score

from test_robust import FAST, fit, make_pairs, same, weights

SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2


def two_corpora(tmp_path, n=500, shift=1.0, seed=0):
    """Corpus 'a' and corpus 'b': the same latent, text views alike, image views under different maps
    (``shift`` moves b's map away from a's): what fits a best is not what transfers to b best."""
    rng = np.random.default_rng(seed)
    Wt, Wi = rng.normal(size=(12, 16)), rng.normal(size=(12, 24))
    Wb = Wi + shift * rng.normal(size=(12, 24))
    ids, tx, im = [], [], []
    for name, W in (("a", Wi), ("b", Wb)):
        z = rng.normal(size=(n, 12))
        ids += [f"{name}{i}" for i in range(n)]
        tx.append(z @ Wt + 1.0 * rng.normal(size=(n, 16)))
        im.append(np.tanh(3 * z @ W) + 1.0 * rng.normal(size=(n, 24)))
    specs = {}
    for key, X in (("tx", np.concatenate(tx)), ("im", np.concatenate(im))):
        np.savez(tmp_path / f"{key}.npz", ids=np.array(ids), vectors=X)
        specs[key] = f"vectors:{tmp_path / f'{key}.npz'}"
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.jsonl"
        with open(paths[name], "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"{name}{i}", "split": SPLITS[i % 10], "tx": True, "im": True}) + "\n")
    return paths, specs


def features(tmp_path, path, specs, split="val"):
    man = load_manifest(path, kinds={k: "key" for k in specs})
    return selection_set([man], specs, FeatureCache(tmp_path / "c"), split=split, progress=False)


def test_selecting_on_the_own_val_split_is_the_plain_fit(tmp_path):
    m, specs = make_pairs(tmp_path)
    plain = fit(tmp_path, m, specs, wise="auto")
    own = fit(tmp_path, m, specs, wise="auto", select_data=m)
    assert same(weights(plain), weights(own))
    assert own.info["metrics"]["val/score"] == plain.info["metrics"]["val/score"]
    assert own.info["training"]["select_data"]["split"] == "val"
    assert "select_data" not in plain.info["training"]


def test_selection_on_another_corpus_chooses_epoch_and_alpha_there(tmp_path):
    paths, specs = two_corpora(tmp_path)
    kw = dict(epochs=25, patience=25)
    home = fit(tmp_path, paths["a"], specs, wise="auto", **kw)
    away = fit(tmp_path, paths["a"], specs, wise="auto", select_data=paths["b"], **kw)
    sel = away.info["training"]["select_data"]
    assert sel["records"] == 50 and sel["data"] == [str(paths["b"])]
    vb = features(tmp_path, paths["b"], away.encoders)
    b_idx = vb.split_idx("val")
    # every recorded val score is b's: the chosen mixture's, recomputed from scratch
    got = val_score(away.projectors, vb, b_idx, [("im", "tx")])
    assert away.info["metrics"]["val/score"] == pytest.approx(got, abs=1e-9)
    rec = away.info["training"]["robust"]
    assert rec["wise_val_chosen"] == max(rec["wise_val"].values())
    # the WiSE-FT grid was scored on b: its alpha-0 end is the ridge start (its shrinkage chosen on b too) on b
    start = fit(tmp_path, paths["a"], specs, epochs=0, select_data=paths["b"])
    assert rec["wise_val"]["0.0"] == pytest.approx(val_score(start.projectors, vb, b_idx, [("im", "tx")]), abs=1e-9)
    assert start.info["training"]["robust"]["ridge"] == rec["ridge"]
    va = features(tmp_path, paths["a"], home.encoders)
    assert home.info["metrics"]["val/score"] == pytest.approx(
        val_score(home.projectors, va, va.split_idx("val"), [("im", "tx")]), abs=1e-9)
    assert not same(weights(home), weights(away))


def test_selection_on_every_record_and_its_errors(tmp_path):
    paths, specs = two_corpora(tmp_path, n=60)
    sp = fit(tmp_path, paths["a"], specs, epochs=3, select_data=paths["b"], select_split=None)
    non_test = sum(SPLITS[i % 10] != "test" for i in range(60))  # None: every record outside the test split
    assert sp.info["training"]["select_data"]["records"] == non_test and sp.info["training"]["val_records"] == non_test
    assert non_test < 60
    with pytest.raises(DataError, match="select_split='test': nothing is chosen on a test split"):
        fit(tmp_path, paths["a"], specs, epochs=3, select_data=paths["b"], select_split="test")
    with pytest.raises(DataError, match="select_split='nope' is not a split: use 'val', 'train' or None") as e:
        fit(tmp_path, paths["a"], specs, epochs=3, select_data=paths["b"], select_split="nope")  # a typo: named,
    assert "\n" not in str(e.value) and "records" not in str(e.value)  # not "0 nope-split records" in the data
    with pytest.raises(DataError, match="not method='procrustes'"):
        Space.fit(paths["a"], encoders=specs, cache=tmp_path / "c", method="procrustes", progress=False,
                  select_data=paths["b"])
    for split in (None, "train"):  # a select_split without select_data steers nothing: refused, not dropped
        with pytest.raises(DataError, match=f"select_split={split!r} .* no select_data was given") as e:
            Space.fit(paths["a"], encoders=specs, cache=tmp_path / "c", select_split=split, **FAST)
        assert "\n" not in str(e.value)
    from anybind.scale.sharded import fit_sharded

    with pytest.raises(DataError, match="select_data .* needs the in-memory fit"):
        fit_sharded(paths["a"], encoders=specs, cache=tmp_path / "c", select_data=paths["b"], **FAST)


def test_cli_fit_selects_on_another_corpus(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    paths, specs = two_corpora(tmp_path, n=100)
    args = ["fit", str(paths["a"]), "--epochs", "3", "--lock", "tx", "--init", "ridge", "--cache", str(tmp_path / "c")]
    for k, spec in specs.items():
        args += ["-e", f"{k}={spec}"]
    res = CliRunner().invoke(app, args + ["--select-data", str(paths["b"]), "--out", str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    sel = Space.load(tmp_path / "sp").info["training"]["select_data"]
    assert sel == {"data": [str(paths["b"])], "split": "val", "records": 10}
    res = CliRunner().invoke(app, args + ["--select-data", str(paths["b"]), "--select-split", "all",
                                          "--out", str(tmp_path / "sp2")])
    assert res.exit_code == 0, res.output
    assert Space.load(tmp_path / "sp2").info["training"]["select_data"]["records"] == 80  # all but the 20 test
    res = CliRunner().invoke(app, args + ["--select-data", str(paths["b"]), "--select-split", "vla",
                                          "--out", str(tmp_path / "sp4")])
    assert res.exit_code == 2 and "select_split='vla' is not a split" in res.output and "'all'" in res.output
    res = CliRunner().invoke(app, args + ["--select-split", "all", "--out", str(tmp_path / "sp3")])
    assert res.exit_code == 2 and "no --select-data was given" in res.output, res.output
    assert not (tmp_path / "sp3").exists()


def test_a_selection_set_holds_only_the_chosen_split_relabelled_val(tmp_path):
    paths, specs = two_corpora(tmp_path, n=40)
    fs = features(tmp_path, paths["b"], specs, split="train")
    assert len(fs.records) == 28 and {r.split for r in fs.records} == {"val"}
    assert all(r.id.startswith("b") for r in fs.records)
    man = load_manifest(paths["b"], kinds={k: "key" for k in specs})
    assert {r.split for r in man.records} == {"train", "val", "test"}  # the manifest itself is untouched
    assert isinstance(fs, FeatureSet)

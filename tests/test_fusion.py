"""FusionClassifier: every kind learns, survives missing modalities, balances, saves exactly."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from anybind import Space, load_manifest
from anybind.data.manifest import Record
from anybind.errors import DataError
from anybind.errors import SpaceError
from anybind.fusion import FusionClassifier, FusionRegressor, load_fusion
from anybind.fusion.scoring import FusionScorer
from anybind.fusion.training import FusionTrainer, TrainSettings
from anybind.loop import training_threads

SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
FAST_SPACE = {"epochs": 25, "patience": 8, "hidden": 64, "dim": 32, "progress": False}
N_CLASSES = 4


def make_labelled(tmp_path, n=320, seed=0, noise=(0.6, 0.6, 0.6)):
    """Three vector modalities, each a noisy view of a class-dependent latent: labels recoverable from each."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    centres = rng.normal(size=(N_CLASSES, 8)) * 2.0
    u = rng.normal(size=n)  # a continuous factor beside the class, for the numeric target
    z = np.column_stack([centres[y] + 0.3 * rng.normal(size=(n, 8)), 1.5 * u])
    score = 2 * u + 0.5 * centres[y] @ rng.normal(size=8)  # a numeric target every modality carries (noisily)
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for (name, d), s in zip((("sa", 24), ("sb", 20), ("sc", 16)), noise):
        X = z @ rng.normal(size=(9, d)) + s * rng.normal(size=(n, d)) * np.sqrt(8)
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            rec = {"id": str(rid), "split": SPLIT_CYCLE[i % 10], "sa": True, "sb": True, "sc": True,
                   "labels": {"cls": f"c{y[i]}", "score": round(float(score[i]), 4)}}
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
    X, mask = clf.branch_inputs(man.split("test"), tmp / "c")
    m2 = mask.copy()
    m2[:, 1] = False
    with torch.no_grad():
        rec = clf.net.reconstruct(torch.from_numpy(X * m2[..., None]), torch.from_numpy(m2)).numpy()
    cos = (rec[:, 1] * X[:, 1]).sum(-1)
    Xtr, _ = clf.branch_inputs(man.split("train"), tmp / "c")
    mean = Xtr[:, 1].mean(0)
    baseline = X[:, 1] @ (mean / np.linalg.norm(mean))  # best input-blind guess
    assert cos.mean() > baseline.mean() + 0.1, (cos.mean(), baseline.mean())


def test_record_without_modality_is_a_data_error(setup):
    tmp, space, man = setup
    clf = FusionClassifier(space, ["sa", "sb"], kind="late", epochs=3, hidden=16).fit(man, "cls", cache=tmp / "c")
    recs = man.split("test")[:3] + [Record(id="lonely", split="test", values={"sc": "r0"}, labels={"cls": "c0"})]
    with pytest.raises(DataError, match=r"none of the modalities sa, sb: 'lonely'.*nothing to predict"):
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
            # a real numeric target: the length of the stamp's English description in words
            keep = {"id": r["id"], "text": r["text"], "image": str(tux_dir / r["image"]),
                    "labels": {"top": c, "caption_words": len(r["text"].split())},
                    "split": ("test" if per[c] % 4 == 0 else "train")}
            f.write(json.dumps(keep) + "\n")
    return out


@pytest.fixture(scope="module")
def tux_space(tux_top, shared_cache):
    man = load_manifest(tux_top, modalities=["image", "text"])
    space = Space.fit(man, modalities=["image", "text"], encoders={"image": "image:efficientnet-lite0+bridge"},
                      cache=shared_cache, epochs=15, dim=64, hidden=128, progress=False)
    return man, space


def test_real_tuxpaint_top_category_survives_a_missing_modality(tux_space, shared_cache):
    man, space = tux_space
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


def test_real_tuxpaint_regressor_beats_the_mean(tux_space, shared_cache):
    """Caption length of real Tux Paint stamps from the image alone, the caption alone, and both."""
    man, space = tux_space
    reg = FusionRegressor(space, ["image", "text"], kind="concat", dropout=0.3, balance="agm", epochs=40, seed=0)
    reg.fit(man, "caption_words", cache=shared_cache)
    test = man.split("test")
    res = reg.evaluate(test, cache=shared_cache, metric="all")
    y = np.array([r.labels["caption_words"] for r in test], float)
    train_mean = np.mean([r.labels["caption_words"] for r in man.split("train")])
    mean_mae = np.abs(y - train_mean).mean()
    for subset in ("image", "text", "image+text"):
        assert res[subset]["r2"] > 0.3, res  # predicting the mean scores <= 0
        assert res[subset]["mae"] < mean_mae, (res, mean_mae)
    pred = reg.predict(test, cache=shared_cache)
    assert pred.shape == (len(test),) and abs(pred.mean() - y.mean()) < y.std()
    hist = reg.history_
    assert "agm_coeff" in hist[-1] and set(hist[-1]["agm_coeff"]) == {"image", "text"}


def test_regressor_save_load_identical(setup):
    tmp, space, man = setup
    reg = FusionRegressor(space, ["sa", "sb", "sc"], kind="attention", loss="huber", balance="agm", epochs=6, hidden=16)
    reg.fit(man, "score", cache=tmp / "c")
    test = man.split("test")
    before = reg.predict(test, cache=tmp / "c")
    reg.save(tmp / "rz")
    loaded = FusionRegressor.load(tmp / "rz", space)
    assert np.array_equal(before, loaded.predict(test, cache=tmp / "c"))
    assert loaded.params() == reg.params() and loaded.target_std_ == reg.target_std_
    assert loaded.evaluate(test, cache=tmp / "c", metric="all") == reg.evaluate(test, cache=tmp / "c", metric="all")
    assert isinstance(load_fusion(tmp / "rz", space), FusionRegressor)
    with pytest.raises(SpaceError, match="regression"):
        FusionClassifier.load(tmp / "rz", space)


def test_regressor_learns_and_reports_every_subset(setup):
    tmp, space, man = setup
    reg = FusionRegressor(space, ["sa", "sb", "sc"], kind="concat", dropout=0.3, **FIT).fit(man, "score", cache=tmp / "c")
    res, cnt = reg.evaluate(man.split("test"), cache=tmp / "c", counts=True, metric="all")
    assert len(res) == 7 and set(res["sa"]) == {"r2", "mae", "rmse"}
    assert min(v["r2"] for v in res.values()) > 0.5, res
    assert res["sa+sb+sc"]["r2"] >= max(res[m]["r2"] for m in ("sa", "sb", "sc")) - 0.05
    assert reg.evaluate(man.split("test"), cache=tmp / "c") == {k: v["r2"] for k, v in res.items()}
    assert "val_r2" in reg.history_[-1] and "contribution" in reg.history_[-1]


def test_regressor_refuses_bad_targets_and_empty_records(setup):
    tmp, space, man = setup
    reg = FusionRegressor(space, ["sa", "sb"], kind="late", epochs=3, hidden=16).fit(man, "score", cache=tmp / "c")
    recs = man.split("test")[:3] + [Record(id="lonely", split="test", values={"sc": "r0"}, labels={"score": 1.0})]
    with pytest.raises(DataError, match=r"none of the modalities sa, sb: 'lonely'.*nothing to predict"):
        reg.predict(recs, cache=tmp / "c")
    with pytest.raises(DataError, match=r"none of the modalities sa, sb: 'lonely'.*nothing to predict"):
        reg.evaluate(recs, cache=tmp / "c")
    with pytest.raises(DataError, match=r"'r1' \('x'\)"):
        reg.evaluate([Record(id="r1", split="test", values={"sa": "r1"}, labels={"score": "x"})], cache=tmp / "c")
    bad = [Record(id=f"b{i}", split="train", values={"sa": f"r{i}"}, labels={"score": v})
           for i, v in enumerate([1.0, "many", None, float("nan"), True])]
    with pytest.raises(DataError, match=r"4 record\(s\).*'b1' \('many'\)"):
        FusionRegressor(space, ["sa"], epochs=1).fit(bad, "score", cache=tmp / "c")
    with pytest.raises(DataError, match="constant"):
        FusionRegressor(space, ["sa"], epochs=1).fit(bad[:1] * 3, "score", cache=tmp / "c")


def test_cli_fuse_regression_with_agm(setup, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, space, man = setup
    space.save(tmp_path / "sp")
    runner = CliRunner()
    r = runner.invoke(app, ["fuse", "train", str(man.path), "--space", str(tmp_path / "sp"), "--target", "score",
                            "--modalities", "sa,sb", "--out", str(tmp_path / "reg"), "--kind", "concat",
                            "--balance", "agm", "--epochs", "10", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "regression of 'score'" in out and "AGM gradient coefficient" in out and "epoch 10" in out
    r = runner.invoke(app, ["fuse", "eval", str(tmp_path / "reg"), str(man.path), "--space", str(tmp_path / "sp"),
                            "--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png"), "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res) == {"r2", "mae", "rmse", "n", "shapley"} and len(res["r2"]) == 3
    assert res["r2"]["sa+sb"] > 0.5 and "R²" in r.output and (tmp_path / "r.png").stat().st_size > 1000
    r = runner.invoke(app, ["fuse", "train", str(man.path), "--space", str(tmp_path / "sp"), "--target", "score",
                            "--label", "cls", "--modalities", "sa", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "exactly one" in " ".join(r.output.split())


@pytest.mark.parametrize("cls,label,kw", [(FusionClassifier, "cls", {"balance": "ogm-ge"}),
                                          (FusionRegressor, "score", {"balance": "agm", "kind": "gated"})])
def test_fit_is_its_trainer_given_only_the_model_s_inputs_and_hooks(setup, cls, label, kw):
    """The model is composed of parts given what they need (no mixin reading or writing its attributes): its
    trainer, given the settings, modalities, width, task hooks and the projected inputs, trains the very network
    and history ``fit`` keeps, and sets nothing on the model; its scorer, given the network, gives its outputs."""
    tmp, space, man = setup
    c = tmp / "c"
    model = cls(space, ["sa", "sb", "sc"], epochs=4, hidden=16, seed=3, **kw).fit(man, label, cache=c)
    train, val, test = man.split("train"), man.split("val"), man.split("test")
    X, mask = model.branch_inputs(train, c)
    Xv, mv = model.branch_inputs(val, c)
    before = dict(vars(model))
    trainer = FusionTrainer(TrainSettings.of(model.params()), model.modalities, space.dim, model._task())
    with training_threads(1):  # as fit trains (float sums depend on the thread count)
        net, history = trainer.train(X, mask, model._targets(train), Xv, mv, model._targets(val))
    assert vars(model) == before and model.net is before["net"] and net is not model.net
    assert history == model.history_ and any(h.get("best") for h in history)
    theirs = model.net.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in net.state_dict().items())
    Xt, mt = model.branch_inputs(test, c)
    scorer = FusionScorer(net, model.modalities, model.reconstruct, model._task())
    assert np.array_equal(scorer.outputs(Xt, mt), model._outputs(Xt, mt))
    assert scorer.by_subset(Xt, mt, model._targets(test), "all-subsets", model.metric, None) == \
        model.evaluate(test, cache=c, counts=True)


@pytest.mark.parametrize("warm_start", [True, False])
def test_an_exception_mid_training_leaves_the_model_as_it_was(setup, warm_start):
    """An exception in mid-training (here in ``on_epoch``) was to leave the model as it was (the trainer returns the
    network; fit keeps it only at the end).  It did not: a warm start trained the model's own network in place,
    left half-trained; a fresh fit had already set the new label and classes, left beside the old network."""
    tmp, space, man = setup
    c = tmp / "c"
    model = FusionClassifier(space, ["sa", "sb", "sc"], epochs=3, hidden=16, seed=3).fit(man, "cls", cache=c)
    weights = {k: v.clone() for k, v in model.net.state_dict().items()}
    before = {k: v for k, v in vars(model).items() if k != "net"}
    test = man.split("test")
    X, mask = model.branch_inputs(test, c)
    outputs = model._outputs(X, mask)

    def stop(rec):
        if rec["epoch"] >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        if warm_start:
            model.fit(man, "cls", cache=c, on_epoch=stop, warm_start=True)
        else:
            model.fit([r for r in man.split("train") if r.labels["cls"] != "c0"], "cls", cache=c, on_epoch=stop,
                      val=man.split("val"))
    assert {k: v for k, v in vars(model).items() if k != "net"} == before
    assert all(torch.equal(v, weights[k]) for k, v in model.net.state_dict().items())
    assert np.array_equal(model._outputs(X, mask), outputs)

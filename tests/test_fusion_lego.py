"""Merging fusion heads trained apart (LegoMerge) and fine-tuning the merge (LegoFuse)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.errors import DataError, SpaceError
from anybind.fusion import FusionClassifier, FusionRegressor, lego_fuse, load_fusion, merge_fusion
from anybind.fusion import head_temperatures
from test_fusion import FAST_SPACE, setup, tux_space, tux_top  # noqa: F401  (fixtures)

LATE = {"kind": "late", "dropout": 0.0, "reconstruct": False, "balance": None, "epochs": 25, "hidden": 32, "seed": 0}


def head(space, mods, man, label, cache, cls=FusionClassifier, records=None, **kw):
    return cls(space, mods, **{**LATE, **kw}).fit(records if records is not None else man, label, cache=cache)


def outputs_given(model, recs, cache, keep):
    """The model's raw outputs on ``recs`` given only the modalities in ``keep``."""
    X, mask = model.branch_inputs(recs, cache)
    m2 = mask & np.array([m in keep for m in model.modalities])[None, :]
    return model._outputs(X * m2[..., None], m2)


@pytest.fixture(scope="module")
def heads(setup):  # noqa: F811
    tmp, space, man = setup
    c = tmp / "c"
    return [head(space, ["sa"], man, "cls", c), head(space, ["sb", "sc"], man, "cls", c, seed=1)]


def test_merge_is_each_head_on_its_own_modalities_and_the_mean_on_all(setup, heads):  # noqa: F811
    tmp, space, man = setup
    c, test = tmp / "c", man.split("test")
    merged = merge_fusion(heads)
    assert merged.modalities == ["sa", "sb", "sc"] and merged.kind == "late" and merged.classes_ == heads[0].classes_
    a = outputs_given(heads[0], test, c, {"sa"})
    bc = outputs_given(heads[1], test, c, {"sb", "sc"})
    np.testing.assert_allclose(outputs_given(merged, test, c, {"sa"}), a, atol=1e-5)
    np.testing.assert_allclose(outputs_given(merged, test, c, {"sb", "sc"}), bc, atol=1e-5)
    np.testing.assert_allclose(outputs_given(merged, test, c, {"sb"}), outputs_given(heads[1], test, c, {"sb"}), atol=1e-5)
    # all three present: head 1 reads one of three, head 2 two of three
    np.testing.assert_allclose(outputs_given(merged, test, c, {"sa", "sb", "sc"}), a / 3 + 2 * bc / 3, atol=1e-5)
    assert merged.merged_from_["sources"][1]["modalities"] == ["sb", "sc"]
    assert merged.merged_from_["sources"][0]["identity"] == heads[0].identity()


def test_calibrated_merge_divides_each_head_by_its_val_temperature(setup, heads):  # noqa: F811
    tmp, space, man = setup
    c, test, val = tmp / "c", man.split("test"), man.split("val")
    cal = merge_fusion(heads, calibrate=val, cache=c)
    temps = [s["temperature"] for s in cal.merged_from_["sources"]]
    assert cal.merged_from_["calibrated_on_val"] and temps == head_temperatures(heads, val, c)
    for h, t, keep in zip(heads, temps, ({"sa"}, {"sb", "sc"})):
        # the temperature is the best of the grid for this head's val cross-entropy
        X, mask = h.branch_inputs(val, c)
        logits, y = torch.from_numpy(h._outputs(X, mask)), torch.from_numpy(h._targets(val))
        ce = lambda tt: float(torch.nn.functional.cross_entropy(logits / tt, y))  # noqa: E731
        assert 0.25 <= t <= 8 and ce(t) <= min(ce(x) for x in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)) + 1e-6
        np.testing.assert_allclose(outputs_given(cal, test, c, keep), outputs_given(h, test, c, keep) / t, atol=1e-4)
    a, bc = (outputs_given(h, test, c, k) / t for h, t, k in zip(heads, temps, ({"sa"}, {"sb", "sc"})))
    np.testing.assert_allclose(outputs_given(cal, test, c, {"sa", "sb", "sc"}), a / 3 + 2 * bc / 3, atol=1e-4)
    # no val records: refused (it recorded calibrated_on_val with every temperature left at 1)
    with pytest.raises(DataError, match="no val records") as ei:
        merge_fusion(heads, calibrate=[], cache=c)
    assert "\n" not in str(ei.value)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3).filter(any), min_size=1, max_size=12))
def test_merge_is_the_presence_weighted_mean_of_the_heads_for_any_masks(setup, heads, rows):  # noqa: F811
    tmp, space, man = setup
    merged = merge_fusion(heads)
    X, _ = merged.branch_inputs(man.split("test")[: len(rows)], tmp / "c")
    mask = np.array(rows)
    got = merged._outputs(X * mask[..., None], mask)
    want = np.zeros_like(got)
    n = mask.sum(1, keepdims=True)
    for h, cols in zip(heads, ([0], [1, 2])):
        sub = mask[:, cols]
        has = sub.any(1)
        if has.any():
            want[has] += sub[has].sum(1, keepdims=True) / n[has] * h._outputs(X[has][:, cols] * sub[has][..., None], sub[has])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_regression_heads_on_different_target_scales_merge_exactly(setup):  # noqa: F811
    tmp, space, man = setup
    c, train, test = tmp / "c", man.split("train"), man.split("test")
    ha = head(space, ["sa"], man, "score", c, FusionRegressor, records=train[::2])
    hb = head(space, ["sb"], man, "score", c, FusionRegressor, records=train[1::2] + [r for r in train if r.labels["score"] > 2])
    assert abs(ha.target_mean_ - hb.target_mean_) > 0.05  # the two heads saw different target scales
    merged = merge_fusion([ha, hb])
    for h, m in ((ha, "sa"), (hb, "sb")):
        got = outputs_given(merged, test, c, {m})[:, 0] * merged.target_std_ + merged.target_mean_
        want = outputs_given(h, test, c, {m})[:, 0] * h.target_std_ + h.target_mean_
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="classifiers"):
        merge_fusion([ha, hb], calibrate=man.split("val"), cache=c)
    both = merged.predict(test, cache=c)
    np.testing.assert_allclose(both, (ha.predict(test, cache=c) + hb.predict(test, cache=c)) / 2, rtol=1e-4, atol=1e-4)


def test_heads_knowing_different_classes_merge_over_their_union(setup):  # noqa: F811
    tmp, space, man = setup
    c, test = tmp / "c", man.split("test")
    hb = head(space, ["sb"], man, "cls", c, records=[r for r in man.split("train") if r.labels["cls"] != "c3"])
    ha = head(space, ["sa"], man, "cls", c)
    merged = merge_fusion([ha, hb])
    assert hb.classes_ == ["c0", "c1", "c2"] and merged.classes_ == ["c0", "c1", "c2", "c3"]
    assert merged.merged_from_["sources"][1]["classes_unseen"] == ["c3"]
    only_b = [r for r in test]
    X, mask = merged.branch_inputs(only_b, c)
    mask[:, 0] = False
    pred = [merged.classes_[i] for i in merged._outputs(X * mask[..., None], mask).argmax(1)]
    Xb, mb = hb.branch_inputs(only_b, c)
    assert pred == [hb.classes_[i] for i in hb._outputs(Xb, mb).argmax(1)]  # never c3: neutral, not a vote
    assert merged.evaluate(test, cache=c)["sa"] == ha.evaluate(test, cache=c)["sa"]


def test_refusals_are_one_line_naming_the_heads(setup, heads, tmp_path):  # noqa: F811
    tmp, space, man = setup
    c = tmp / "c"
    other_space = Space.fit(man.path, encoders={k: f"vectors:{tmp / f'{k}.npz'}" for k in ("sa", "sb", "sc")},
                            cache=c, **{**FAST_SPACE, "seed": 7})
    cases = [
        ([heads[0]], DataError, "at least two"),
        ([heads[0], head(other_space, ["sb"], man, "cls", c)], SpaceError, "one space"),
        ([heads[0], head(space, ["sb"], man, "score", c, FusionRegressor)], DataError, "task"),
        ([heads[0], head(space, ["sb"], man, "cls", c, kind="attention")], DataError, "'late'"),
        ([heads[0], head(space, ["sa", "sb"], man, "cls", c)], DataError, "modality 'sa'"),
        ([heads[0], FusionClassifier(space, ["sb"], **LATE)], DataError, "not fitted"),
    ]
    for models, err, words in cases:
        with pytest.raises(err) as e:
            merge_fusion(models, names=["A", "B"][: len(models)])
        msg = str(e.value)
        assert words in msg and "\n" not in msg, msg
        if len(models) == 2:
            assert "B" in msg
    other_label = head(space, ["sc"], man, "cls", c)
    other_label.label_key = "kind"  # as if trained on another label with the same class names
    with pytest.raises(DataError, match="label 'kind'"):
        merge_fusion([heads[0], other_label])


def test_lego_fuse_picks_its_epoch_on_val_and_saves_with_its_lineage(setup, heads, tmp_path):  # noqa: F811
    tmp, space, man = setup
    c, test = tmp / "c", man.split("test")
    merged = merge_fusion(heads, seed=0)
    before = merged.evaluate(test, cache=c)
    lego_fuse(merged, man, epochs=8, cache=c)
    hist = merged.history_
    assert [h["epoch"] for h in hist] == list(range(9))  # epoch 0: the merge as it was, competing
    best = [h for h in hist if h.get("best")]
    assert len(best) == 1 and best[0]["val_select"] == max(h["val_select"] for h in hist)
    ft = merged.merged_from_["fine_tune"]
    assert ft["best_epoch"] == best[0]["epoch"] and ft["records"] == len(man.split("train"))
    after = merged.evaluate(test, cache=c)
    assert set(after) == set(before) and after["sa+sb+sc"] > 0.7
    merged.save(tmp_path / "m")
    back = load_fusion(tmp_path / "m", space)
    assert back.merged_from_ == json.loads(json.dumps(merged.merged_from_))
    np.testing.assert_array_equal(back.predict_proba(test, cache=c), merged.predict_proba(test, cache=c))
    meta = json.loads((tmp_path / "m" / "fusion.json").read_text())
    meta["merged_from"]["sources"][0]["modalities"] = ["sb"]  # an edit to the lineage is caught
    (tmp_path / "m" / "fusion.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match="identity"):
        load_fusion(tmp_path / "m", space)
    one_each = [dataclasses.replace(r, values={"sa": r.values["sa"]}) for r in man.split("train")[:5]]
    with pytest.raises(DataError, match="two of the modalities"):
        lego_fuse(merge_fusion(heads), one_each, epochs=2, cache=c)


def test_real_tuxpaint_merge_of_image_and_text_heads(tux_space, shared_cache):  # noqa: F811
    """Real Tux Paint stamps: an image head and a text head trained apart, merged: each alone is its head, both
    together are at least as good as the better and beat the worse (with the SVG rendering fixed, 6b25dde, the image
    head alone reaches the merge's 0.95 on this small test split: a tie)."""
    man, space = tux_space
    test = man.split("test")
    hi = FusionClassifier(space, ["image"], **{**LATE, "epochs": 40}).fit(man, "top", cache=shared_cache)
    ht = FusionClassifier(space, ["text"], **{**LATE, "epochs": 40}).fit(man, "top", cache=shared_cache)
    merged = merge_fusion([hi, ht])
    res = merged.evaluate(test, cache=shared_cache)
    assert res["image"] == hi.evaluate(test, cache=shared_cache)["image"]
    assert res["text"] == ht.evaluate(test, cache=shared_cache)["text"]
    both = res["image+text"]
    assert both >= max(res["image"], res["text"]) and both > min(res["image"], res["text"]), res


def test_cli_fuse_merge_with_fine_tune_and_refusal(setup, heads, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, space, man = setup
    space.save(tmp_path / "sp")
    heads[0].save(tmp_path / "a")
    heads[1].save(tmp_path / "bc")
    runner = CliRunner()
    r = runner.invoke(app, ["fuse", "merge", str(tmp_path / "a"), str(tmp_path / "bc"), "--space", str(tmp_path / "sp"),
                            "--out", str(tmp_path / "m"), "--fine-tune", str(man.path), "--fine-tune-epochs", "3",
                            "--calibrate", str(man.path),
                            "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "4 classes of 'cls'" in out and "LegoFuse: best epoch" in out
    merged = load_fusion(tmp_path / "m", space)
    assert merged.modalities == ["sa", "sb", "sc"] and merged.merged_from_["fine_tune"]["epochs"] == 3
    assert merged.merged_from_["calibrated_on_val"] and "temperature" in out
    r = runner.invoke(app, ["fuse", "eval", str(tmp_path / "m"), str(man.path), "--space", str(tmp_path / "sp"),
                            "--cache", str(tmp / "c")])
    assert r.exit_code == 0 and "sa+sb+sc" in r.output
    r = runner.invoke(app, ["fuse", "merge", str(tmp_path / "a"), str(tmp_path / "a"), "--space", str(tmp_path / "sp"),
                            "--out", str(tmp_path / "m2")])
    assert r.exit_code != 0 and "modality 'sa'" in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "m2").exists()


def test_fine_tuning_refuses_unlabelled_records_and_says_what_it_leaves_out(setup, heads, caplog):  # noqa: F811
    """A warm start (LegoFuse) reads the labels as a fresh fit does: a training record without the label is refused,
    named, and one of a class the model does not know is left out with a one-line warning (never silently)."""
    tmp, space, man = setup
    c, train = tmp / "c", man.split("train")
    unlabelled = dataclasses.replace(train[0], labels={})
    with pytest.raises(DataError) as ei:
        lego_fuse(merge_fusion(heads), [unlabelled] + train[1:20], epochs=1, cache=c, val=man.split("val"))
    assert repr(train[0].id) in str(ei.value) and "'cls'" in str(ei.value) and "\n" not in str(ei.value)
    new_class = dataclasses.replace(train[1], labels={**train[1].labels, "cls": "c9"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="anybind"):
        fused = lego_fuse(merge_fusion(heads), [new_class] + train[2:20], epochs=1, cache=c, val=man.split("val"))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("1 training record" in w and repr(train[1].id) in w and "'c9'" in w and "\n" not in w for w in warned), warned
    assert fused.merged_from_["fine_tune"]["records"] == 18

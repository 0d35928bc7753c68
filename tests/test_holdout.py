"""Recipe auto holds a share of the training records out as val where the data has no val split
(:mod:`anybind.holdout`, ``TrainConfig.val_holdout``, ``anybind fit --val-holdout``): real Tux Paint stamps, the real
EfficientNet + label bridge and MiniLM."""

import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError
from anybind.holdout import MAX_HOLDOUT, held_out, holdout_problem, share
from anybind.recipe import HOLDOUT
from anybind.scale.sharded import fit_sharded

KW = dict(modalities=["image", "text"], progress=False, seed=0)


@pytest.fixture(scope="module")
def noval(tux_subset):
    """120 real Tux Paint stamps, one val record (fewer than 2 val pairs: no val split to choose on)."""
    return tux_subset(120, 1000, "holdout-noval")


@pytest.fixture(scope="module")
def withval(tux_subset):
    return tux_subset(60, 5, "holdout-val")  # every fifth of 60 stamps in val


def lines_of(caplog, name="anybind.holdout"):
    return [r.getMessage() for r in caplog.records if r.name == name]


@pytest.fixture(scope="module")
def fits(noval, shared_cache):
    """The default fit (val held out) and the same with val_holdout=0 (every training record, choosing blind)."""
    return (Space.fit(noval, cache=shared_cache, **KW),
            Space.fit(noval, cache=shared_cache, val_holdout=0, epochs=3, **KW))


def test_share_is_a_stable_uniform_place_per_id():
    ids = [f"stamp-{i}" for i in range(4000)]
    s = np.array([share(i) for i in ids])
    assert ((0 <= s) & (s < 1)).all() and s.tolist() == [share(i) for i in ids]  # the same each time
    assert abs((s < HOLDOUT).mean() - HOLDOUT) < 0.03  # about the share asked for


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
       st.floats(min_value=0.0, max_value=MAX_HOLDOUT))
def test_held_out_moves_only_training_records_below_the_share(ids, f):
    from anybind.data.manifest import Manifest, Record

    recs = [Record(id=i, split=("train", "val", "test")[k % 3], values={"text": i}) for k, i in enumerate(ids)]
    man = Manifest(path=None, records=recs, bad=[], kinds={})
    (out,), moved = held_out([man], f)
    assert [r.split for r in man.records] == [("train", "val", "test")[k % 3] for k in range(len(ids))]  # untouched
    want = ["val" if r.split == "train" and share(r.id) < f else r.split for r in recs]
    assert [r.split for r in out.records] == want and moved == sum(a != b.split for a, b in zip(want, recs))
    assert [r.id for r in out.records] == ids  # order and records kept


def test_the_default_fit_holds_val_out_and_chooses_on_it(fits, noval):
    held, blind = fits
    lin, lin0 = held.info["lineage"][-1], blind.info["lineage"][-1]
    rec = lin["val_holdout"]
    n_train = sum(r.split == "train" for r in noval.records)
    want = sum(share(r.id) < HOLDOUT for r in noval.records if r.split == "train")
    assert rec == {"fraction": HOLDOUT, "moved": want, "val_pairs": want + 1} and 2 <= want < n_train - 3
    assert lin["recipe"]["chosen"]["val_holdout"] == HOLDOUT and "val_holdout" not in lin0
    # the choices were made on val: the start guard scored the ridge against the bridge (blind: a note says it was not)
    guard, guard0 = held.info["training"]["robust"]["ridge"]["image"], blind.info["training"]["robust"]["ridge"]["image"]
    assert "ridge_val" in guard["guard"] and "note" in guard0["guard"]
    assert held.info["lineage"][-1]["data"][0]["fingerprint"] != blind.info["lineage"][-1]["data"][0]["fingerprint"]
    assert noval.split("val") and len(noval.split("val")) == 1  # the manifest given is left as it was


def test_the_same_fit_twice_holds_the_same_records_out(fits, noval, shared_cache):
    again = Space.fit(noval, cache=shared_cache, **KW)
    assert again.info["lineage"][-1]["data"] == fits[0].info["lineage"][-1]["data"]
    x = [r.values["image"] for r in noval.records[:8]]
    assert np.array_equal(again.embed("image", x), fits[0].embed("image", x))


def test_said_in_one_line(noval, shared_cache, caplog):
    caplog.set_level(logging.INFO, logger="anybind.holdout")
    Space.fit(noval, cache=shared_cache, epochs=1, **KW)
    (line,) = lines_of(caplog)
    assert "no val split" in line and "held out as val" in line and "val_holdout=0" in line and "\n" not in line


@pytest.mark.parametrize("bad", [math.nan, -0.1, 0.9, math.inf, True, "0.1", 10 ** 400])
def test_bad_values_refused_in_one_line_before_encoding(noval, shared_cache, never_encoded, bad):
    assert holdout_problem(bad) is not None
    with pytest.raises((DataError, ValueError, TypeError)) as e:
        Space.fit(noval, cache=shared_cache, val_holdout=bad, **KW)
    assert "\n" not in str(e.value) and "val_holdout" in str(e.value) and not never_encoded


def test_a_share_given_where_it_cannot_apply_is_refused(withval, noval, shared_cache, never_encoded):
    with pytest.raises(DataError, match=r"no val split, and it has 12 val pairs: drop val_holdout") as e:
        Space.fit(withval, cache=shared_cache, val_holdout=0.2, **KW)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="select_data chooses on another corpus' val"):
        Space.fit(noval, cache=shared_cache, val_holdout=0.2, select_data=withval, **KW)
    assert not never_encoded


def test_a_val_split_is_left_alone(withval, shared_cache):
    sp = Space.fit(withval, cache=shared_cache, epochs=1, **KW)
    lin = sp.info["lineage"][-1]
    assert "val_holdout" not in lin and "val_holdout" not in lin["recipe"]["chosen"]


def test_too_few_records_to_hold_out_says_so(tux_subset, shared_cache, caplog):
    tiny = tux_subset(6, 1000, "holdout-tiny")  # 5 training records: 15 % of them is fewer than 2 val pairs
    caplog.set_level(logging.INFO, logger="anybind.holdout")
    sp = Space.fit(tiny, cache=shared_cache, epochs=1, **KW)
    (line,) = lines_of(caplog)
    assert "too few training records" in line and "val_holdout" not in sp.info["lineage"][-1]


def test_streaming_fit_holds_out_the_same_records(noval, fits, shared_cache, tmp_path):
    sp = fit_sharded(str(noval.path), ["image", "text"], cache=shared_cache, progress=False, seed=0, epochs=1)
    assert sp.info["lineage"][-1]["val_holdout"] == fits[0].info["lineage"][-1]["val_holdout"]


def test_cli_flag_reaches_the_fit_and_bad_values_are_refused(noval, shared_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "space"
    args = ["fit", str(noval.path), "--modalities", "image,text", "--out", str(out), "--cache", str(shared_cache),
            "--epochs", "1", "--seed", "0"]
    res = runner.invoke(app, args + ["--val-holdout", "0.25"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    lin = Space.load(out).info["lineage"][-1]
    assert lin["val_holdout"]["fraction"] == 0.25 and "val_holdout" not in lin["recipe"]["chosen"]
    bad = runner.invoke(app, args + ["--val-holdout", "0.7", "--overwrite"], env={"COLUMNS": "250"})
    assert bad.exit_code == 2 and "--val-holdout" in bad.output and "[0, 0.5]" in bad.output


def _plan(*manifests, recipe="auto"):
    from anybind.fitting import FitPlan

    return FitPlan(list(manifests), "contrastive", ["image", "text"], {}, {"init": "ridge"}, recipe, {})


def test_a_val_split_in_any_manifest_holds_nothing_out_and_a_plain_recipe_neither():
    """Decided on the plan alone (nothing encoded): mixed manifests, one with val pairs and one without, choose on the
    val they have; recipe plain holds nothing out unless asked; asked for, it does."""
    from pathlib import Path

    from anybind.data.manifest import Manifest, Record
    from anybind.fitting import val_pairs
    from anybind.holdout import hold_out_val

    def man(name, splits):
        recs = [Record(f"{name}{i}", s, {"image": f"{name}i{i}", "text": f"{name}t{i}"}) for i, s in enumerate(splits)]
        return Manifest(Path(f"/data/{name}.jsonl"), recs, [], {})

    count = lambda p: val_pairs(p)[1]  # noqa: E731
    with_val, without = man("a", ["train"] * 40 + ["val"] * 5), man("b", ["train"] * 60)
    plan = _plan(with_val, without)
    assert hold_out_val(plan, None, count) is None and plan.manifests[1] is without
    plain = _plan(without, recipe="plain")
    assert hold_out_val(plain, None, count) is None and plain.manifests == [without]
    plain.config["val_holdout"] = 0.2
    rec = hold_out_val(plain, None, count)
    assert rec["fraction"] == 0.2 and rec["moved"] == sum(share(f"b{i}") < 0.2 for i in range(60)) >= 2
    assert "val_holdout" not in plain.chosen and [r.split for r in without.records] == ["train"] * 60

"""A trained fit that chooses on its own val split warns when that split is too small to trust (issue 16,
``anybind.fitting.VAL_WARN``): one line naming the manifest, the val pairs, the worst-case standard error of a val
R@1 and the two fixes (``select_data``, ``select_se``); the record is kept in the lineage.  Real Tux Paint stamps."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anybind import Space
from anybind.data.manifest import Manifest, Record
from anybind.fitting import VAL_WARN, FitPlan, check_val_size

LOGGER = "anybind.fitting"


@pytest.fixture(scope="module")
def small(tux_subset):
    """60 real stamps (image, text), every fifth in val: 12 val pairs, far below VAL_WARN."""
    return tux_subset(60, 5, "valwarn-small")


@pytest.fixture(scope="module")
def enough(tux_subset):
    """200 real stamps, every second in val: exactly VAL_WARN (100) val pairs."""
    return tux_subset(200, 2, "valwarn-enough")


def _fit(man, cache, caplog, **kw):
    """The fit (one epoch) and the warnings anybind.fitting said during it."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sp = Space.fit(man, modalities=["image", "text"], cache=cache, epochs=1, progress=False, seed=0, **kw)
    return sp, [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_small_val_warns_once_with_its_numbers_and_the_lineage_keeps_it(small, shared_cache, caplog, tmp_path):
    sp, warned = _fit(small, shared_cache, caplog, select_se=0.0)  # the rule recipe auto sets there, turned off
    assert len(warned) == 1, warned
    msg, se = warned[0], math.sqrt(0.25 / 12)
    assert "\n" not in msg and msg.startswith(f"{small.path}: only 12 val pairs (fewer than {VAL_WARN})")
    assert f"{se:.3f}" in msg and "0.144" in msg
    for fix in ("select_data=", "--select-data", "select_se=1", "--select-se 1", "BENCHMARKS.md, transfer"):
        assert fix in msg, fix
    rec = sp.info["lineage"][-1]["val_warning"]
    assert rec == {"val_pairs": 12, "threshold": VAL_WARN, "r1_se_max": round(se, 3), "message": msg}
    back = Space.load(sp.save(tmp_path / "sp"))
    assert back.info["lineage"][-1]["val_warning"] == rec


def test_recipe_auto_takes_the_standard_error_rule_on_a_small_own_val_and_says_so(small, enough, shared_cache,
                                                                                  caplog):
    """Recipe auto sets select_se=1 where the fit chooses on its own val of 2 to VAL_WARN - 1 pairs (the rule chose
    on the val splits of the transfer matrix): recorded as the recipe's choice, said in one info line, no warning;
    not with VAL_WARN pairs, an explicit select_se (a TrainConfig's included), select_data or recipe plain."""
    from anybind.train import TrainConfig

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        sp = Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, seed=0)
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(said) == 1 and said[0].startswith("recipe auto: select_se=1, finetune=False (only 12 val pairs, "
                                                 "fewer than 100"), said
    assert not [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    fit = sp.info["lineage"][-1]
    assert fit["recipe"]["chosen"]["select_se"] == 1.0 and "val_warning" not in fit
    assert fit["recipe"]["chosen"]["finetune"] is False and sp.config["finetune"] is False
    assert sp.info["training"]["epoch_se_rule"]["k"] == 1.0  # the rule chose the epoch: the start, the only one
    assert sp.info["training"]["best_epoch"] == 0 and sp.info["training"]["epochs_run"] == 1  # no fine-tuning epoch
    assert sp.info["training"]["robust"]["finetune"] is False
    start = Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0,
                      select_se=1.0)  # the epoch-0 start itself (select_se given: the recipe leaves finetune alone)
    assert "finetune" not in start.info["lineage"][-1]["recipe"]["chosen"] and start.config["finetune"] is True
    for m in ("image", "text"):  # the projectors kept are the training-free start's, weight for weight
        a, b = sp.projectors[m].state_dict(), start.projectors[m].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), m
    for man, kw in ((enough, {}), (small, {"select_se": 0.0}), (small, {"config": TrainConfig(select_se=0.0)}),
                    (small, {"select_data": enough.path}), (small, {"recipe": "plain"})):
        sp = Space.fit(man, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, seed=0, **kw)
        chosen = sp.info["lineage"][-1]["recipe"]["chosen"]
        assert "select_se" not in chosen and "finetune" not in chosen and sp.config["finetune"] is True, kw
        assert "epoch_se_rule" not in sp.info["training"], kw
        assert sp.info["training"]["history"][-1]["epoch"] == 1 and "finetune" not in sp.info["training"]["robust"], kw
    sp = Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, seed=0,
                   config=TrainConfig())  # a config object's fields left at AUTO stay the recipe's to choose
    assert sp.info["lineage"][-1]["recipe"]["chosen"]["select_se"] == 1.0
    assert sp.info["lineage"][-1]["recipe"]["chosen"]["finetune"] is False
    sp = Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, seed=0,
                   finetune=True)  # finetune given: the rule still set, the start fine-tuned (epoch 1 scored)
    chosen = sp.info["lineage"][-1]["recipe"]["chosen"]
    assert chosen["select_se"] == 1.0 and "finetune" not in chosen and sp.config["finetune"] is True
    assert sp.info["training"]["history"][-1]["epoch"] == 1
    for kw in ({"wise": 0.5}, {"l2sp": 0.01}, {"mixup": 0.5}, {"lr": 3e-4}, {"select_se_on": "finetune"},
               {"loss": "infonce+intra:0.5"}):  # a fine-tuning option asks for it (an objective only acts on epochs)
        sp = Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, seed=0, **kw)
        chosen = sp.info["lineage"][-1]["recipe"]["chosen"]
        assert chosen["select_se"] == 1.0 and "finetune" not in chosen and sp.config["finetune"] is True, kw
        assert sp.info["training"]["history"][-1]["epoch"] == 1, kw


def test_enough_val_pairs_select_data_select_se_or_a_training_free_method_warn_nothing(small, enough, shared_cache,
                                                                                     caplog):
    for man, kw in ((enough, {}), (small, {"select_data": enough.path}), (small, {"select_se": 1.0})):
        sp, warned = _fit(man, shared_cache, caplog, **kw)
        assert warned == [] and "val_warning" not in sp.info["lineage"][-1], (kw, warned)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sp = Space.fit(small, modalities=["image", "text"], cache=shared_cache, method="procrustes", progress=False)
    assert not [r for r in caplog.records if r.name == LOGGER] and "val_warning" not in sp.info["lineage"][-1]


def test_the_streaming_trainer_warns_too_and_names_the_in_memory_fit(small, shared_cache, caplog):
    """``fit --stream`` chooses on its shards' val split the same way; it has neither fix, so the line says where."""
    from anybind.scale.sharded import fit_sharded

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sp = fit_sharded(small.path, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warned) == 1 and "only 12 val pairs" in warned[0] and "drop --stream" in warned[0], warned
    assert sp.info["lineage"][-1]["trainer"] == "streaming" and sp.info["lineage"][-1]["val_warning"]["val_pairs"] == 12


def test_no_val_split_warns_that_every_choice_falls_back_to_its_default(small, shared_cache, caplog, tmp_path):
    """Before, only the start guard's own line warned (nothing at all with start_guard=False); now one line says what
    every choice falls back to, even with select_se (it has nothing to choose on)."""
    rows = [json.loads(x) for x in Path(small.path).read_text().splitlines()]
    noval = tmp_path / "noval.jsonl"
    noval.write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    for kw in ({"val_holdout": 0}, {"val_holdout": 0, "select_se": 1.0}, {"val_holdout": 0, "start_guard": False}):
        sp, warned = _fit(noval, shared_cache, caplog, **kw)  # val_holdout=0: the user trains on every record, blind
        assert len(warned) == 1 and warned[0].startswith(f"{noval}: no val split (0 val pairs)"), (kw, warned)
        assert "falls back to its default" in warned[0] and "--select-data" in warned[0] and "--val-holdout" in warned[0]
        assert sp.info["lineage"][-1]["val_warning"]["r1_se_max"] is None
    sp, warned = _fit(noval, shared_cache, caplog)  # recipe auto's default: val held out of train (anybind.holdout)
    assert not any("no val split" in w for w in warned) and sp.info["lineage"][-1]["val_holdout"]["val_pairs"] >= 2


@given(val=st.integers(0, 2 * VAL_WARN), one_sided=st.integers(0, 30), train=st.integers(2, 20),
       select_se=st.sampled_from([0.0, 0.5]))
def test_the_warning_follows_the_val_pairs_a_fit_can_score(val, one_sided, train, select_se):
    """Counted: val records holding both bound modalities (a val record with one of them scores nothing); below
    VAL_WARN a warning with sqrt(0.25 / n), none at or above it; select_se silences a small val, never a missing one."""
    recs = ([Record(f"v{i}", "val", {"image": f"i{i}", "text": f"t{i}"}) for i in range(val)]
            + [Record(f"o{i}", "val", {"text": f"o{i}"}) for i in range(one_sided)]
            + [Record(f"t{i}", "train", {"image": f"j{i}", "text": f"u{i}"}) for i in range(train)])
    man = Manifest(Path("/data/m.jsonl"), recs, [], {})
    plan = FitPlan([man], "contrastive", ["image", "text"], {}, {"select_se": select_se}, "auto", {})
    rec = check_val_size(plan)
    if val >= VAL_WARN or (val >= 2 and select_se > 0):
        assert rec is None and plan.lineage()["data"] and "val_warning" not in plan.lineage()
        return
    assert rec is plan.val_warning and rec["val_pairs"] == val and plan.lineage()["val_warning"] == rec
    assert rec["r1_se_max"] == (round(math.sqrt(0.25 / val), 3) if val >= 2 else None)
    assert rec["message"].startswith("/data/m.jsonl: ") and "\n" not in rec["message"]
    assert check_val_size(plan, select_data="other.jsonl") is None
    training_free = FitPlan([man], "procrustes", ["image", "text"], {}, {}, None, {})
    assert check_val_size(training_free) is None and training_free.val_warning is None


def test_the_count_is_the_smallest_trained_pair_s_as_in_the_demo_fit(tux_dir):
    """``make demo`` binds image + text + audio on Tux Paint locked to text: its 103 val records hold image and text,
    only a few hold audio, and audio's own choices (its ridge alpha, start guard, kernel keep) and a third of the
    epoch score are made on those few; the count is the trained pair with the fewest val pairs, named."""
    from anybind.bench.tuxpaint import RECIPE
    from anybind.fitting import plan_fit

    mods = ["image", "text", "audio"]
    plan = plan_fit(tux_dir / "manifest.jsonl", mods, encoders={m: RECIPE["encoders"][m] for m in mods},
                    recipe="plain", config={"lock": "text", "init": "ridge"}, progress=False)
    val = [r for r in plan.manifests[0].records if r.split == "val"]
    audio = sum(1 for r in val if r.has("audio") and r.has("text"))
    assert VAL_WARN <= len(val) and 2 <= audio < VAL_WARN  # the corpus as the demo fits it
    rec = check_val_size(plan)
    assert rec is not None and rec["val_pairs"] == audio and rec["pair"] in (["audio", "image"], ["audio", "text"])
    assert f"only {audio} val pairs of {'-'.join(rec['pair'])} " in rec["message"]
    two = plan_fit(tux_dir / "manifest.jsonl", ["image", "text"], encoders={m: RECIPE["encoders"][m] for m in mods[:2]},
                   recipe="plain", progress=False)
    assert check_val_size(two) is None  # image-text alone: every val record
    paired = plan_fit(tux_dir / "manifest.jsonl", mods, encoders={m: RECIPE["encoders"][m] for m in mods},
                      recipe="plain", config={"pairs": [["image", "text"]]}, progress=False)
    assert check_val_size(paired) is None  # audio in no trained pair: its val records choose nothing


@pytest.mark.parametrize("bad", ["x", "1", None, True])
def test_a_bad_select_se_is_still_refused_by_name_not_by_the_check(bad, small, shared_cache):
    """The check reads select_se before the trainer checks it: a value that is not a number stays the trainer's
    one-line refusal naming select_se, not a bare ValueError / TypeError from the check."""
    from anybind.errors import DataError

    with pytest.raises(DataError, match="select_se must be a non-negative number"):
        Space.fit(small, modalities=["image", "text"], cache=shared_cache, epochs=1, progress=False, select_se=bad)

"""Hostile values for a trained ``Space.fit`` / ``anybind fit`` (finetune, select_se, epochs, a manifest with no
training records) are refused in one line naming the option or the manifest *before any record is encoded*
(anybind.fit_checks): each was refused only after the training data was encoded, and ``finetune=False`` beside a
WiSE-FT alpha fitted the start silently (as ``--finetune`` beside ``--epochs 0`` did: anybind fit refuses it).  Real
Tux Paint stamps; the proof is that nothing was encoded (no FeatureSet built, no cache file), not a timing."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError
from anybind.fit_checks import check_before_encoding
from anybind.fitting import fit_options, plan_fit
from anybind.train import TrainConfig


@pytest.fixture(scope="module")
def tux(tux_subset):
    return tux_subset(30, 5, "fit-checks")


BAD = [
    ({"finetune": "False"}, "TrainConfig.finetune must be True, False or AUTO, got 'False'"),
    ({"config": TrainConfig(epochs=2), "finetune": "yes"}, "TrainConfig.finetune must be True, False or AUTO"),
    ({"select_se": math.nan}, "select_se must be a non-negative number (standard errors), got nan"),
    ({"select_se": -1}, "select_se must be a non-negative number (standard errors), got -1"),
    ({"select_se": "1"}, "select_se must be a non-negative number (standard errors), got '1'"),
    ({"select_se": 10 ** 400}, "select_se must be a non-negative number (standard errors), got 1000"),
    ({"l2sp": 10 ** 400}, "l2sp must be a non-negative number, got 1000"),
    ({"mixup": np.bool_(True)}, "mixup must be a non-negative number, got np.True_"),
    ({"select_se_on": "fine"}, "select_se_on must be 'all' or 'finetune', got 'fine'"),
    ({"select_se": 0, "select_se_on": "finetune"}, "select_se_on='finetune' steers nothing without the rule"),
    ({"epochs": -1}, "TrainConfig.epochs must be a whole number >= 0, got -1"),
    ({"epochs": 2.5}, "TrainConfig.epochs must be a whole number >= 0, got 2.5"),
    ({"finetune": False, "wise": 0.5}, "wise=0.5 acts only on fine-tuned epochs and finetune=False keeps"),
    ({"finetune": False, "lr": 1e-3, "wise": 0.3}, "wise=0.3 acts only on fine-tuned epochs"),
    ({"finetune": False, "attn_epochs": 3}, "attn_epochs=3 acts only on fine-tuned epochs"),
    ({"finetune": False, "l2sp": 0.1}, "l2sp=0.1 acts only on fine-tuned epochs"),
    ({"finetune": False, "recipe": "plain"}, "finetune=False keep projectors near (at) their training-free start"),
]


@pytest.mark.parametrize("kw, says", BAD)
def test_a_hostile_value_is_one_line_before_any_encoding(tux, tmp_path, never_encoded, kw, says):
    with pytest.raises(DataError) as e:
        Space.fit(tux, modalities=["image", "text"], cache=tmp_path / "c", progress=False, **{"epochs": 2, **kw})
    assert str(e.value).startswith(says) or says in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and never_encoded == [] and not any((tmp_path / "c").rglob("*"))


def test_an_unknown_option_is_named_before_any_encoding(tux, tmp_path, never_encoded):
    with pytest.raises(TypeError) as e:
        Space.fit(tux, modalities=["image", "text"], cache=tmp_path / "c", progress=False, fintune=False)
    assert str(e.value).startswith("unknown option(s) ['fintune'] for a trained fit (known: ") and "finetune" in str(e.value)
    assert "\n" not in str(e.value) and never_encoded == []


@pytest.mark.parametrize("split", ["val", "test"])
def test_no_training_record_names_the_manifest_before_any_encoding(tux_dir, tmp_path, never_encoded, split):
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:6]
    man = tmp_path / "m.jsonl"  # every pair in val (or val and test): nothing to train on
    man.write_text("".join(json.dumps({"id": r["id"], "split": "val" if i % 2 else split, "text": r["text"],
                                       "image": str(tux_dir / r["image"])}) + "\n" for i, r in enumerate(recs)))
    with pytest.raises(DataError) as e:
        Space.fit(man, modalities=["image", "text"], cache=tmp_path / "c", progress=False, epochs=2)
    assert str(e.value) == f"{man}: need at least 2 training records, found 0 (check the 'split' fields)"
    assert never_encoded == []


@pytest.mark.parametrize("kw", [{"finetune": True, "epochs": 1}, {"finetune": False, "epochs": 3},
                                {"epochs": 0}, {"finetune": True, "epochs": 0},  # a saved epochs=0 config
                                {"finetune": False, "l2sp": 0.0, "wise": None},
                                {"finetune": False, "lr": 1e-4, "wise": "auto"},  # a saved finetune=False config
                                {"select_se": 1e300, "select_se_on": "finetune"}])
def test_what_is_consistent_passes_the_check(tux, kw):
    """The check refuses contradictions only: finetune=False beside an lr and wise='auto' passes (recipe auto saves
    them with it, and the saved config refits; anybind fit refuses them typed), so do epochs=0 alone or beside
    finetune=True (a saved epochs=0 config; anybind fit refuses them typed) and a huge but finite select_se."""
    plan = plan_fit(tux, ["image", "text"], recipe="auto", config=fit_options(None, kw), progress=False)
    check_before_encoding(plan)


def test_cli_contradictions_are_one_line_before_encoding(tux, tmp_path, never_encoded):
    base = ["fit", str(tux.path), "--modalities", "image,text", "--cache", str(tmp_path / "c")]
    for extra, says in ((["--epochs", "0", "--finetune"], "--finetune fine-tunes for --epochs > 0"),
                        (["--no-finetune", "--wise", "0.5"], "--wise acts only on fine-tuned epochs"),
                        (["--no-finetune", "--lr", "1e-3", "--epochs", "3"], "--lr acts only on fine-tuned epochs"),
                        (["--no-finetune", "--attn-epochs", "3"], "attn_epochs=3 acts only on fine-tuned epochs"),
                        (["--no-finetune", "--loss", "infonce+intra:0.5"], "--loss acts only on fine-tuned epochs"),
                        (["--epochs", "-1"], "TrainConfig.epochs must be a whole number >= 0, got -1")):
        res = CliRunner().invoke(app, base + extra + ["--out", str(tmp_path / "sp")], env={"COLUMNS": "250"})
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert len([x for x in res.output.splitlines() if says in x]) == 1, res.output
    assert never_encoded == [] and not (tmp_path / "sp").exists()
    res = CliRunner().invoke(app, base + ["--no-finetune", "--wise", "off", "--stream", "--attn-epochs", "2",
                                          "--out", str(tmp_path / "sp")], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "attn_epochs=2 acts only on fine-tuned epochs" in res.output, res.output  # streamed
    assert "--wise" not in res.output  # --wise off beside --no-finetune: consistent, not refused
    res = CliRunner().invoke(app, base + ["--no-finetune", "--loss", "infonce", "--stream", "--attn-epochs", "2",
                                          "--out", str(tmp_path / "sp")], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "--loss" not in res.output, res.output  # the default objective: not refused


def test_a_saved_start_only_space_refits_from_its_config(tux, shared_cache, tmp_path):
    """``Space.fit(epochs=0, select_se=0)`` saves ``finetune=True`` beside ``epochs=0`` (finetune resolved to its plain
    True; recipe auto keeps it where it sets no rule): that saved config refits as it did, keeping the start again
    (only ``anybind fit --finetune --epochs 0``, typed, is refused)."""
    kw = dict(modalities=["image", "text"], cache=shared_cache, progress=False)
    first = Space.load(Space.fit(tux, epochs=0, select_se=0, **kw).save(tmp_path / "sp"))
    cfg = {k: v for k, v in first.config.items() if k != "method"}
    assert cfg["finetune"] is True and cfg["epochs"] == 0
    again = Space.fit(tux, config=TrainConfig(**cfg), **kw)
    assert again.config == first.config and again.info["training"]["best_epoch"] == 0
    assert again.info["training"]["epochs_run"] == first.info["training"]["epochs_run"]


@pytest.mark.parametrize("stream", [False, True])
def test_too_few_pairs_for_the_ridge_start_are_refused_before_any_encoding(tux_dir, tmp_path, never_encoded, stream):
    """Recipe auto's ridge start regresses each modality onto the locked text and needs 3 training pairs: 2 (the
    trainer's own floor is 2 records) were refused only after every record was encoded; now before, in the ridge
    start's words, in memory and streaming."""
    from anybind.scale.sharded import fit_sharded

    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:5]
    man = tmp_path / "two.jsonl"  # 2 training pairs, 3 val
    man.write_text("".join(json.dumps({"id": r["id"], "split": "train" if i < 2 else "val", "text": r["text"],
                                       "image": str(tux_dir / r["image"])}) + "\n" for i, r in enumerate(recs)))
    fit = fit_sharded if stream else Space.fit
    with pytest.raises(DataError) as e:
        fit(man, ["image", "text"], cache=tmp_path / "c", progress=False, epochs=2)
    assert str(e.value) == f"{man}: init='ridge': 'image' has 2 training pairs with 'text'; need at least 3"
    assert never_encoded == [] and not any((tmp_path / "c").rglob("*"))


def test_a_numpy_number_is_a_number_for_every_robust_option():
    """A sweep's ``np.float32`` / ``np.int64`` values pass the checks that a plain float passes (they were refused
    as 'not a number'; an int past a float's range raised an OverflowError traceback instead of one line)."""
    from anybind.robust import check_robust

    check_robust(TrainConfig(init="ridge", ridge_prior="bridge", l2sp=np.float64(0.1), mixup=np.float32(0.5),
                             mixup_alpha=np.float32(0.4), ridge_se=np.int64(1), select_se=np.float32(1.0),
                             bridge_anchors=np.float32(3.0), base_gate=np.float32(0.2)))

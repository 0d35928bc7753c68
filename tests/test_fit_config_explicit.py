"""Space.fit(config=TrainConfig(...)): every value given is the user's choice, the plain default or None included.

The fields the recipe chooses default to AUTO ("the recipe decides"): ``TrainConfig(start_guard=False)`` turns the
start guard off and ``TrainConfig(wise=None)`` WiSE-FT, as the keywords and the CLI flags do (before, a value equal
to the class default read as "not chosen" and ``recipe="auto"`` filled it)."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fit_config import TEXT, _fit, _weights, manifest  # noqa: F401 -- the small text + imu corpus
from test_start_guard import tux_shuffled  # noqa: F401 -- 40 real Tux Paint stamps, shuffled train pairs

from anybind.errors import DataError
from anybind.fitting import fit_options
from anybind.recipe import AUTO, BASE_GATE, FINE_TUNE_LR, PLAIN, resolve_recipe
from anybind.space import Space
from anybind.train import TrainConfig

#: each field the recipe chooses: its plain default, the recipe's choice for image + text, another value
VALUES = {"dim": [256, 64], "lr": [1e-3, FINE_TUNE_LR, 3e-4], "init": ["random", "ridge", "cca"],
          "lock": [None, "text", "image"], "wise": [None, "auto", 0.5], "ridge_prior": ["zero", "bridge", "residual"],
          "start_guard": [False, True], "kernel_start": [False, True]}
SMALL = dict(epochs=3, batch_size=8, hidden=16)


def _recipe(config=None, **options):
    """What ``recipe="auto"`` makes of the options for image + text (the label-bridge image encoder, no model run)."""
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, fit_options(config, options))
    return cfg, chosen


def _trained(cfg):
    """The config a trainer reads from the recipe's options."""
    return TrainConfig(**cfg).resolved()


@pytest.mark.parametrize("field", sorted(VALUES))
def test_a_value_given_in_a_config_object_wins_over_the_recipe_as_a_keyword_does(field):
    for value in VALUES[field]:
        cfg, chosen = _recipe(TrainConfig(**{field: value}))
        assert cfg[field] == value and field not in chosen, (field, value)
        kw_cfg, kw_chosen = _recipe(**{field: value})
        assert _trained(cfg) == _trained(kw_cfg) and chosen == kw_chosen


def test_start_guard_false_and_wise_none_in_a_config_object_turn_them_off():
    assert _recipe()[1] == {"lock": "text", "init": "ridge", "encoders.image": "image:efficientnet-lite0+bridge",
                            "ridge_prior": "bridge", "start_guard": True, "kernel_start": True, "bridge_anchors": 3.0,
                            "base_gate": BASE_GATE, "wise": "auto", "lr": FINE_TUNE_LR}
    cfg, chosen = _recipe(TrainConfig(start_guard=False, wise=None))
    assert cfg["start_guard"] is False and cfg["wise"] is None
    assert "start_guard" not in chosen and "wise" not in chosen and chosen["ridge_prior"] == "bridge"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_fields_given_are_kept_and_the_recipe_fills_only_the_others(data):
    fields = data.draw(st.sets(st.sampled_from(sorted(VALUES))), label="given")
    gave = {f: data.draw(st.sampled_from(VALUES[f]), label=f) for f in sorted(fields)}
    cfg, chosen = _recipe(TrainConfig(**gave, epochs=7))
    for other in (_recipe(epochs=7, **gave), _recipe({"epochs": 7, **gave})):  # object = keywords = dict
        assert _trained(other[0]) == _trained(cfg) and other[1] == chosen
    assert {k: cfg[k] for k in gave} == gave and not set(chosen) & set(gave)
    full = _trained(cfg)  # what a trainer reads: nothing left AUTO
    assert all(getattr(full, k) is not AUTO for k in PLAIN) and json.dumps(full.to_dict())
    assert {k: getattr(full, k) for k in PLAIN if k not in cfg} == {k: PLAIN[k] for k in PLAIN if k not in cfg}


def test_auto_is_one_value_that_pickles_copies_and_refuses_to_be_a_truth_value():
    cfg = TrainConfig()
    assert repr(cfg.wise) == "AUTO" and "start_guard=AUTO" in repr(cfg)
    assert pickle.loads(pickle.dumps(cfg)).lr is AUTO and copy.deepcopy(cfg).lock is AUTO  # Ray ships configs
    assert cfg.to_dict()["init"] is AUTO and cfg == TrainConfig()
    with pytest.raises(TypeError, match="still AUTO"):
        bool(cfg.start_guard)
    assert {k: getattr(cfg.resolved(), k) for k in PLAIN} == PLAIN  # the plain defaults, as before
    assert cfg.resolved().resolved() == cfg.resolved() and TrainConfig(**PLAIN).resolved() == cfg.resolved()


def test_explicit_defaults_in_a_config_object_reach_the_fitted_space(manifest, tmp_path):  # noqa: F811
    sp = _fit(manifest, tmp_path, config=TrainConfig(wise=None, lr=1e-3, **SMALL))
    assert sp.config["wise"] is None and sp.config["lr"] == 1e-3 and sp.config["lock"] == "text"
    assert sp.info["lineage"][-1]["recipe"]["chosen"] == {"lock": "text", "init": "ridge", "select_se": 1.0}
    assert sp.config["finetune"] is True  # small val, but a learning rate given asks for fine-tuning
    assert "wise_alpha" not in sp.info["training"]["robust"]
    kw = _fit(manifest, tmp_path, wise=None, lr=1e-3, **SMALL)
    wa, wb = _weights(sp), _weights(kw)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    unlocked = _fit(manifest, tmp_path, config=TrainConfig(lock=None, **SMALL))  # None: nothing locked
    assert unlocked.config["lock"] is None and unlocked.config["init"] == "random" and unlocked.dim == 256


def test_nothing_given_fits_the_recipe_bit_for_bit_and_saves_no_auto(manifest, tmp_path):  # noqa: F811
    left = _fit(manifest, tmp_path, **SMALL)
    obj = _fit(manifest, tmp_path, config=TrainConfig(**SMALL))
    said = _fit(manifest, tmp_path, config=TrainConfig(lock="text", init="ridge", wise="auto", lr=FINE_TUNE_LR,
                                                        select_se=1.0, finetune=False, **SMALL))
    assert said.info["lineage"][-1]["recipe"]["chosen"] == {}  # all given: the recipe chose nothing
    for sp in (obj, said):
        wa, wb = _weights(left), _weights(sp)
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
        assert sp.config == left.config
    left.save(tmp_path / "sp")
    saved = json.loads((tmp_path / "sp" / "space.json").read_text())["config"]
    assert {k: saved[k] for k in PLAIN} == {"dim": 256, "lr": FINE_TUNE_LR, "init": "ridge", "lock": "text",
                                           "wise": "auto", "ridge_prior": "zero", "start_guard": False,
                                           "kernel_start": False, "bridge_anchors": 0.0, "base_gate": 0.0,
                                           "select_se": 1.0, "finetune": False, "val_holdout": 0.0}


def test_a_saved_space_config_refits_the_same_space_and_names_another_method(manifest, tmp_path):  # noqa: F811
    first = _fit(manifest, tmp_path, **SMALL)
    first.save(tmp_path / "sp")
    saved = json.loads((tmp_path / "sp" / "space.json").read_text())["config"]
    assert saved["method"] == "contrastive"  # what a user copies from space.json or Space.load(...).config
    again = _fit(manifest, tmp_path, config=saved)
    wa, wb = _weights(first), _weights(again)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert again.config == first.config
    with pytest.raises(DataError) as e:
        _fit(manifest, tmp_path, config={**saved, "method": "procrustes"})
    assert "method='procrustes'" in str(e.value) and "\n" not in str(e.value)


def test_a_space_saved_with_an_older_training_config_still_loads_as_written(manifest, tmp_path):  # noqa: F811
    _fit(manifest, tmp_path, **SMALL).save(tmp_path / "sp")
    path = tmp_path / "sp" / "space.json"
    doc = json.loads(path.read_text())
    # the training config of a space saved before the robust levers (no wise, ridge_prior, start_guard, ...)
    old = {"method": "contrastive", "dim": 256, "projector": "mlp", "hidden": 16, "dropout": 0.2, "lr": 0.001,
           "loss": "infonce", "epochs": 3, "batch_size": 8, "init": "random", "lock": None, "seed": 0}
    doc["config"] = old
    path.write_text(json.dumps(doc))
    sp = Space.load(tmp_path / "sp")
    assert sp.config == old and AUTO not in sp.config.values()
    assert sp.embed("text", ["item number r1"]).shape == (1, sp.dim)


def test_the_start_guard_off_in_a_config_object_as_with_the_cli_flags_on_real_tux_paint(
        tux_shuffled, shared_cache, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from anybind.cli import app

    kw = dict(modalities=["image", "text"], cache=shared_cache, epochs=2, progress=False)
    sp = Space.fit(tux_shuffled, config=TrainConfig(start_guard=False, wise=None), **kw)
    args = ["fit", str(tux_shuffled), "--modalities", "image,text", "--epochs", "2", "--cache", str(shared_cache)]
    res = CliRunner().invoke(app, args + ["--no-start-guard", "--wise", "off", "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    cli = Space.load(tmp_path / "cli")
    for s in (sp, cli):
        entry = s.info["lineage"][-1]
        assert entry["ridge_start"]["image"]["prior"] == "bridge" and "guard" not in entry["ridge_start"]["image"]
        assert entry["recipe"]["chosen"] == {"lock": "text", "init": "ridge", "lr": FINE_TUNE_LR,
                                             "encoders.image": "image:efficientnet-lite0+bridge",
                                             "ridge_prior": "bridge", "kernel_start": True, "bridge_anchors": 3.0,
                                             "base_gate": BASE_GATE, "select_se": 1.0}
        assert s.config["finetune"] is True  # --wise off given: a fine-tuning option asks for fine-tuning
        assert s.config["start_guard"] is False and s.config["wise"] is None
        assert "wise_alpha" not in s.info["training"]["robust"]
    wa, wb = _weights(sp), _weights(cli)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    guarded = Space.fit(tux_shuffled, **kw)  # nothing given: the recipe's guard, as before
    assert "guard" in guarded.info["lineage"][-1]["ridge_start"]["image"]


def test_cli_lock_none_locks_nothing_as_lock_none_in_a_config_object(manifest, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from anybind.cli import app

    args = ["fit", str(manifest), "-e", f"text={TEXT}", "-e", f"imu=vectors:{tmp_path / 'imu.npz'}", "--epochs", "3",
            "--batch-size", "8", "--cache", str(tmp_path / "c"), "--lock", "none", "--out", str(tmp_path / "cli")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    cli = Space.load(tmp_path / "cli")
    obj = _fit(manifest, tmp_path, config=TrainConfig(lock=None, epochs=3, batch_size=8))
    for sp in (cli, obj):
        assert sp.config["lock"] is None and sp.config["init"] == "random" and sp.dim == 256
        assert sp.info["lineage"][-1]["recipe"]["chosen"] == {}
    wa, wb = _weights(cli), _weights(obj)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_a_training_free_warm_start_reads_a_config_left_at_auto_as_the_plain_defaults():
    """``warm_start`` called with ``TrainConfig(init="cca")`` (lock and dim AUTO) starts as with the plain
    defaults (before: "a training option is still AUTO")."""
    from anybind.data.manifest import Record
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.train import FeatureSet, warm_start

    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 4)).astype(np.float32)
    feats = {m: (z @ rng.standard_normal((4, d)) + 0.1 * rng.standard_normal((50, d))).astype(np.float32)
             for m, d in (("a", 6), ("b", 5))}
    recs = [Record(id=f"p{i}", split="train" if i < 40 else "val", values={"a": "1", "b": "1"})
            for i in range(50)]
    fs = FeatureSet(records=recs, specs={m: f"synthetic:{m}" for m in feats}, identities={m: m for m in feats},
                    feats=feats, rows={m: np.arange(50) for m in feats}, corpus=np.zeros(50, np.int64))
    given = TrainConfig(init="cca", projector="linear")
    starts = []
    for cfg in (given, given.resolved()):
        projectors = {m: Projector(ProjectorConfig(in_dim=f.shape[1], out_dim=256, kind="linear"))
                      .fit_stats(f, m) for m, f in feats.items()}
        warm_start(projectors, fs, cfg)
        starts.append({m: p.linear.weight.detach().numpy().copy() for m, p in projectors.items()})
    assert all(np.array_equal(starts[0][m], starts[1][m]) and np.abs(starts[0][m]).max() > 0 for m in feats)

"""Progressive binding follows Space.fit's recipe auto on a small own val (anybind.fit_checks.small_val_rule, the one
decision both take): where the new projector's ridge start chooses on 2 to VAL_WARN - 1 val pairs with its anchors,
``select_se`` left unset is 1 (each choice on val -- start guard, ridge alpha, kernel keep, epoch -- the candidate
nearest the training-free start within one standard error of the best) and ``finetune`` left unset is False (the start
kept, no InfoNCE epoch), recorded in the lineage entry (``recipe.chosen``); a binding without the rule on fewer than
VAL_WARN val pairs (or none) warns in one line naming the data.  Real Tux Paint stamps (100: 20 val pairs), the real
EfficientNet label bridge and MiniLM."""

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError
from anybind.fit_checks import VAL_WARN, small_val_rule
from anybind.progressive_fit import BindConfig, bind_config
from anybind.progressive_start import small_val_choice, val_pair_count

from test_progressive_gate import ODD_NUMBERS, check_bind_refusal, finite_plain
from test_progressive_guard import BRIDGED, photo_pairs, text_locked_space

TINY = dict(anchors=["text"], epochs=3, patience=3, hidden=16, seed=0)


@pytest.fixture(scope="module")
def setting(tux_dir, tmp_path_factory, shared_cache):
    """100 real Tux Paint stamps with their true captions, each image as ``image`` and ``photo``, every fifth in val
    (80 training pairs, 20 val), and the text-locked space fitted on them."""
    folder = photo_pairs(tux_dir, tmp_path_factory.mktemp("pse"), 100)
    return folder, text_locked_space(folder, shared_cache)


def bind(base, pairs, cache, **kw):
    return base.add_modality("photo", BRIDGED, str(pairs / "manifest.jsonl"), cache=cache, **{**TINY, **kw})


pairs = pytest.fixture(scope="module", name="pairs")(lambda setting: setting[0])
base = pytest.fixture(scope="module", name="base")(lambda setting: setting[1])
# photo bound through text with select_se and finetune left unset (the small val's rule)
auto = pytest.fixture(scope="module", name="auto")(lambda base, pairs, shared_cache: bind(base, pairs, shared_cache))


def test_a_small_val_sets_the_rule_and_keeps_the_start(auto, base, pairs, shared_cache):
    e = auto.info["lineage"][-1]
    assert e["pairs"]["text"]["val"] == 20 and e["recipe"] == {"chosen": {"select_se": 1.0, "finetune": False}}
    assert e["config"]["select_se"] == 1.0 and e["config"]["finetune"] is False and "val_warning" not in e
    tr, rs = e["training"], e["ridge_start"]["photo"]
    assert tr["best_epoch"] == 0 and [h["epoch"] for h in tr["history"]] == [0]  # the start kept: no InfoNCE epoch
    assert rs["rule"]["rule"] == "1se" and rs["kernel"]["rule"] == "1se"  # the ridge path's and the kernel's rule
    assert rs["guard"]["rule"] == "1se"
    # the same binding given the rule and no fine-tuning explicitly: the same projector, weight for weight
    same = bind(base, pairs, shared_cache, select_se=1, finetune=False)
    assert "recipe" not in same.info["lineage"][-1]  # the user's choice: nothing chosen for them
    for a, b in zip(auto.projectors["photo"].state_dict().values(), same.projectors["photo"].state_dict().values()):
        assert torch.equal(a, b)


def test_the_choice_is_said_in_one_line(base, pairs, shared_cache, caplog):
    with caplog.at_level(logging.INFO, logger="anybind.progressive_start"):
        bind(base, pairs, shared_cache, epochs=0)
    said = [r.getMessage() for r in caplog.records if "select_se=1" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "finetune=False (only 20 val pairs, fewer than 100" in said[0]


def test_an_explicit_choice_overrides_and_warns_without_the_rule(auto, base, pairs, shared_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="anybind.progressive_start"):
        off = bind(base, pairs, shared_cache, select_se=0)
    e = off.info["lineage"][-1]
    assert "recipe" not in e and e["config"]["select_se"] == 0.0 and e["config"]["finetune"] is True
    assert e["training"]["epochs_run"] > 1 and "rule" not in e["ridge_start"]["photo"]  # fine-tuned, best val
    warn = e["val_warning"]
    assert warn["val_pairs"] == 20 and warn["threshold"] == VAL_WARN and "\n" not in warn["message"]
    assert warn["message"].startswith(f"{pairs / 'manifest.jsonl'}: binding 'photo': only 20 val pairs")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [warn["message"]]
    tuned = bind(base, pairs, shared_cache, finetune=True)  # the rule kept, fine-tuning asked
    e = tuned.info["lineage"][-1]
    assert e["recipe"] == {"chosen": {"select_se": 1.0}} and e["config"]["finetune"] is True
    assert e["training"]["epochs_run"] > 1 and "epoch_se_rule" in e["training"]
    asked = bind(base, pairs, shared_cache, lr=3e-4)  # a fine-tuning option given: fine-tuned, as Space.fit's
    assert asked.info["lineage"][-1]["recipe"] == {"chosen": {"select_se": 1.0}}


def test_no_val_pairs_warn_in_one_line_naming_the_data(base, pairs, shared_cache, tmp_path, caplog):
    rows = (pairs / "manifest.jsonl").read_text().replace('"split": "val"', '"split": "test"')
    (tmp_path / "noval.jsonl").write_text(rows)
    with caplog.at_level(logging.WARNING, logger="anybind.progressive_start"):
        sp = base.add_modality("photo", BRIDGED, str(tmp_path / "noval.jsonl"), cache=shared_cache,
                               **{**TINY, "epochs": 0})
    e = sp.info["lineage"][-1]
    assert "recipe" not in e and e["config"]["finetune"] is True and e["val_warning"]["val_pairs"] == 0
    msg = e["val_warning"]["message"]
    assert msg.startswith(f"{tmp_path / 'noval.jsonl'}: binding 'photo': no val pairs with its anchors (0)")
    mine = [r.getMessage() for r in caplog.records if r.name == "anybind.progressive_start"]
    assert mine == [msg]  # once (the start guard says its own "no val pairs" line too)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3 * VAL_WARN), se=st.sampled_from([None, 0.0, 2.0]), ft=st.sampled_from([None, True, False]),
       lr=st.sampled_from([1e-3, 3e-4]), loss=st.sampled_from(["infonce", "siglip"]),
       init=st.sampled_from(["ridge", "random"]))
def test_the_decision_is_space_fits_on_the_val_count(n, se, ft, lr, loss, init):
    """>= VAL_WARN val pairs (or fewer than 2), a select_se given, or a random start: untouched; else select_se=1,
    and finetune=False unless finetune or a fine-tuning option (lr, loss) was given -- fitting.auto_select_se's rule."""
    if ft is False and init == "random":
        return
    cfg, chosen = small_val_choice(BindConfig(select_se=se, finetune=ft, lr=lr, loss=loss, init=init), n)
    small = 2 <= n < VAL_WARN and se is None and init == "ridge"
    asked = lr != 1e-3 or loss != "infonce"
    assert bool(chosen) == small and chosen == ({} if not small else small_val_rule(n, False, ft is not None, asked))
    assert cfg.select_se == (1.0 if small else se or 0.0) and type(cfg.select_se) is float
    assert cfg.finetune is ((not (small and ft is None and not asked)) if ft is None else ft)


def test_the_val_count_is_the_fewest_scored_anchor():
    assert val_pair_count([20]) == 20 and val_pair_count([36, 150]) == 36 and val_pair_count([0, 150]) == 150
    assert val_pair_count([1, 0]) == 1 and val_pair_count([]) == 0 and val_pair_count([1, 5]) == 5


@settings(max_examples=60, deadline=None)
@given(st.one_of(*ODD_NUMBERS, st.floats(0, 5).map(np.float32)))
def test_bind_config_refuses_the_select_se_the_fit_refuses_in_one_line(se):
    check_bind_refusal("select_se", se, finite_plain(se) and (se is None or se >= 0),
                       "BindConfig.select_se must be a non-negative")


def test_a_bad_finetune_is_refused_in_one_line():
    for kw, says in (({"finetune": 1}, "BindConfig.finetune must be True, False or None"),
                     ({"finetune": False, "init": "random"}, "finetune=False keeps .* use init='ridge'")):
        with pytest.raises(DataError, match=says) as e:
            bind_config(kw)
        assert "\n" not in str(e.value)


def test_the_cli_flags_reach_the_config_and_bad_ones_are_refused(base, pairs, shared_cache, tmp_path):
    base.save(tmp_path / "base")
    args = ["bind", str(tmp_path / "base"), "--add", f"photo={BRIDGED}", "--data", str(pairs / "manifest.jsonl"),
            "--anchors", "text", "--epochs", "2", "--cache", str(shared_cache)]
    res = CliRunner().invoke(app, [*args, "--select-se", "0", "--no-finetune", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    e = Space.load(tmp_path / "out").info["lineage"][-1]
    assert e["config"]["select_se"] == 0.0 and e["config"]["finetune"] is False and "recipe" not in e
    assert [h["epoch"] for h in e["training"]["history"]] == [0]  # --no-finetune: the start alone
    for bad, hint in ((["--select-se", "-1"], "--select-se"), (["--no-finetune", "--loss", "siglip"], "--no-finetune"),
                      (["--finetune", "--epochs", "0"], "--finetune")):
        res = CliRunner().invoke(app, [*args, *bad, "--out", str(tmp_path / "bad")])
        assert res.exit_code == 2 and hint in res.output and not (tmp_path / "bad").exists(), res.output

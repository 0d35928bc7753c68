"""Continual update (issue 19), what keeps the old domain by default: WiSE-FT with the parent space (the updated
projectors mixed back with the parent's, alpha chosen on the update's val pairs), the gentle fine-tuning rate,
the intra-modal and feature distillation terms; naive fine-tuning stays plain."""

import numpy as np
import pytest
import torch
import test_update
from test_update import UPDATE, r1

from anybind import Space

base = test_update.base  # the same module fixture: the space bound on domain a
from anybind.losses import build_loss
from anybind.robust import WISE_GRID
from anybind.update import DistillBinder, update_config

def _state(space):
    return {m: {k: v.clone() for k, v in p.state_dict().items()} for m, p in space.projectors.items()}


def test_every_distillation_term_is_zero_when_the_new_projectors_equal_the_old(base):
    tmp, mans, specs, space = base
    import copy

    torch.manual_seed(0)
    feats = {m: torch.randn(16, space.projectors[m].cfg.in_dim) for m in ("sa", "sb")}
    batch = {("sa", "sb"): (feats["sa"], feats["sb"])}
    old = {m: copy.deepcopy(p).eval() for m, p in space.projectors.items()}
    scale = torch.nn.Parameter(torch.tensor(np.log(1 / space.temperature), dtype=torch.float32))

    def loss(projectors, **w):
        model = DistillBinder(projectors, old, scale, build_loss("infonce"), temperature=0.07, screening=False, **w)
        with torch.no_grad():  # screening off: it rewrites the old space's wrong rows, so they differ on purpose
            return float(model.eval()(batch))

    same = {m: copy.deepcopy(p).eval() for m, p in space.projectors.items()}
    plain = loss(same, weight=0.0)
    assert loss(same, weight=3.0, intra=3.0, feature=3.0) == pytest.approx(plain, abs=1e-5)
    moved = {m: copy.deepcopy(p).eval() for m, p in space.projectors.items()}
    with torch.no_grad():
        for p in moved["sa"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    base_moved = loss(moved, weight=0.0)
    for w in ({"weight": 1.0}, {"weight": 0.0, "intra": 1.0}, {"weight": 0.0, "feature": 1.0}):  # each sees the move
        assert loss(moved, **w) > base_moved + 1e-4, w


def test_the_default_update_mixes_back_with_the_parent_and_records_alpha_on_the_grid(base):
    tmp, mans, specs, space = base
    c = tmp / "c"
    up = space.update(mans["b"], cache=c, epochs=6, seed=2)
    e = up.info["lineage"][-1]
    rob = e["robust"]
    assert e["config"]["wise"] == "auto" and e["config"]["lr"] == 1e-4
    assert rob["wise_alpha"] in WISE_GRID and list(rob["wise_val"]) == [f"{a:.1f}" for a in WISE_GRID]
    best = max(rob["wise_val"].values())
    assert rob["wise_val"][f"{rob['wise_alpha']:.1f}"] == best  # the best val score; ties: the smaller alpha
    assert all(rob["wise_val"][f"{a:.1f}"] < best for a in WISE_GRID if a < rob["wise_alpha"])
    # alpha 0 is the parent bit for bit; naive fine-tuning stays plain (no mixing) unless asked
    zero = space.update(mans["b"], cache=c, epochs=6, seed=2, wise=0.0)
    assert all(torch.equal(a, b) for m in ("sa", "sb") for a, b in
               zip(_state(zero)[m].values(), _state(space)[m].values()))
    naive = space.update(mans["b"], method="naive", cache=c, epochs=2)
    assert naive.info["lineage"][-1]["config"]["wise"] is None and "wise_alpha" not in naive.info["lineage"][-1]["robust"]
    assert space.update(mans["b"], method="naive", wise="auto", cache=c, epochs=2).info["lineage"][-1]["robust"][
        "wise_alpha"] in WISE_GRID


def test_mixing_back_forgets_less_than_naive_fine_tuning_at_the_same_rate(base):
    """Here the new domain's val keeps rising up to alpha 1 (``wise="auto"`` then equals naive: it mixes back only
    what the new data's val does not miss); a fixed alpha shows what mixing keeps."""
    tmp, mans, specs, space = base
    c = tmp / "c"
    old0 = r1(space, mans["a"], c)
    naive = space.update(mans["b"], method="naive", cache=c, **UPDATE)
    wise = space.update(mans["b"], method="naive", wise=0.5, cache=c, **UPDATE)
    assert wise.info["lineage"][-1]["robust"]["wise_alpha"] == 0.5
    forget = {k: old0 - r1(s, mans["a"], c) for k, s in (("naive", naive), ("wise", wise))}
    new = {k: r1(s, mans["b"], c) for k, s in (("naive", naive), ("wise", wise))}
    assert forget["naive"] > 0.04, forget
    assert forget["wise"] < forget["naive"] - 0.02, forget
    assert new["wise"] > r1(space, mans["b"], c) + 0.2, new  # it still learnt the new domain


def test_the_default_settings_pass_the_robust_check():
    """update_config hands RobustFit a namespace of robust.check_robust's fields: start_guard, added to that check
    beside this change (a6c562d), was missing, so every update, the default one too, died in an AttributeError."""
    cfg = update_config({})
    assert (cfg.method, cfg.wise, cfg.lr) == ("wise", "auto", 1e-4)
    assert update_config({"intra_distill": 0.5, "feature_distill": 0.5, "l2sp": 0.1}).l2sp == 0.1


@pytest.mark.parametrize("bad", [{"wise": 1.5}, {"wise": "often"}, {"l2sp": -1.0}, {"intra_distill": -1.0},
                                 {"feature_distill": -0.5}])
def test_bad_robust_settings_are_refused_in_one_line(bad):
    with pytest.raises((ValueError, Exception)) as ei:
        update_config(bad)
    assert "\n" not in str(ei.value) and list(bad)[0].split("_")[0] in str(ei.value)


def test_cli_update_wise_and_method(base, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, mans, specs, space = base
    space.save(tmp_path / "s1")
    run = lambda out, *a: CliRunner().invoke(app, ["update", str(tmp_path / "s1"), "--data", str(mans["b"]), "--out",
                                                   str(tmp_path / out), "--epochs", "2", "--cache", str(tmp / "c"), *a])
    r = run("s2", "--wise", "0.3")
    assert r.exit_code == 0 and "mixed back at alpha 0.3" in r.output, r.output
    e = Space.load(tmp_path / "s2").info["lineage"][-1]
    assert e["method"] == "wise" and e["config"]["wise"] == 0.3 and e["robust"]["wise_alpha"] == 0.3
    r = run("s3", "--method", "modx", "--wise", "off")
    e = Space.load(tmp_path / "s3").info["lineage"][-1]
    assert r.exit_code == 0 and e["method"] == "modx" and e["config"]["wise"] is None and "wise_alpha" not in e["robust"]
    r = run("s4", "--wise", "lots")
    assert r.exit_code == 2 and "--wise takes 'auto', a number in [0, 1] or 'off'" in r.output and not (tmp_path / "s4").exists()


def test_the_lineage_records_only_the_settings_the_method_reads(base):
    """The Mod-X settings (distill, its tradeoff, screening; the temperature also for intra_distill) were recorded
    for wise and naive too (distill: 1.0, read by nothing); a Mod-X weight given to another method is refused."""
    tmp, mans, specs, space = base
    c = tmp / "c"
    modx_keys = {"distill", "distill_tradeoff", "screening", "distill_temperature"}
    for kw, kept in (({}, set()), ({"method": "naive"}, set()), ({"intra_distill": 0.5}, {"distill_temperature"}),
                     ({"distill": 0.5}, modx_keys)):
        e = space.update(mans["b"], cache=c, epochs=1, **kw).info["lineage"][-1]
        assert modx_keys & set(e["config"]) == kept, (kw, e["config"])
    assert e["method"] == "modx" and e["config"]["distill"] == 0.5
    for method in ("wise", "naive"):
        with pytest.raises(ValueError, match=f"distill=2.0 weighs Mod-X's term: it needs method='modx', not "
                                             f"'{method}'") as ei:
            space.update(mans["b"], cache=c, epochs=1, method=method, distill=2.0)
        assert "\n" not in str(ei.value)


def test_no_val_pairs_in_the_new_data_is_warned_about_in_one_line(base, tmp_path, caplog):
    """Small new data without val records: alpha cannot be chosen, so the default update kept the fully fine-tuned
    projectors (naive fine-tuning, every epoch) with only a note in the lineage; now a warning says so and what
    to do; a fixed alpha still mixes."""
    import json
    import logging

    tmp, mans, specs, space = base
    novel = tmp_path / "b_no_val.jsonl"
    rows = [json.loads(line) for line in open(mans["b"])]
    novel.write_text("".join(json.dumps({**r, "split": "train" if r["split"] == "val" else r["split"]}) + "\n"
                             for r in rows))
    with caplog.at_level(logging.WARNING, logger="anybind.update"):
        up = space.update(novel, cache=tmp / "c", epochs=2)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(novel) in warned[0] and "wise=" in warned[0] and "\n" not in warned[0], warned
    assert "wise_alpha" not in up.info["lineage"][-1]["robust"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anybind.update"):
        fixed = space.update(novel, cache=tmp / "c", epochs=2, wise=0.5)
    assert fixed.info["lineage"][-1]["robust"]["wise_alpha"] == 0.5 and not caplog.records


def test_wise_is_spelt_alike_by_fit_and_update(base, tmp_path):
    """'anybind fit --wise none' but 'anybind update --wise off': each refused the other's word, and a bad alpha
    was answered with the library's spelling ('... or None'); one parser now takes 'off' / 'none' for both."""
    import typer

    from anybind.cli._common import wise_option

    assert [wise_option(v) for v in ("auto", "off", "None", "OFF", "0.3", "1")] == ["auto", None, None, None, 0.3, 1.0]
    for bad in ("1.5", "-1", "nan", "lots"):
        with pytest.raises(typer.BadParameter, match=r"--wise takes 'auto', a number in \[0, 1\] or 'off'"):
            wise_option(bad)
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, mans, specs, space = base
    space.save(tmp_path / "s1")
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s1"), "--data", str(mans["b"]), "--out", str(tmp_path / "s2"),
                                 "--epochs", "1", "--cache", str(tmp / "c"), "--wise", "none"])
    assert r.exit_code == 0 and Space.load(tmp_path / "s2").info["lineage"][-1]["config"]["wise"] is None, r.output
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s1"), "--data", str(mans["b"]), "--out", str(tmp_path / "s3"),
                                 "--wise", "1.5"])
    assert r.exit_code == 2 and "'off'" in r.output and "None" not in r.output and not (tmp_path / "s3").exists()


def test_how_the_update_kept_the_old_space_is_logged(base, caplog):
    """distill= alone selects Mod-X, which now also mixes back (and trains at 1e-4): the library says what it did,
    as the CLI does; alpha 0 says the projectors are the parent's (an index built with it is not stale)."""
    import logging

    tmp, mans, specs, space = base
    with caplog.at_level(logging.INFO, logger="anybind.update"):
        space.update(mans["b"], cache=tmp / "c", epochs=1, distill=1.0, wise=0.4)
        space.update(mans["b"], cache=tmp / "c", epochs=1, wise=0.0)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("method 'modx'" in m and "lr 0.0001" in m and "mixed back with the parent at alpha 0.4" in m
               for m in lines), lines
    assert any("alpha 0.0" in m and "unchanged" in m for m in lines), lines

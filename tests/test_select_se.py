"""The standard-error rule over every choice on val (issue 16, ``TrainConfig.select_se``): the start guard, the ridge
alpha, the kernel keep, the epoch and the WiSE-FT alpha each take the candidate nearest the training-free start whose
val score is within k standard errors (of the best's per-record scores) of the best.  The pure rule over random score
paths; on real Tux Paint pairs: k=0 is today's plain best, shuffled pairs end at the label bridge, real pairs whose
ridge clearly beats the bridge keep it, and the epoch kept is the earliest within k SE of the best in the history;
``select_se_on="finetune"`` leaves the start's choices as at k=0 and rules the epoch and WiSE-FT alpha only."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, load_manifest
from anybind.bench.transfer_systems import system_kwargs
from anybind.epochs import nearest_within_se, se_of
from anybind.errors import DataError
from anybind.robust import WISE_GRID, check_robust
from anybind.scale.train import check_config
from anybind.train import TrainConfig

MODS = ["image", "text"]


@settings(max_examples=60, deadline=None)
@given(means=st.lists(st.floats(0, 1), min_size=1, max_size=12), n=st.integers(2, 40),
       k=st.sampled_from([0.0, 0.5, 1.0, 2.0]), seed=st.integers(0, 2**16))
def test_the_rule_takes_the_first_candidate_within_k_standard_errors_of_the_best(means, n, k, seed):
    rng = np.random.default_rng(seed)
    items = [np.clip(m + rng.normal(scale=0.3, size=n), 0, 1) for m in means]  # per-record scores, nearest start first
    i, rec = nearest_within_se(items, k)
    mean = [float(v.mean()) for v in items]
    best = max(range(len(items)), key=lambda j: (mean[j], -j))  # the first best
    err = float(items[best].std(ddof=1) / math.sqrt(n))
    assert rec["best"] == best and rec["best_se"] == pytest.approx(err, abs=1e-6) and se_of(items[best]) == err
    assert i == rec["chosen"] <= best and mean[i] >= mean[best] - k * err
    assert all(mean[j] < mean[best] - k * err for j in range(i))  # nothing nearer the start qualifies
    if k == 0:
        assert mean[i] == mean[best]
    assert nearest_within_se(items, k + 1.0)[0] <= i  # a wider margin never moves further from the start


def test_no_score_keeps_the_start_and_an_empty_path_is_refused():
    assert nearest_within_se([np.array([np.nan]), np.array([np.nan])], 1.0)[0] == 0
    assert nearest_within_se([np.array([np.nan]), np.array([0.2, 0.4])], 1.0)[0] == 1  # NaN is never the best
    with pytest.raises(ValueError, match="no candidates"):
        nearest_within_se([], 1.0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True, "1"])
def test_a_bad_margin_is_refused_in_one_line(bad):
    with pytest.raises(DataError) as e:
        check_robust(TrainConfig(select_se=bad))
    assert "\n" not in str(e.value) and str(e.value).startswith("select_se must be a non-negative number")


def test_the_streaming_trainer_refuses_it_and_the_bench_lever_sets_it():
    with pytest.raises(DataError, match="select_se=1.0 .* needs the in-memory fit"):
        check_config(TrainConfig(select_se=1.0, init="ridge", lock="text"))
    check_config(TrainConfig(select_se=0.0, init="ridge", lock="text"))
    assert system_kwargs("defaults+selse0.5") == {"select_se": 0.5}
    assert system_kwargs("defaults+selse1+se0.5") == {"select_se": 1.0, "ridge_se": 0.5}
    assert system_kwargs("defaults+selft0.5") == {"select_se": 0.5, "select_se_on": "finetune"}
    assert system_kwargs("defaults+finetune") == {"finetune": True}
    assert system_kwargs("defaults+nofinetune") == {"finetune": False}


def test_keeping_the_start_needs_one_a_random_start_is_refused_in_one_line():
    """finetune=False keeps the training-free start: init='random' has none, so it is refused (not silently a random
    space); with a start (or fine-tuning on) the check passes, the streaming trainer's too (it honours it)."""
    with pytest.raises(DataError) as e:
        check_robust(TrainConfig(finetune=False, init="random"))
    assert "\n" not in str(e.value) and "finetune=False" in str(e.value) and "init='random'" in str(e.value)
    check_robust(TrainConfig(finetune=True, init="random"))
    check_robust(TrainConfig(finetune=False, init="ridge", lock="text"))
    check_config(TrainConfig(finetune=False, init="ridge", lock="text"))
    from anybind.robust import loop_config  # the one place both trainers take their epochs from

    on = TrainConfig(epochs=7, finetune=True)
    assert loop_config(on) is on and loop_config(TrainConfig(epochs=7, finetune=False)).epochs == 0


def _manifest(tux_dir, out, shuffle: bool):
    """200 real Tux Paint stamps, one in four a val record; ``shuffle``: the train captions permuted (useless pairs)."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:200]
    rows = [{"id": r["id"], "split": "val" if i % 4 == 0 else "train", "text": r["text"],
             "image": str(tux_dir / r["image"])} for i, r in enumerate(recs)]
    if shuffle:
        train = [i for i, r in enumerate(rows) if r["split"] == "train"]
        texts = [rows[j]["text"] for j in np.random.default_rng(0).permutation(train)]
        for i, t in zip(train, texts):
            rows[i] = {**rows[i], "text": t}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_manifest(out, modalities=MODS)


@pytest.fixture(scope="module")
def tux200(tux_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("select-se")
    return {s: _manifest(tux_dir, d / f"{s}.jsonl", s == "shuffled") for s in ("real", "shuffled")}


def _fit(man, cache, **kw):
    sp = Space.fit(man, modalities=MODS, cache=cache, progress=False, seed=0, **{"epochs": 8, **kw})
    tr = sp.info["training"]
    return sp, tr, tr["robust"], tr["robust"]["ridge"]["image"]


def test_k0_is_todays_plain_best_at_every_choice(tux200, shared_cache):
    from anybind.fitting import VAL_WARN

    plain, tr, rob, r = _fit(tux200["real"], shared_cache)  # recipe auto: the rule where the own val is small
    zero, tr0, rob0, r0 = _fit(tux200["real"], shared_cache, select_se=0.0)
    n_val = tr0["val_records"]  # image-text: every val record is a pair
    auto = plain.info["lineage"][-1]["recipe"]["chosen"].get("select_se")
    assert n_val < VAL_WARN and auto == 1.0, (n_val, auto)  # 50 val pairs: the rule (its absence at VAL_WARN
    assert tr["epoch_se_rule"]["k"] == 1.0 and r["guard"]["rule"] == "1se"  # pairs: tests/test_fit_val_warning.py)
    text = json.dumps(tr0, default=str)
    assert "se_rule" not in text and '"rule"' not in text  # nothing recorded: the rule is off
    g, kern = r0["guard"], r0["kernel"]
    assert g["kept"] == ("start" if g["start_val"] >= g["ridge_val"] else "ridge")
    assert kern["kept"] == (max(kern["grid"].values()) > kern["base_val"] + 1e-9)
    w = rob0["wise_val"]
    assert rob0["wise_alpha"] == max(WISE_GRID, key=lambda a: (w[f"{a:.1f}"], -a))


def test_useless_pairs_end_at_the_label_bridge(tux200, shared_cache):
    sp, tr, rob, r = _fit(tux200["shuffled"], shared_cache, select_se=1.0)
    assert r["guard"]["kept"] == "start" and r["guard"]["rule"] == "1se" and r["alpha"] is None
    assert r["kernel"]["kept"] is False and not sp.projectors["image"].cfg.kernel
    assert rob["wise_alpha"] == 0.0 and rob["wise_se_rule"]["chosen"] == 0.0
    assert sp.info["lineage"][-1]["se_rule"]["wise"] == rob["wise_se_rule"]  # the lineage says what it chose
    start, _, _, _ = _fit(tux200["shuffled"], shared_cache, select_se=1.0, epochs=0)  # the start itself, untrained
    for k, v in start.projectors["image"].state_dict().items():
        assert torch.equal(v, sp.projectors["image"].state_dict()[k]), k


def test_pairs_that_clearly_help_keep_the_trained_start_and_the_epoch_rule_reads_the_history(tux200, shared_cache):
    sp, tr, rob, r = _fit(tux200["real"], shared_cache, select_se=1.0)
    g = r["guard"]
    assert g["kept"] == "ridge" and g["start_val"] < g["best_val"] - g["best_se"]  # a clear margin: the ridge kept
    assert r["alpha"] is not None and r["alpha"] >= r["se_rule"]["best_alpha"]  # at least as shrunk as the best
    _, tr1, _, _ = _fit(tux200["real"], shared_cache, select_se=0.25, wise=None)
    rule, hist = tr1["epoch_se_rule"], {h["epoch"]: h["val"] for h in tr1["history"]}
    best = max(hist, key=lambda e: (hist[e], -e))
    assert rule["best"] == best and rule["best_val"] == pytest.approx(hist[best], abs=1e-6)
    want = min(e for e in hist if hist[e] >= hist[best] - 0.25 * rule["best_se"])
    assert tr1["best_epoch"] == rule["chosen"] == want and rule["chosen_val"] == pytest.approx(hist[want], abs=1e-6)


def test_on_finetune_leaves_the_start_as_at_k0_and_rules_the_epoch_and_wise_alpha(tux200, shared_cache):
    """``select_se_on="finetune"``: the start's choices (guard, ridge alpha, kernel keep) and weights are K=0's,
    bit for bit, while the epoch and WiSE-FT alpha take the rule; ``"all"`` moves the start too (real stamps)."""
    man = tux200["shuffled"]  # useless pairs: the rule over every choice ends at the label bridge
    _, _, _, r0 = _fit(man, shared_cache, select_se=0.0)  # K=0 (recipe auto would take K=1 on this small val)
    sp, tr, rob, r = _fit(man, shared_cache, select_se=1.0, select_se_on="finetune")
    _, _, _, r_all = _fit(man, shared_cache, select_se=1.0)
    assert r == r0 and "se_rule" not in r and "rule" not in r["guard"] and "rule" not in r["kernel"]
    assert r_all != r0 and r_all["guard"]["rule"] == "1se"  # the switch is what keeps the start as at K=0
    start0, *_ = _fit(man, shared_cache, select_se=0.0, epochs=0)
    start, *_ = _fit(man, shared_cache, select_se=1.0, select_se_on="finetune", epochs=0)
    a, b = start0.projectors["image"].state_dict(), start.projectors["image"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rule, w = tr["epoch_se_rule"], rob["wise_val"]  # the fine-tuning choices: the rule applies
    assert rule["k"] == 1.0 and tr["best_epoch"] == rule["chosen"] <= rule["best"]
    best = max(WISE_GRID, key=lambda x: (w[f"{x:.1f}"], -x))
    assert rob["wise_se_rule"]["best"] == best and rob["wise_alpha"] == rob["wise_se_rule"]["chosen"] <= best
    assert sp.info["lineage"][-1]["se_rule"]["wise"] == rob["wise_se_rule"] and sp.config["select_se_on"] == "finetune"


@pytest.mark.parametrize("bad", ["start", "", None, 1, "ALL"])
def test_a_bad_select_se_on_is_refused_in_one_line(bad):
    with pytest.raises(DataError) as e:
        check_robust(TrainConfig(select_se=1.0, select_se_on=bad))
    assert "\n" not in str(e.value) and str(e.value) == f"select_se_on must be 'all' or 'finetune', got {bad!r}"
    check_robust(TrainConfig(select_se=1.0, select_se_on="finetune"))


def test_the_cli_flag_sets_it_and_refuses_a_bad_value_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app
    from test_robust import make_pairs

    m, specs = make_pairs(tmp_path, n=100)
    args = ["fit", str(m), "--epochs", "2", "--lock", "tx", "--init", "ridge", "--no-kernel-start", "--cache",
            str(tmp_path / "c"), "--out", str(tmp_path / "sp"), *[x for k, s in specs.items() for x in ("-e", f"{k}={s}")]]
    bad = CliRunner().invoke(app, [*args, "--select-se", "-1"])
    errors = [x for x in bad.output.splitlines() if x.startswith("error:")]
    assert bad.exit_code == 2 and len(errors) == 1 and "--select-se" in errors[0] and not (tmp_path / "c").exists()
    res = CliRunner().invoke(app, [*args, "--select-se", "1"])
    assert res.exit_code == 0, res.output
    space = Space.load(tmp_path / "sp")
    assert space.config["select_se"] == 1.0 and space.info["training"]["epoch_se_rule"]["k"] == 1.0
    assert space.config["select_se_on"] == "all"
    bad = CliRunner().invoke(app, [*args, "--select-se", "1", "--select-se-on", "start"])
    assert bad.exit_code == 2 and "--select-se-on" in bad.output
    res = CliRunner().invoke(app, [*args, "--select-se", "1", "--select-se-on", "finetune", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert Space.load(tmp_path / "sp").config["select_se_on"] == "finetune"


def test_wise_mixes_the_start_with_the_epoch_the_rule_kept(tmp_path):
    from test_robust import fit, make_pairs, same, weights

    m, specs = make_pairs(tmp_path, n=600)  # a non-linear view: training climbs for several epochs past the start
    kw = dict(select_se=0.5, epochs=10, patience=10)
    kept = fit(tmp_path, m, specs, **kw)  # the plain recipe: no WiSE-FT, the epoch the rule kept
    tr = kept.info["training"]
    assert 1 <= tr["best_epoch"] == tr["epoch_se_rule"]["chosen"] < tr["epoch_se_rule"]["best"]  # the rule moved it
    end = fit(tmp_path, m, specs, wise=1.0, **kw)  # WiSE-FT at alpha 1: its endpoint alone
    assert end.info["training"]["robust"]["wise_endpoint_epoch"] == tr["best_epoch"]
    assert same(weights(kept), weights(end))


class _Climb(torch.nn.Module):
    """One weight that SGD (lr 1, one step an epoch) moves from 0 by 1 an epoch: the weight kept names the epoch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return -self.w


@settings(max_examples=40, deadline=None)
@given(path=st.integers(2, 12).flatmap(lambda n: st.lists(st.lists(st.integers(0, 6), min_size=n, max_size=n),
                                                     min_size=2, max_size=14)),
       k=st.sampled_from([0.5, 1.0, 3.0]), patience=st.integers(1, 5))
def test_the_loop_keeps_the_earliest_epoch_within_k_se_of_the_best_as_the_full_history_says(path, k, patience):
    import itertools

    from anybind.loop import fit_loop, make_temperature

    items = [np.asarray(p, dtype=np.float64) / 6 for p in path]  # per-record scores of epoch 0 (the start), 1, ...

    def run(select_se):
        model = _Climb()
        res = fit_loop(model, itertools.repeat(None), torch.optim.SGD(model.parameters(), lr=1.0),
                       make_temperature(0.07, learn=False), epochs=len(items) - 1, steps=1, use_val=True,
                       patience=patience, keep={"m": model}, start=True, select_se=select_se,
                       score=lambda e: items[e] if select_se else float(items[e].mean()))
        return res, float(model.w.detach())

    (res, w), (plain, _) = run(k), run(0.0)
    assert [h["val"] for h in res.history] == [h["val"] for h in plain.history]  # early stopping on the mean, as at k=0
    mean = {h["epoch"]: h["val"] for h in res.history}
    records, top = [], None  # the epochs that set a record, as early stopping counts one (more than 1e-6 above)
    for e in sorted(mean):
        if top is None or mean[e] > top + 1e-6:
            records, top = [*records, e], mean[e]
    best = records[-1]
    want = min(e for e in records if mean[e] >= mean[best] - k * se_of(items[best]))
    assert res.best_epoch == w == want and res.se_rule["best"] == best and res.se_rule["chosen"] == want
    assert res.best_val == mean[want] and plain.best_epoch == best


def test_the_guard_never_keeps_a_ridge_that_scores_below_the_start_on_val():
    from anybind.ridge import GUARD_ALPHAS, RIDGE_ALPHAS, prior_ridge

    # per-record val scores, as the path scores them (alpha ascending), then the start: the best ridge (the least
    # shrunk) beats the start by more than select_se=0.25 of its SE, but ridge_se=2 picks the most shrunk, below it
    best, rest, start = [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]
    path = [np.array(best, float)] + [np.array(rest, float)] * (len(RIDGE_ALPHAS) + len(GUARD_ALPHAS) - 1)
    calls = iter([*path, np.array(start, float)])
    rng = np.random.default_rng(0)
    Z, T = torch.from_numpy(rng.normal(size=(20, 4))), torch.from_numpy(rng.normal(size=(20, 3)))
    scores: dict = {}
    alpha, W, rec = prior_ridge(Z.T @ Z, Z.T @ T, 20, lambda W: next(calls), W0=torch.zeros(4, 3,
                                dtype=torch.float64), guard=True, se=2.0, guard_se=0.25, scores=scores)
    assert rec["ridge_val"] < rec["start_val"]  # the ridge_se pick is below the start on val
    assert rec["kept"] == "start" and alpha is None and scores["val"] == rec["start_val"]


def test_on_finetune_without_the_rule_is_refused_not_ignored():
    """``--select-se 0 --select-se-on finetune`` fitted as if select_se_on were not given: refused in one line."""
    from anybind.robust import check_select_se_on

    with pytest.raises(DataError) as e:
        check_select_se_on(TrainConfig(select_se=0.0, select_se_on="finetune"))
    assert "\n" not in str(e.value) and str(e.value).startswith("select_se_on='finetune' steers nothing")


@pytest.mark.parametrize("kw, named", [({"l2sp": 0.01}, "l2sp=0.01"), ({"mixup": 0.5}, "mixup=0.5"),
                                       ({"select_se": 1.0, "select_se_on": "finetune"}, "select_se_on='finetune'")])
def test_keeping_the_start_with_a_fine_tuning_option_is_refused_not_ignored(kw, named):
    """finetune=False trains no epoch: an L2-SP or mixup weight (recorded in training.robust as if it had acted) or
    the rule on the fine-tuning choices only would steer nothing, so each is refused in one line naming it."""
    with pytest.raises(DataError) as e:
        check_robust(TrainConfig(finetune=False, init="ridge", lock="text", **kw))
    assert "\n" not in str(e.value) and named in str(e.value) and "finetune=False" in str(e.value)
    check_robust(TrainConfig(finetune=True, init="ridge", lock="text", **kw))  # fine-tuned: each acts

"""The local-epoch count of a federation chosen on its clients' val pairs (issue 19; anybind.federated_epochs):
the grid's parsing and refusals, the rule (best val, ties to fewer epochs, unscored counts never win), the chosen
federation bit for bit the direct run with that count, a choice that reads no test record (mispaired test records on
the clients change nothing), the lineage, the study's column and the CLI."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind import Space, load_manifest
from anybind.cli import app
from anybind.errors import DataError
from anybind.federated import federate, train_alone
from anybind.federated_epochs import AUTO_LOCAL_EPOCHS, choose_local_epochs, local_epoch_grid
from anybind.federated_study import seed_summary
from anybind.train import FeatureSet
from anybind.wording import counted

import federated_helpers
from federated_helpers import CFG, KINDS

world = federated_helpers.world
QUICK = {**CFG, "rounds": 3, "patience": 3}


def test_the_grid_parses_counts_and_refuses_anything_else_in_one_line():
    assert local_epoch_grid(5) == (5,) and local_epoch_grid("5") == (5,) and local_epoch_grid(" 3, 1 ") == (1, 3)
    assert local_epoch_grid("auto") == AUTO_LOCAL_EPOCHS == (1, 3, 5) and local_epoch_grid([5, 1]) == (1, 5)
    for bad in (0, -1, "0", "1,1", "", "a", "1,,3", 1.5, True, [], [2, 2], None, "auto,1"):
        with pytest.raises(ValueError, match="local_epochs takes a whole number >= 1") as e:
            local_epoch_grid(bad)
        assert "\n" not in str(e.value)


@given(st.lists(st.integers(1, 50), min_size=1, max_size=6, unique=True))
@settings(max_examples=40, deadline=None)
def test_any_distinct_counts_give_their_ascending_grid(counts):
    assert local_epoch_grid(counts) == local_epoch_grid(",".join(map(str, counts))) == tuple(sorted(counts))


@given(st.lists(st.one_of(st.none(), st.just(math.nan), st.floats(0, 1)), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_the_rule_is_the_best_finite_val_and_a_tie_goes_to_fewer_epochs(vals):
    grid = tuple(range(1, len(vals) + 1))
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if not finite:
        with pytest.raises(DataError, match="could be scored"):
            choose_local_epochs(grid, vals)
        return
    i = choose_local_epochs(grid, vals)
    assert vals[i] >= max(finite) - 1e-9 and all(v is None or not v >= max(finite) - 1e-9 for v in vals[:i])


def test_scores_equal_up_to_float_rounding_are_a_tie_for_the_fewer_epochs():
    # the bench's seed 0: the same val queries right with 1 and 3 local epochs, summed in another order
    assert choose_local_epochs((1, 3, 5), [0.7799352750809061, 0.7799352750809062, 0.5]) == 0
    assert choose_local_epochs((1, 3), [0.7799, 0.7801]) == 1


def _direct(cpaths, ppath, specs, cache, n, **kw):
    return federate(cpaths, ppath, encoders=specs, cache=cache, local_epochs=n, **{**QUICK, **kw})


def test_the_chosen_count_is_the_best_on_val_and_its_federation_bit_for_bit(world):
    tmp, path, specs, cpaths, ppath, *_ = world
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="creamfl", local_epochs="1,4", **QUICK)
    e = sp.info["lineage"][-1]
    search = e["local_epochs_search"]
    direct = {n: _direct(cpaths, ppath, specs, tmp / "c", n, method="creamfl") for n in (1, 4)}
    vals = [direct[n].info["training"]["best_val"] for n in (1, 4)]
    assert search["grid"] == [1, 4] and search["val"] == vals and vals[0] != vals[1]
    chosen = (1, 4)[choose_local_epochs((1, 4), vals)]
    assert search["chosen"] == chosen == e["config"]["local_epochs"]
    assert search["best_round"] == [direct[n].info["lineage"][-1]["best_round"] for n in (1, 4)]
    want = direct[chosen]
    for m in ("sa", "sb"):
        a, b = sp.projectors[m].state_dict(), want.projectors[m].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), m
    assert sp.info["training"] == want.info["training"] and e["bytes"] == want.info["lineage"][-1]["bytes"]
    # every federation of the search counted: what left the clients to choose the count
    total = sum(sum(d.info["lineage"][-1]["bytes"][k] for k in ("up", "down", "evaluation")) for d in direct.values())
    assert search["bytes"] == total and "val" in search["rule"]
    # one count is the federation as before, without a search record
    assert "local_epochs_search" not in direct[1].info["lineage"][-1]


def _with_test_records(tmp, path, cpaths, tag: str, mispair: bool) -> list:
    """The clients' manifests plus the corpus's test records of their categories (``mispair``: each test record's sb
    is the next test record's: the test pairs are wrong)."""
    test = [r for r in load_manifest(path, kinds=KINDS).records if r.split == "test"]
    out = []
    for i, cp in enumerate(cpaths):
        mine = [json.loads(line) for line in cp.read_text().splitlines()]
        cats = {r["labels"]["top"] for r in mine}
        extra = [r for r in test if r.labels["top"] in cats]
        rows = [{"id": r.id, "split": "test", "sa": r.id, "sb": extra[(j + mispair) % len(extra)].id,
                 "labels": r.labels} for j, r in enumerate(extra)]
        p = tmp / f"client{i}-{tag}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in mine + rows))
        out.append(p)
    return out


def test_the_choice_reads_no_test_record(world, monkeypatch):
    from federated_helpers import r1

    tmp, path, specs, cpaths, ppath, *_ = world
    right = _with_test_records(tmp, path, cpaths, "right", mispair=False)
    wrong = _with_test_records(tmp, path, cpaths, "wrong", mispair=True)
    asked: list[str] = []
    split_idx = FeatureSet.split_idx
    monkeypatch.setattr(FeatureSet, "split_idx", lambda self, split: (asked.append(split), split_idx(self, split))[1])
    got = [federate(c, ppath, encoders=specs, cache=tmp / "c", method="fedavg", local_epochs="1,3", **QUICK)
           for c in (right, wrong)]
    assert "test" not in asked and {"train", "val"} <= set(asked)
    a, b = (g.info["lineage"][-1]["local_epochs_search"] for g in got)
    assert a["val"] == b["val"] and a["chosen"] == b["chosen"]
    for m in ("sa", "sb"):
        assert all(torch.equal(got[0].projectors[m].state_dict()[k], got[1].projectors[m].state_dict()[k])
                   for k in got[0].projectors[m].state_dict())
    # the test records do differ: a choice that read them would see another score
    assert r1(got[0], right[0], tmp / "c") != r1(got[0], wrong[0], tmp / "c")


def test_a_grid_needs_val_pairs_and_is_refused_where_a_count_must_be_one(world, tmp_path):
    tmp, path, specs, cpaths, ppath, *_ = world
    no_val = tmp_path / "noval.jsonl"
    no_val.write_text("".join(line + "\n" for line in cpaths[0].read_text().splitlines()
                              if json.loads(line)["split"] != "val"))
    with pytest.raises(DataError, match="none of the 1 clients holds a val pair") as e:
        federate([no_val], ppath, encoders=specs, cache=tmp / "c", local_epochs="1,2", **QUICK)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="whole number here"):
        train_alone(cpaths[0], ppath, encoders=specs, cache=tmp / "c", local_epochs=[1, 2], **QUICK)
    with pytest.raises(ValueError, match="local_epochs takes"):
        federate(cpaths, ppath, encoders=specs, cache=tmp / "c", local_epochs="1,0", **QUICK)


def test_the_study_names_each_federations_count_and_the_summary_each_seeds():
    rows = [[{"name": "client 0 alone", "test R@1": 0.1, "bytes/round": None, "local epochs": None},
             {"name": "creamfl", "test R@1": 0.2, "bytes/round": 10, "local epochs": n},
             {"name": "centralised (union + public)", "test R@1": 0.25, "bytes/round": None, "local epochs": None}]
            for n in (5, 3)]
    by = {r["name"]: r for r in seed_summary(rows)}
    assert by["creamfl"]["local epochs"] == "5/3" and by["centralised (union + public)"]["local epochs"] is None
    plain = [[{k: v for k, v in r.items() if k != "local epochs"} for r in rs] for rs in rows]
    assert all("local epochs" not in r for r in seed_summary(plain))  # tables of one count stay as they were


def test_cli_federate_local_epochs(world, tmp_path):
    tmp, path, specs, cpaths, ppath, *_ = world
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    args = ["federate", *[x for p in cpaths for x in ("--client", str(p))], "--public", str(ppath), *enc,
            "--cache", str(tmp / "c"), "--rounds", "2", "--dim", "16", "--hidden", "32", "--method", "fedavg"]
    r = CliRunner().invoke(app, [*args, "--local-epochs", "1,2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    search = Space.load(tmp_path / "s").info["lineage"][-1]["local_epochs_search"]
    assert search["grid"] == [1, 2] and f"{counted(search['chosen'], 'local epoch')} chosen on the clients' val" in r.output
    r = CliRunner().invoke(app, [*args, "--local-epochs", "0", "--out", str(tmp_path / "s2")])
    assert r.exit_code == 2 and "local_epochs takes" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "s2").exists()


def test_the_study_gives_each_federation_its_chosen_count(world):
    from anybind.federated_study import federated_study

    tmp, path, specs, *_ = world
    rows = federated_study(load_manifest(path, kinds=KINDS), k=3, public_fraction=0.1, pair=("sa", "sb"),
                           encoders=specs, config={**QUICK, "rounds": 2, "local_epochs": "1,2"}, cache=tmp / "c",
                           fit_too=False, methods=("fedavg",))
    by = {r["name"]: r for r in rows}
    assert by["fedavg"]["local epochs"] in (1, 2) and by["client 0 alone"]["local epochs"] is None
    assert all(list(r) == list(rows[0]) for r in rows)  # one table: the same columns in every row


def test_the_bench_passes_the_grid_to_every_federation_and_refuses_a_bad_one_first(monkeypatch, tmp_path):
    import anybind.data.manifest as manifest_mod
    import anybind.federated_study as study
    from anybind.bench import tasks_keep

    calls = []

    def fake_study(man, *, methods=("fedavg", "creamfl"), variants=None, config=None, **kw):
        calls.append(dict(config or {}))
        names = ["public set alone", *methods, *(variants or {}), "centralised (union + public)"]
        return [{"name": n, "test R@1": 0.1, "val": 0.5, "records": 1, "best/run": "1/1", "bytes/round": 1,
                 "hits": [0.0, 1.0]} for n in names]

    monkeypatch.setattr(study, "federated_study", fake_study)
    monkeypatch.setattr(tasks_keep, "prepare_tuxpaint", lambda work: tmp_path / "m.jsonl")
    monkeypatch.setattr(manifest_mod, "load_manifest", lambda *a, **k: None)
    for opt, want in (("1", 1), ("5", 5), ("1,3,5", [1, 3, 5]), ("auto", [1, 3, 5]), ("3,1", [1, 3])):
        res = tasks_keep.federated(tmp_path, fit="0", before="0", local_epochs=opt)
        assert calls[-1]["local_epochs"] == want and res.config["local_epochs"] == want
        assert ("chosen per federation" in res.notes[0]) is isinstance(want, list)
    monkeypatch.setattr(tasks_keep, "prepare_tuxpaint", lambda work: calls.append("built"))
    n = len(calls)
    with pytest.raises(ValueError, match="local_epochs takes") as e:
        tasks_keep.federated(tmp_path, fit="0", local_epochs="0,1")
    assert "\n" not in str(e.value) and len(calls) == n

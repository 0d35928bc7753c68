"""The continual and merge studies behind `anybind bench --task continual --task merge` (issue 19), on small
synthetic data: the rows they report and that they measure what they claim."""

import pytest

from anybind import load_manifest
from anybind.errors import AnybindError, DataError
from anybind.lifecycle import continual_study, held_out_val, merge_study
from test_merge import KINDS, views
from test_update import two_domains

FIT = dict(epochs=25, patience=5, hidden=32, dim=16)


def test_continual_study_rows(tmp_path):
    mans, specs = two_domains(tmp_path, n=300)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, update={"epochs": 5, "lr": 1e-3},
                           cache=tmp_path / "c")
    assert [(r["name"], r["step"]) for r in rows] == [
        ("first space", 0), ("frozen", 1), ("naive", 1), ("wise", 1), ("modx", 1), ("joint", 1)]
    first, frozen = rows[0], rows[1]
    assert frozen["old R@1"] == first["old R@1"] and frozen["forgetting"] == 0.0  # the frozen space is the first
    for r in rows[2:]:
        assert r["forgetting"] == pytest.approx(first["old R@1"] - r["old R@1"])
        assert 0.0 <= r["new R@1"] <= 1.0


def test_one_mod_x_system_keeps_the_name_modx(tmp_path):
    """The bench's default (one weight) names its system "modx": it was refused as a clash with the method itself."""
    mans, specs = two_domains(tmp_path, n=200)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, joint=False, update={"epochs": 1},
                           modx_weights={"modx": 0.5}, cache=tmp_path / "c")
    assert [r["name"] for r in rows] == ["first space", "frozen", "naive", "wise", "modx"]
    with pytest.raises(AnybindError, match="may not be named 'wise'"):
        continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, modx_weights={"wise": 1.0},
                        cache=tmp_path / "c")


def three_domains(tmp_path, n=300):
    """Domain a, and domain b cut in two halves (b1, b2: the same distribution, so b2's update keeps b1)."""
    mans, specs = two_domains(tmp_path, n=n)
    lines = mans["b"].read_text().splitlines(keepends=True)
    for name, part in (("b1", lines[: n // 2]), ("b2", lines[n // 2:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(part))
    return [(d, load_manifest(mans["a"] if d == "a" else tmp_path / f"{d}.jsonl", kinds={"sa": "key", "sb": "key"}))
            for d in ("a", "b1", "b2")], specs


def test_continual_study_shows_every_domain_after_each_step(tmp_path):
    doms, specs = three_domains(tmp_path)
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, update={"epochs": 3, "lr": 1e-3},
                           cache=tmp_path / "c")
    assert [(r["name"], r["step"]) for r in rows] == [("first space", 0)] + [
        (n, s) for s in (1, 2) for n in ("frozen", "naive", "wise", "modx", "joint")]
    cols = ["R@1 a", "R@1 b1", "R@1 b2"]
    for r in rows:  # every row has every domain's column (the table's columns come from the first row)
        assert list(r)[-3:] == cols
        seen = cols[: r["step"] + 1]
        assert all(0.0 <= r[c] <= 1.0 for c in seen) and all(r[c] is None for c in cols[r["step"] + 1:])
        assert r["old R@1"] == r["R@1 a"] and r["new R@1"] == r[f"R@1 {r['domain']}"]
    by = {(r["name"], r["step"]): r for r in rows}
    assert by[("frozen", 2)]["R@1 b1"] == by[("frozen", 1)]["R@1 b1"]  # the same space, the same test split
    assert by[("frozen", 2)]["R@1 a"] == by[("first space", 0)]["R@1 a"]
    from anybind.bench import rows_table

    table = rows_table("continual", rows)
    assert [c.header for c in table.columns][-3:] == cols
    assert list(table.columns[-1].cells)[:6] == ["-"] * 6  # b2 not seen before step 2


def test_continual_study_refuses_two_domains_of_one_name(tmp_path):
    doms, specs = three_domains(tmp_path, n=40)
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match="'a' more than once"):  # the bench CLI's one-line error, no traceback
        continual_study([doms[0], doms[1], ("a", doms[2][1])], pair=("sa", "sb"), encoders=specs, fit=FIT,
                        cache=tmp_path / "c")


def test_merge_study_rows(tmp_path):
    mans, specs = views(tmp_path, n=200)
    rows = merge_study(load_manifest(mans["all"], kinds=KINDS), encoders=specs, fit=FIT, b_fit={"seed": 1},
                       cache=tmp_path / "c")
    assert [r["name"] for r in rows] == ["A image<->text", "B audio<->text", "merged", "joint"]
    assert rows[0]["audio<->image R@1"] is None and rows[1]["image<->text R@1"] is None
    assert rows[2]["image<->text R@1"] == rows[0]["image<->text R@1"]  # A's projectors are kept
    assert rows[2]["audio<->image R@1"] > 0.3 and rows[2]["anchor cosine"] > 0.8  # chance: 1/40


def test_bench_tasks_are_registered():
    from anybind.bench import load_tasks

    tasks = load_tasks()
    assert {"continual", "merge"} <= set(tasks) and "Mod-X" in tasks["continual"].description


def test_continual_study_chooses_the_distillation_weight_on_val(tmp_path):
    mans, specs = two_domains(tmp_path, n=300)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, joint=False,
                           update={"epochs": 3, "lr": 1e-3, "distill": "auto"}, cache=tmp_path / "c")
    by = {r["name"]: r for r in rows}
    assert by["modx"]["distill"] in (0.1, 0.3, 1.0, 3.0, 10.0) and "distill" not in by["naive"]


def test_bench_continual_caps_a_domain_and_reports_every_domain(monkeypatch, tmp_path):
    import anybind.lifecycle as lifecycle
    from anybind.bench import tasks_keep

    doms, _ = three_domains(tmp_path, n=200)
    by_name = dict(doms)
    got = []

    def fake_study(mans, **kw):
        got.append(mans)
        names = [n for n, _ in mans]
        return [{"name": sys, "step": s, "domain": names[s], "old R@1": 0.5, "new R@1": 0.4, "forgetting": 0.1,
                 **{f"R@1 {n}": (0.3 if i <= s else None) for i, n in enumerate(names)}}
                for s, sys in ((0, "first space"), (1, "naive"), (2, "naive"), (2, "modx"))]

    monkeypatch.setattr(lifecycle, "continual_study", fake_study)
    monkeypatch.setattr(tasks_keep, "_domain", lambda work, name: name)
    monkeypatch.setattr("anybind.data.manifest.load_manifest", lambda name, **kw: by_name[name])
    res = tasks_keep.continual(tmp_path, domains="a,b1,b2", cap="b2:30")
    ids = [r.id for r in got[-1][2][1].records]
    assert [len(m.records) for _, m in got[-1]] == [200, 100, 30] and len(set(ids)) == 30
    assert set(ids) <= {r.id for r in by_name["b2"].records}
    assert "b2 30 records drawn with seed 0" in res.notes[0] and res.config["cap"] == {"b2": 30}
    tasks_keep.continual(tmp_path, domains="a,b1,b2", cap="b2:30")
    assert [r.id for r in got[-1][2][1].records] == ids  # the same draw with the same seed
    tasks_keep.continual(tmp_path, domains="a,b1,b2", cap="b2:30", seed=1)
    assert [r.id for r in got[-1][2][1].records] != ids
    assert "modx/step2/R@1 b1" in res.metrics and "naive/step1/R@1 b1" in res.metrics
    assert "naive/step1/R@1 b2" not in res.metrics  # not seen yet: no number
    # a cap at or over a domain's size keeps every record: the notes and config do not claim a draw
    res = tasks_keep.continual(tmp_path, domains="a,b1,b2", cap="b1:100,b2:30")
    assert [len(m.records) for _, m in got[-1]] == [200, 100, 30]
    assert "b1 100 records drawn" not in res.notes[0] and "b2 30 records drawn with seed 0" in res.notes[0]
    assert res.config["cap"] == {"b2": 30}
    for bad in ("b2:5", "c:30", "b2", "b2:30,b2:40"):
        with pytest.raises(ValueError, match="cap must be domain:N"):
            tasks_keep.continual(tmp_path, domains="a,b1,b2", cap=bad)


@pytest.mark.parametrize("cap", ["emoji:5", "nosuch:30", "emoji"])
def test_anybind_bench_refuses_a_bad_cap_in_one_line(tmp_path, cap):
    """`anybind bench --task continual --opt cap=...`: a bad cap is the one-line error the bench prints for a bad
    option, before any corpus is read (it was a ValueError traceback: the bench CLI reports anybind's errors)."""
    from typer.testing import CliRunner

    from anybind.cli import app

    res = CliRunner().invoke(app, ["bench", "--task", "continual", "--opt", f"cap={cap}",
                                   "--work", str(tmp_path / "work")])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit), repr(res.exception)
    assert [ln for ln in res.output.splitlines() if "cap must be domain:N" in ln][0].startswith("error: ")
    assert not (tmp_path / "work").exists()


def test_continual_study_runs_mod_x_weights_side_by_side(tmp_path):
    """... with a trade-off for the auto weight's choice: the systems of a fixed weight (naive, "modx 1.0") have
    no choice to weigh and are updated without it (given them, update_space refuses it)."""
    mans, specs = two_domains(tmp_path, n=300)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, joint=False,
                           update={"epochs": 3, "lr": 1e-3, "distill_tradeoff": 0.8},
                           modx_weights={"modx 1.0": 1.0, "modx auto": "auto"}, cache=tmp_path / "c")
    by = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == ["first space", "frozen", "naive", "wise", "modx 1.0", "modx auto"]
    assert by["modx auto"]["distill"] in (0.1, 0.3, 1.0, 3.0, 10.0) and "distill" not in by["modx 1.0"]
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match="may not be named 'naive'"):
        continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, modx_weights={"naive": 1.0},
                        cache=tmp_path / "c")


def test_bench_continual_distill_option(monkeypatch, tmp_path):
    """``--opt distill=1.0,auto``: one Mod-X system per weight, side by side; a bad list refused in one line."""
    import anybind.lifecycle as lifecycle
    from anybind.bench import tasks_keep
    from anybind.errors import AnybindError

    doms, _ = three_domains(tmp_path, n=40)
    got = {}

    def fake_study(mans, **kw):
        got.update(kw)
        return [{"name": "first space", "step": 0, "domain": "a", "old R@1": 0.5, "new R@1": 0.5, "forgetting": 0.0}]

    monkeypatch.setattr(lifecycle, "continual_study", fake_study)
    monkeypatch.setattr(tasks_keep, "_domain", lambda work, name: name)
    monkeypatch.setattr("anybind.data.manifest.load_manifest", lambda name, **kw: dict(doms)[name])
    tasks_keep.continual(tmp_path, domains="a,b1", distill="1.0,auto")
    assert got["modx_weights"] == {"modx 1.0": 1.0, "modx auto": "auto"} and got["judge"] == "val"
    res = tasks_keep.continual(tmp_path, domains="a,b1", distill="1.0,auto", judge="held")
    assert got["judge"] == "held" and res.config["judge"] == "held"
    tasks_keep.continual(tmp_path, domains="a,b1", distill="3")
    assert got["modx_weights"] == {"modx": 3.0}
    for bad in ("lots", "1.0,1", "-1", "nan", "auto,auto"):
        with pytest.raises(AnybindError, match="distill must be") as ei:
            tasks_keep.continual(tmp_path, domains="a,b1", distill=bad)
        assert "\n" not in str(ei.value)


def test_held_out_val_is_a_seeded_half_of_val_only(tmp_path):
    mans, _ = two_domains(tmp_path, n=300)
    man = load_manifest(mans["a"], kinds={"sa": "key", "sb": "key"})
    fit, held = held_out_val(man, seed=0)
    val = {r.id for r in man.split("val")}
    held_ids = {r.id for r in held.records}
    assert held_ids < val and {r.split for r in held.records} == {"val"}  # only val records are held out
    assert {r.id for r in fit.records} == {r.id for r in man.records} - held_ids  # the rest, train/test whole
    assert 0.3 < len(held_ids) / len(val) < 0.7  # about half
    assert {r.id for r in held_out_val(man, seed=0)[1].records} == held_ids  # the same on every call
    assert {r.id for r in held_out_val(man, seed=1)[1].records} != held_ids  # the seed draws another half


def test_continual_judge_held_hides_the_judge_from_the_first_fit(monkeypatch, tmp_path):
    """judge="held": the first fit and joint retraining never get the held-out val records; Mod-X's weight is
    chosen on only those (old domain) and the new domain's data; two runs give the same rows."""
    import anybind.fitting as fitting
    import anybind.update as upd

    mans, specs = two_domains(tmp_path, n=200)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    held = {r.id for r in held_out_val(doms[0][1], seed=0)[1].records}
    fitted, judged = [], []
    real_fit, real_choose = fitting.fit_space, upd.choose_distill

    def spy_fit(data, **kw):
        fitted.append({r.id for m in (data if isinstance(data, list) else [data]) for r in m.records})
        return real_fit(data, **kw)

    def spy_choose(space, data, **kw):
        judged.append(({r.id for r in kw["old_val"].records}, {r.id for r in data.records}))
        return real_choose(space, data, **kw)

    monkeypatch.setattr(fitting, "fit_space", spy_fit)
    monkeypatch.setattr(upd, "choose_distill", spy_choose)
    run = dict(pair=("sa", "sb"), encoders=specs, fit=FIT, update={"epochs": 3, "lr": 1e-3},
               modx_weights={"modx auto": "auto"}, judge="held", cache=tmp_path / "c")
    rows = continual_study(doms, **run)
    assert len(fitted) == 2 and all(ids and not ids & held for ids in fitted)  # first fit, joint
    [(old, new)] = judged
    assert old == held and all(i.startswith("b") for i in new)
    assert {r["name"]: r for r in rows}["modx auto"]["distill"] in (0.1, 0.3, 1.0, 3.0, 10.0)
    assert continual_study(doms, **run) == rows
    with pytest.raises(DataError, match="judge"):
        continual_study(doms, **{**run, "judge": "test"})

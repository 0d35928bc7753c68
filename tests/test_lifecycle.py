"""The continual and merge studies behind `anybind bench --task continual --task merge` (issue 19), on small
synthetic data: the rows they report and that they measure what they claim."""

import pytest

from anybind import load_manifest
from anybind.lifecycle import continual_study, merge_study
from test_merge import KINDS, views
from test_update import two_domains

FIT = dict(epochs=25, patience=5, hidden=32, dim=16)


def test_continual_study_rows(tmp_path):
    mans, specs = two_domains(tmp_path, n=300)
    doms = [(d, load_manifest(mans[d], kinds={"sa": "key", "sb": "key"})) for d in ("a", "b")]
    rows = continual_study(doms, pair=("sa", "sb"), encoders=specs, fit=FIT, update={"epochs": 5, "lr": 1e-3},
                           cache=tmp_path / "c")
    assert [(r["name"], r["step"]) for r in rows] == [
        ("first space", 0), ("frozen", 1), ("naive", 1), ("modx", 1), ("joint", 1)]
    first, frozen = rows[0], rows[1]
    assert frozen["old R@1"] == first["old R@1"] and frozen["forgetting"] == 0.0  # the frozen space is the first
    for r in rows[2:]:
        assert r["forgetting"] == pytest.approx(first["old R@1"] - r["old R@1"])
        assert 0.0 <= r["new R@1"] <= 1.0


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

"""The bench harness: task registry, JSON records, Markdown sections."""

import json

import pytest

from anybind.bench import TASKS, TaskResult, run_tasks, task, update_markdown
from anybind.errors import AnybindError


@pytest.fixture()
def toy_tasks():
    @task("toy-a", "a toy task")
    def _a(work, cache=None, seed=0, console=None):
        return TaskResult(metrics={"x/R@1": 0.5 + seed}, baselines={"chance": {"x/R@1": 0.1}}, config={"k": 1})

    @task("toy-b", "a toy task with a table")
    def _b(work, cache=None, seed=0, console=None, limit="7", systems=""):
        return TaskResult(metrics={"y": float(limit)}, table=[{"name": "sys1", "y": 1.0}, {"name": "sys2", "y": 0.25}])

    yield
    TASKS.pop("toy-a")
    TASKS.pop("toy-b")


def test_run_tasks_writes_records(toy_tasks, tmp_path):
    out = tmp_path / "r.json"
    recs = run_tasks(["toy-a", "toy-b"], json_out=out, work=tmp_path, seed=2)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(recs))
    a = on_disk[0]
    assert a["task"] == "toy-a" and a["metrics"] == {"x/R@1": 2.5} and a["baselines"]["chance"]["x/R@1"] == 0.1
    assert a["config"]["seed"] == 2 and a["config"]["machine"]["cpus"] >= 1 and a["seconds"] >= 0
    assert on_disk[1]["table"][1] == {"name": "sys2", "y": 0.25}


def test_options_reach_only_tasks_that_take_them(toy_tasks, tmp_path):
    recs = run_tasks(["toy-a", "toy-b"], work=tmp_path, options={"limit": "3"})
    assert recs[0]["config"]["options"] == {} and recs[1]["config"]["options"] == {"limit": "3"}
    assert recs[1]["metrics"]["y"] == 3.0


def test_an_option_no_task_takes_is_an_error_before_anything_runs(toy_tasks, tmp_path):
    """``--opt sytems=...`` (a typo) ran the task on its defaults for as long as it takes, the option dropped."""
    out = tmp_path / "r.json"
    msg = r"^--opt limt: taken by none of the tasks toy-a, toy-b \(they take: limit, systems\)$"
    with pytest.raises(AnybindError, match=msg):
        run_tasks(["toy-a", "toy-b"], json_out=out, work=tmp_path, options={"limit": "3", "limt": "4"})
    assert not out.exists()


@pytest.mark.parametrize("opt", ["limit", "limit=", "=3"])
def test_an_opt_without_a_value_is_refused_by_the_cli(toy_tasks, tmp_path, opt):
    """``--opt select=`` (no value) ran the transfer bench on its defaults for as long as it takes: refused."""
    from typer.testing import CliRunner

    from anybind.cli import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "--task", "toy-b", "--opt", opt, "--work", str(tmp_path), "--json", str(out)])
    assert res.exit_code == 2 and "give KEY=VALUE" in res.output and "Traceback" not in res.output, res.output
    assert repr(opt) in res.output and not out.exists()


def test_markdown_command_records_the_options(toy_tasks, tmp_path):
    """A section must say how to reproduce its numbers: the --opt values belong in its command."""
    from typer.testing import CliRunner

    from anybind.cli import app

    md = tmp_path / "B.md"
    res = CliRunner().invoke(app, ["bench", "--task", "toy-b", "--opt", "limit=3", "--opt", "systems=a b,c",
                                   "--work", str(tmp_path), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    assert "`anybind bench --task toy-b --opt limit=3 --opt 'systems=a b,c'`" in md.read_text()


def test_row_names_and_notes_are_printed_as_written(tmp_path):
    """A row named 'defaults [image=...]' (transfer with --opt image=) lost its bracket to rich's markup in the
    printed table and notes; the bracket is the row's name."""
    import io

    from rich.console import Console

    @task("toy-markup", "square brackets in names")
    def _m(work, cache=None, seed=0, console=None):
        return TaskResult(metrics={"y": 1.0}, table=[{"name": "defaults [image=lite0@tta=flip+bridge]", "y": 1.0}],
                          notes=["defaults [image=lite0+bridge]: +0.031 (4/4 cells >=)"])

    buf = io.StringIO()
    try:
        run_tasks(["toy-markup"], work=tmp_path, console=Console(file=buf, width=300))
    finally:
        TASKS.pop("toy-markup")
    out = buf.getvalue()
    assert "defaults [image=lite0@tta=flip+bridge]" in out
    assert "note: defaults [image=lite0+bridge]: +0.031 (4/4 cells >=)" in out


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(AnybindError, match="unknown bench task"):
        run_tasks(["no-such-task"], work=tmp_path)


def test_markdown_sections_are_replaced_not_duplicated(toy_tasks, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    recs = run_tasks(["toy-a", "toy-b"], work=tmp_path)
    update_markdown(md, recs, "anybind bench --all")
    first = md.read_text()
    assert first.count("## toy-a") == 1 and "| sys2 | 0.250 |" in first and "| x/R@1 | 0.500 | 0.100 |" in first
    recs2 = run_tasks(["toy-a"], work=tmp_path, seed=1)
    update_markdown(md, recs2, "anybind bench --task toy-a")
    second = md.read_text()
    assert second.count("## toy-a") == 1 and "| x/R@1 | 1.500 | 0.100 |" in second
    assert "| sys2 | 0.250 |" in second  # the other task's section is kept


def test_builtin_tasks_registered():
    from anybind.bench import load_tasks

    names = set(load_tasks())
    assert {"tuxpaint-retrieval", "tuxpaint-ablation", "captioning", "fusion-merge"} <= names


def test_language_recalls_groups_translations_by_english_caption():
    """A translation of a duplicated caption finds any image of that caption; per-language rows."""
    import numpy as np

    from anybind.bench.tasks_multilingual import language_recalls
    from anybind.data.manifest import Record

    # two records share the English caption "A flower." (their images differ), one is a dog
    recs = [
        Record("f1", "test", {"image": "f1.png", "text": "A flower.", "text_fr": "Une fleur."}),
        Record("f2", "test", {"image": "f2.png", "text": "A flower.", "text_fr": "Une fleur."}),
        Record("d", "test", {"image": "d.png", "text": "A dog.", "text_fr": "Un chien.", "text_de": "Ein Hund."}),
    ]
    vec = {"f1.png": [1, 0, 0], "f2.png": [0, 1, 0], "d.png": [0, 0, 1],
           "A flower.": [0, 1, 0], "Une fleur.": [0, 1, 0], "A dog.": [0, 0, 1], "Un chien.": [1, 0, 0], "Ein Hund.": [0, 0, 1]}

    class Enc:
        def content_key(self, v):
            return v

    class FakeSpace:
        def embed(self, modality, items, cache=None):
            return np.array([vec[i] for i in items], dtype=np.float32)

        def encoder(self, modality):
            return Enc()

    out = language_recalls(FakeSpace(), recs, ("fr", "de", "es"))
    assert set(out) == {"en", "fr", "de"}  # no record has Spanish: no row
    # "A flower." query hits f2 first; f1 counts too (same English caption) -> both flowers found at rank 1
    assert out["en"]["R@1"] == 1.0
    # French: fleur -> f2 (found), chien -> f1 (a flower: wrong) -> R@1 2/3
    assert abs(out["fr"]["R@1"] - 2 / 3) < 1e-9 and out["fr"]["n"] == 3
    assert out["de"] == {**out["de"], "R@1": 1.0, "n": 1}

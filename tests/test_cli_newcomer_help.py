"""The CLI's help for a newcomer (issue 22): an option that takes a fixed set of values lists them (in its error
and its help, not only in prose), help at 80 columns cuts nothing, groups show an example, the compat table keeps
encoder names whole; the README and Makefile agree with the code."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from anybind.cli import app

from newcomer_helpers import cli, flat

ROOT = Path(__file__).resolve().parents[1]


BAD_CHOICES = [
    (["fit", "m.jsonl", "--out", "o", "--method", "procrustess"], "--method", ["contrastive", "procrustes", "cca"]),
    (["fit", "m.jsonl", "--out", "o", "--projector", "mpl"], "--projector", ["mlp", "linear"]),
    (["fit", "m.jsonl", "--out", "o", "--init", "ridg"], "--init", ["random", "ridge", "procrustes", "cca"]),
    (["fit", "m.jsonl", "--out", "o", "--missing", "zero"], "--missing", ["learned", "mean"]),
    (["fit", "m.jsonl", "--out", "o", "--recipe", "best"], "--recipe", ["auto", "plain"]),
    (["bind", "sp", "--add", "a=text", "--data", "m", "--out", "o", "--init", "procrustes"], "--init", ["ridge", "random"]),
    (["compat", "--data", "m", "-c", "a", "b", "--by", "cca"], "--by", ["mknn", "cka", "cka_debiased"]),
    (["eval", "sp", "m", "--split", "tests"], "--split", ["train", "val", "test", "all"]),
    (["eval", "sp", "m", "--rerank", "cs"], "--rerank", ["invgc", "qbnorm", "csls"]),
    (["index", "sp", "m", "--out", "o", "--ann", "sometimes"], "--ann", ["auto", "always", "never"]),
    (["index", "sp", "m", "--out", "o", "--ann-type", "hnsw"], "--ann-type", ["ivf_hnsw_sq", "ivf_pq"]),
    (["serve", "sp", "--index", "i", "--log-level", "loud"], "--log-level", ["info", "debug"]),
    (["fuse", "train", "m", "--space", "s", "--label", "l", "--modalities", "a", "--out", "o", "--kind", "sum"],
     "--kind", ["late", "concat", "gated", "attention"]),
    (["fuse", "train", "m", "--space", "s", "--label", "l", "--modalities", "a", "--out", "o", "--balance", "x"],
     "--balance", ["ogm-ge", "ogm", "agm", "none"]),
    (["fuse", "eval", "mo", "m", "--space", "s", "--missing", "some"], "--missing", ["all-subsets", "none"]),
]


@pytest.mark.parametrize("argv, option, allowed", BAD_CHOICES, ids=[" ".join(a[:2]) + " " + o for a, o, _ in BAD_CHOICES])
def test_enumerated_option_lists_its_values(argv, option, allowed):
    r = cli(*argv)
    out = flat(r.output)
    assert r.exit_code == 2 and "Traceback" not in out, out
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert f"Invalid value for '{option}'" in out and all(f"'{v}'" in out for v in allowed), out


def _commands():
    """Every leaf command of the CLI as (path, click command)."""
    import typer.main

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def test_no_option_lists_its_values_only_in_prose():
    """An option that takes one of a few words declares them (checked, shown in --help), not just its help text."""
    prose = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in _commands() for p in cmd.params
             if " | " in (getattr(p, "help", None) or "")]
    assert prose == []


def test_help_at_80_columns_cuts_nothing():
    for path, _ in _commands():
        r = cli(*path, "--help")
        assert r.exit_code == 0, (path, r.output)
        assert "…" not in r.output, (path, r.output)
    out = cli("fit", "--help").output
    assert re.search(r"--method +\[contrastive \|", out) and re.search(r"--recipe +\[auto \| plain\]", out), out


@pytest.mark.parametrize("group", ["corpus", "fuse"])
def test_group_help_has_an_example(group):
    r = cli(group, "--help")
    assert r.exit_code == 0 and "Example: anybind " + group in flat(r.output), r.output


def test_compat_table_never_cuts_encoder_names():
    from rich.console import Console

    from anybind.compat import METRICS, CompatResult

    names = ["image:efficientnet-lite0+bridge", "image:efficientnet-lite1+bridge", "text:e5-small-query"]
    rows = [{"rank": i + 1, "a": a, "b": names[2], "n": 187, **{m: 0.5 for m in METRICS}} for i, a in enumerate(names[:2])]
    buf = io.StringIO()
    Console(file=buf, width=80).print(CompatResult(rows=rows, by="mknn", split="train", k=10).table())
    out = buf.getvalue()
    assert "…" not in out, out
    column_a = "".join(line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 8)
    assert column_a == "".join(names[:2]), out


# -- README and Makefile --------------------------------------------------------------------------------------

def test_readme_fusion_snippet_shows_load_fusion_takes_the_space():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"load_fusion\(\s*\"[^\"]+\",\s*space\s*\)", readme), "no load_fusion(path, space) call"


def test_make_installs_the_extras_the_readme_uses():
    extras = re.search(r"^EXTRAS\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1).split(",")
    readme = (ROOT / "README.md").read_text()
    needs = {"lite": "efficientnet-lite1", "e5": "text:e5-small", "speech": "speech:whisper-tiny",
             "timeseries": "timeseries:fracast", "scale": "--ray", "serve": "anybind serve"}
    missing = [extra for extra, used in needs.items() if used in readme and extra not in extras]
    assert missing == []

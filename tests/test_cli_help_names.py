"""Every command's --help shows every option name whole at 80 and at 60 columns (a fresh terminal, cron, CI):
Typer's options table used to narrow the name columns with the help column and split ``--no-start-guard`` into
``--no-start-guar`` / ``d``.  The fix (anybind.cli._common) makes Typer's option-name columns ``no_wrap`` and puts
``--no-x`` under ``--x``; these tests fail loudly when a Typer release lays the table out otherwise."""

from __future__ import annotations

import re

import pytest
import typer
import typer.main
from typer import rich_utils
from typer.testing import CliRunner

from anybind.cli import app


def _every_command():
    """The root, every group and every leaf command, as (argv path, click command)."""

    def walk(cmd, path):
        yield path, cmd
        for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
            if not getattr(sub, "hidden", False):
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def _help(a, argv, width, monkeypatch):
    """``argv --help`` rendered at ``width`` columns, whatever the caller's shell sets (COLUMNS, TERMINAL_WIDTH)."""
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", width)  # TERMINAL_WIDTH, read by Typer at import
    r = CliRunner().invoke(a, [*argv, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None})
    assert r.exit_code == 0, (argv, r.output)
    assert max(len(line) for line in r.output.splitlines()) == width, r.output  # the width took
    return r.output


def _missing(cmd, out):
    return [s for p in cmd.params if p.param_type_name == "option" and not p.hidden
            for s in [*p.opts, *p.secondary_opts] if s not in out]


COMMANDS = _every_command()


@pytest.mark.parametrize("width", [80, 60])
def test_every_option_name_is_whole_in_help(width, monkeypatch):
    assert len(COMMANDS) > 20 and any(len(path) == 2 for path, _ in COMMANDS)  # groups and their commands
    cut = {" ".join(path) or "anybind": m for path, cmd in COMMANDS if (m := _missing(cmd, _help(app, path, width, monkeypatch)))}
    assert cut == {}


def test_typer_still_lays_option_names_in_columns_we_keep_whole(monkeypatch):
    """A pin on Typer's layout, independent of anybind's own option names: a long flag pair and a long help."""
    demo = typer.Typer(add_completion=False)

    @demo.command()
    def one(very_long_switch_name: bool = typer.Option(True, "--very-long-switch-name/--no-very-long-switch-name",
                                                       "-s/-S", help="A help text long enough " * 8)) -> None:
        """Demo."""

    out = _help(demo, [], 80, monkeypatch)
    assert _missing(typer.main.get_command(demo), out) == [], out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "--very-long-switch-name" in line)
    col = lines[at].index("--very-long-switch-name")
    assert lines[at + 1].index("--no-very-long-switch-name") == col, out  # --no-x under --x, not beside it
    assert getattr(rich_utils.Table, "_anybind_whole_names", False), "anybind's hook on typer.rich_utils.Table is gone"


def _broken_prose(out, width):
    """Lines of a help page (its prose and panels' text) that end far short of ``width`` while the next line goes
    on with the same sentence (a lower-case word, or an opening bracket, at the same indentation)."""
    rows = [line.rstrip().rstrip("│").rstrip() for line in out.splitlines()]
    cut = []
    for a, b in zip(rows, rows[1:]):
        text = b.lstrip("│ ")
        same_indent = len(b) - len(text) == len(a) - len(a.lstrip("│ "))
        if text.startswith("anybind ") or re.match(r"[a-z][\w-]*  ", text):  # an example; a command list's row
            continue
        if a.strip("│ ") and len(a) < width - 60 and (text[:1].islower() or text[:1] == "(") and same_indent:
            cut.append(f"{a.strip()} / {text[:40]}")
    return cut


def test_no_help_breaks_a_sentence_where_its_source_line_ended(monkeypatch):
    """Typer in rich markup mode keeps a docstring's single line breaks, so every sentence wrapped in the source
    (``serve``: "items added to" / "the index ...") broke mid-line at any width, and the command list's rows of
    ``prompts``, ``balance``, ``audit`` were ragged; anybind.cli._common.tidy_help joins them (examples and indented
    command lines keep their own lines).  Rendered wide, so that only a source break can end a line early."""
    width = 250
    cut = {" ".join(path) or "anybind": c for path, _ in COMMANDS if (c := _broken_prose(_help(app, path, width, monkeypatch), width))}
    assert cut == {}
    assert "Example:" in _help(app, ["fuse", "merge"], 80, monkeypatch).split("Example:", 1)[1]  # examples still apart


def _option_help(path: list[str], flag: str) -> str:
    cmd = next(c for p, c in COMMANDS if p == path)
    return next(p.help for p in cmd.params if flag in p.opts)


@pytest.mark.parametrize("width", [250, 80])
def test_bind_tells_its_own_bridge_anchors_not_fits(width, monkeypatch):
    """``anybind bind --bridge-anchors`` weighs the class anchors in the new projector's ridge start, which takes
    them only where its targets hold the locked text (``--replace`` alone: refused); ``anybind fit``'s text (Space.fit's
    training pairs, the recipe's bridge prior) is not bind's.  Each shown whole in its own --help, at any width."""
    fit_h, bind_h = _option_help(["fit"], "--bridge-anchors"), _option_help(["bind"], "--bridge-anchors")
    assert fit_h != bind_h
    for words in ("new projector's ridge start", "targets hold the locked text", "--anchors text", "--replace", "refused"):
        assert words in bind_h and words not in fit_h, words
    for path, text in ((["bind"], bind_h), (["fit"], fit_h)):
        flat = " ".join(_help(app, path, width, monkeypatch).replace("│", " ").split())
        assert " ".join(text.split()) in flat, (path, flat)

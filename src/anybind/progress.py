"""The library's progress bars: the one thing the library draws (messages are logged), and the one place that
builds them.  Every long library loop shows its bar through :func:`progress_bar` (one task: ``bar.advance()``),
or :func:`make_progress` where one display holds several tasks (a corpus build hands it down).

Three shapes, by what the loop counts:

* ``"count"`` -- records or files: description, bar, done/total, time elapsed; gone when done (transient);
* ``"rate"`` -- items encoded: description, bar, done/total, items per second since the start, time left;
  its last line stays;
* ``"steps"`` -- epochs or rounds of training: description, bar, ``epoch 3/20`` and the caller's note (loss,
  val score), time elapsed; its last line stays.

A bar is drawn only when the caller asks for it (``progress=True``; ``False`` is the quiet library call) and
stderr is a terminal (or a notebook): nothing at all goes to a pipe, a log file or a CI job's output, where a
bar would only leave its last frame.  Bars go to stderr, never to stdout (where the CLI writes its results)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["Bar", "SHAPES", "make_progress", "progress_bar", "shown"]

SHAPES = ("count", "rate", "steps")

_CONSOLE: list[Console] = []  # the one console every bar draws on (nested bars stack on it); made on first use


def _console() -> Console:
    if not _CONSOLE:
        from rich.console import Console

        _CONSOLE.append(Console(stderr=True))  # looks up sys.stderr on every write: redirections are followed
    return _CONSOLE[0]


def shown(enabled: bool) -> bool:
    """Whether a bar asked for (``enabled``) is drawn: only when stderr is a terminal or a notebook."""
    if not enabled:
        return False
    c = _console()
    return c.is_terminal or c.is_jupyter


def make_progress(enabled: bool, shape: str = "count", *, unit: str = "epoch",
                  transient: bool | None = None) -> Progress | None:
    """A Rich progress display of one of the :data:`SHAPES` on stderr, or ``None`` when it is not :func:`shown`.
    ``unit``: what a ``"steps"`` bar counts (epoch, round); ``transient``: remove it when done (default: the
    shape's).  Tasks of a ``"rate"`` display carry a ``rate`` field, of a ``"steps"`` one a ``msg`` field."""
    if shape not in SHAPES:
        raise ValueError(f"progress shape {shape!r}: one of {', '.join(SHAPES)}")
    if not shown(enabled):
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if shape == "count":
        cols: tuple[Any, ...] = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn())
    elif shape == "rate":
        cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} items/s"), TimeRemainingColumn())
    else:
        cols = (TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn(unit + " {task.completed}/{task.total} {task.fields[msg]}"), TimeElapsedColumn())
    # what is printed to stdout meanwhile is drawn above the bar only when stdout is a terminal too: Rich would
    # otherwise move it to the bar's console, stderr, out of a pipe or file stdout goes to
    return Progress(*cols, console=_console(), transient=shape == "count" if transient is None else transient,
                    redirect_stdout=_stdout_is_terminal())


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


class Bar:
    """One task of a display made by :func:`progress_bar`; every call does nothing when the bar is not shown."""

    def __init__(self, prog: Progress | None = None, task: Any = None, rate: bool = False) -> None:
        self._prog, self._task, self._rate = prog, task, rate
        self._done = 0
        self._t0 = time.perf_counter()

    @property
    def drawn(self) -> bool:
        return self._prog is not None

    def advance(self, n: int = 1, **fields: Any) -> None:
        """``n`` more done; ``fields``: the shape's fields (a ``"steps"`` bar's ``msg``)."""
        if self._prog is None:
            return
        self._done += n
        if self._rate:
            fields["rate"] = f"{self._done / max(time.perf_counter() - self._t0, 1e-9):.1f}"
        self._prog.update(self._task, advance=n, **fields)


@contextmanager
def progress_bar(enabled: bool, description: str, total: int | None, shape: str = "count", *,
                 unit: str = "epoch", transient: bool | None = None) -> Iterator[Bar]:
    """A bar of ``total`` steps (see :func:`make_progress` for the shapes and when it is drawn), shown for the
    ``with`` block and stopped after it, however the block ends::

        with progress_bar(progress, "writing shards", len(records)) as bar:
            for chunk in chunks:
                ...
                bar.advance(len(chunk))
    """
    prog = make_progress(enabled, shape, unit=unit, transient=transient)
    if prog is None:
        yield Bar()
        return
    with prog:
        yield Bar(prog, prog.add_task(description, total=total, msg="", rate="-"), rate=shape == "rate")

"""The benchmark harness: ``anybind bench --task NAME --json results.json``.

A task is a function registered with :func:`task`; it returns a
:class:`TaskResult` whose ``metrics`` and ``baselines`` were computed in the
same run (these machines are noisy: compare side by side, as ratios).  The
harness times it and writes, per task::

    {"task", "metrics": {flat keys}, "baselines": {"name": {flat keys}}, "seconds", "config"}
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass
class TaskResult:
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: optional rows for a compact table (one dict per system/config: {"name": ..., metric: value});
    #: printed instead of the generic metric-per-row table, and written to the JSON as "table"
    table: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Task:
    name: str
    fn: Callable[..., TaskResult]
    description: str


TASKS: dict[str, Task] = {}


def task(name: str, description: str) -> Callable[[Callable[..., TaskResult]], Callable[..., TaskResult]]:
    """Register a benchmark task ``fn(work: Path, cache, seed, console) -> TaskResult``."""

    def deco(fn):
        TASKS[name] = Task(name, fn, description)
        return fn

    return deco


def rows_table(name: str, rows: list[dict[str, Any]]) -> Table:
    cols = [k for k in rows[0] if k != "name"]
    t = Table(title=f"bench: {name}")
    t.add_column("system")
    for c in cols:
        t.add_column(c.replace("/", "\n"), justify="right")
    for r in rows:
        t.add_row(escape(str(r["name"])), *[("-" if r.get(c) is None else f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])) for c in cols])
    return t


def result_table(name: str, res: TaskResult) -> Table:
    if res.table:
        return rows_table(name, res.table)
    systems = {"anybind": res.metrics, **res.baselines}
    keys = sorted({k for r in systems.values() for k in r if not k.endswith("/n")})
    t = Table(title=f"bench: {name}")
    t.add_column("metric")
    for s in systems:
        t.add_column(escape(s), justify="right")
    for k in keys:
        row = [escape(k)]
        for r in systems.values():
            v = r.get(k)
            row.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        t.add_row(*row)
    return t


def machine_info() -> dict[str, Any]:
    import os

    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def load_tasks() -> dict[str, Task]:
    """Import every ``anybind.bench.tasks*`` module (each registers its tasks with :func:`task`)."""
    import importlib
    import pkgutil

    from .. import bench

    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.startswith("tasks"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return TASKS


def run_tasks(
    names: list[str],
    *,
    json_out: Path | None = None,
    work: Path = Path("runs/bench"),
    cache: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
    options: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run tasks by name; ``options`` (``--opt KEY=VALUE``) go to the tasks whose function takes that keyword."""
    import inspect

    load_tasks()
    console = console or Console()
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        from ..errors import AnybindError

        raise AnybindError(f"unknown bench task(s) {unknown}; known: {', '.join(sorted(TASKS))}")
    taken = [set(inspect.signature(TASKS[n].fn).parameters) - {"work", "cache", "seed", "console"} for n in names]
    stray = sorted(set(options or {}) - set().union(*taken))
    if stray:  # a misspelt --opt would otherwise run the task on its defaults, silently
        from ..errors import AnybindError

        raise AnybindError(f"--opt {', '.join(stray)}: taken by none of the tasks {', '.join(names)} "
                           f"(they take: {', '.join(sorted(set().union(*taken))) or 'no options'})")
    out = []
    for name in names:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        params = inspect.signature(TASKS[name].fn).parameters
        opts = {k: v for k, v in (options or {}).items() if k in params}
        res = TASKS[name].fn(work=Path(work), cache=cache, seed=seed, console=console, **opts)
        secs = time.perf_counter() - t0
        console.print(result_table(name, res))
        for n in res.notes:
            console.print(f"  note: {n}", highlight=False, markup=False)  # '[image=...]' is a row name, not markup
        console.print(f"  {secs:.1f} s")
        out.append(
            {
                "task": name,
                "metrics": res.metrics,
                "baselines": res.baselines,
                "seconds": round(secs, 2),
                "config": {**res.config, "seed": seed, "options": opts, "machine": machine_info()},
                "notes": res.notes,
                **({"table": res.table} if res.table else {}),
            }
        )
        if json_out:  # after every task: a killed run keeps what finished
            from ..io import atomic_write_bytes

            atomic_write_bytes(Path(json_out), json.dumps(out, indent=2, sort_keys=True).encode())
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def task_markdown(rec: dict[str, Any], command: str) -> str:
    """One task's section of BENCHMARKS.md."""
    m = rec["config"].get("machine", {})
    lines = [
        f"## {rec['task']}",
        "",
        f"`{command}` -- {time.strftime('%Y-%m-%d')}, {m.get('cpus')} CPUs, torch {m.get('torch')} "
        f"({m.get('torch_threads')} threads), Python {m.get('python')}; {rec['seconds']:.0f} s",
        "",
    ]
    if rec.get("table"):
        cols = [k for k in rec["table"][0] if k != "name"]
        lines += ["| system | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + r["name"] + " | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rec["table"]]
    else:
        systems = {"anybind": rec["metrics"], **rec["baselines"]}
        keys = sorted({k for r in systems.values() for k in r if not k.endswith("/n")})
        lines += ["| metric | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
        lines += ["| " + k + " | " + " | ".join(_fmt(r.get(k)) for r in systems.values()) + " |" for k in keys]
    for n in rec.get("notes", []):
        lines += ["", f"- {n}"]
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, records: list[dict[str, Any]], command: str) -> None:
    """Replace (or append) each task's section in a BENCHMARKS.md, keeping the other tasks' sections."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n\nRegenerated by `anybind bench --markdown`.\n"
    head, *sections = text.split("\n## ")
    by_name = {s.split("\n", 1)[0].strip(): "## " + s for s in sections}
    for rec in records:
        by_name[rec["task"]] = task_markdown(rec, command)
    body = "\n".join(by_name[k].rstrip() + "\n" for k in sorted(by_name))
    from ..io import atomic_write_bytes

    atomic_write_bytes(path, (head.rstrip() + "\n\n" + body).encode())

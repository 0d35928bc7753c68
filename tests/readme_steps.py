"""The README's runnable steps, in order: every ```sh line and every ```python block (tests/test_readme.py).

A block right after a line ``<!-- readme-test: skip (REASON) -->`` is documented but not run; single shell lines
that are not run are listed, with their reasons, in tests/test_readme.py.  Shell lines are ``anybind`` commands
(joined with ``&&`` at most, an optional ``NAME=value`` environment prefix, ``#`` comments, ``\\`` continuations).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+)\)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Step:
    """One shell line (``argvs``: each ``&&``-joined command, ``env``: its NAME=value prefix) or Python block."""

    kind: str  # "sh" or "python"
    line: int  # 1-based line in README.md where it starts
    text: str  # as written (continuations joined for shell lines)
    argvs: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None  # the block's skip reason, if marked


def _shell_step(text: str, line: int, skipped: str | None) -> Step:
    tokens = shlex.split(text, comments=True)
    env: dict[str, str] = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        env[name] = value
    argvs: list[list[str]] = [[]]
    for t in tokens:
        if t == "&&":
            argvs.append([])
        elif t in ("|", "||", ";", ">", "<", ">>", "&"):
            raise ValueError(f"README.md:{line}: shell syntax {t!r} in `{text}`: the test runs anybind commands only")
        else:
            argvs[-1].append(t)
    return Step("sh", line, text, [a for a in argvs if a], env, skipped)


def readme_steps(path: Path = README) -> list[Step]:
    """Every runnable step of the README, in order (skipped blocks included, with ``skipped`` set)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    steps: list[Step] = []
    i, pending_skip = 0, None
    while i < len(lines):
        m = SKIP_MARK.search(lines[i])
        if m:
            pending_skip = m.group(1)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            if lines[i].strip():
                pending_skip = None  # a mark applies to the block right after it
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang in ("sh", "bash"):
            cont, first = "", 0
            for no, text in body:
                if not cont:
                    first = no
                if text.rstrip().endswith("\\"):
                    cont += text.rstrip()[:-1] + " "
                    continue
                full = (cont + text).strip()
                cont = ""
                if full and not full.startswith("#"):
                    steps.append(_shell_step(full, first, pending_skip))
        elif lang == "python":
            steps.append(Step("python", start + 1, "\n".join(t for _, t in body), skipped=pending_skip))
        pending_skip = None
    return steps

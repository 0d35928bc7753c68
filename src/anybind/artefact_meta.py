"""The JSON header of a saved artefact folder (a zero-shot classifier, a captioner, a fusion model, a space's
vocabulary): read once, checked once.

Each artefact folder holds a JSON file (``format``, ``format_version`` and its own keys), usually beside a
safetensors file (an index has none: its rows are a LanceDB table); :func:`read_meta` makes sure both are there, that the JSON is an object of the expected format and that this
anybind reads its version, and otherwise raises the caller's error class in one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_meta(folder: Path, meta_name: str, weights_name: str | None, *, fmt: str, version: int, what: str,
              error: type[Exception], unversioned: int | None = None, fix: str = "") -> dict[str, Any]:
    """``folder / meta_name`` parsed, for an artefact called ``what`` (e.g. "zero-shot classifier") of format
    ``fmt`` up to ``version``; ``error`` (one line naming the folder or file) when the folder lacks either file
    (``weights_name`` ``None``: the artefact has no weights file),
    the JSON is unreadable, corrupt or not an object of that format, or its version is not an integer (``true`` is
    not one) or is newer than ``version``.

    ``unversioned``: the version a header without ``format_version`` is read as (an artefact whose first format
    had none; the key stays absent), ``None`` to refuse it.  ``fix``: what the user can do, added to every
    message (``"...; <fix>"``)."""
    tail = f"; {fix}" if fix else ""
    meta_p = folder / meta_name
    if not meta_p.is_file() or (weights_name is not None and not (folder / weights_name).is_file()):
        needs = meta_name if weights_name is None else f"{meta_name} and {weights_name}"
        raise error(f"{folder}: not a saved {what} (needs {needs}){tail}")
    try:
        meta = json.loads(meta_p.read_bytes().decode("utf-8"))
    except OSError as e:
        raise error(f"{meta_p}: unreadable ({type(e).__name__}: {e.strerror or e}){tail}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{meta_p}: corrupt JSON ({' '.join(str(e).split()) or type(e).__name__}){tail}") from None
    return check_header(meta, meta_p, fmt=fmt, version=version, what=what, error=error, unversioned=unversioned,
                        fix=fix)


def check_header(meta: Any, meta_p: Path, *, fmt: str, version: int, what: str, error: type[Exception],
                 unversioned: int | None = None, fix: str = "") -> dict[str, Any]:
    """``meta`` (``meta_p`` parsed, by :func:`read_meta` or by a caller that re-reads a header another process
    may have rewritten) checked as :func:`read_meta` checks it: an object of format ``fmt`` whose
    ``format_version`` is an integer up to ``version``; ``error`` in one line naming ``meta_p`` otherwise."""
    tail = f"; {fix}" if fix else ""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_p}: not an anybind {what}{tail}")
    v = meta.get("format_version", unversioned)
    if type(v) is not int:  # bool is an int subclass: `true` is not a version
        raise error(f"{meta_p}: format_version is {meta.get('format_version')!r}, expected an integer{tail}")
    if v > version:
        raise error(f"{meta_p}: saved by a newer anybind (format {v}; this anybind reads up to {version}); "
                    f"upgrade anybind{tail}")
    return meta

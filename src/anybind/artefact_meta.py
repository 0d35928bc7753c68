"""The JSON header of a saved artefact folder (a zero-shot classifier, a captioner): read once, checked once.

Each artefact folder holds a JSON file (``format``, ``format_version`` and its own keys) beside a safetensors file;
:func:`read_meta` makes sure both are there, that the JSON is an object of the expected format and that this
anybind reads its version, and otherwise raises the caller's error class in one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_meta(folder: Path, meta_name: str, weights_name: str, *, fmt: str, version: int, what: str,
              error: type[Exception]) -> dict[str, Any]:
    """``folder / meta_name`` parsed, for an artefact called ``what`` (e.g. "zero-shot classifier") of format
    ``fmt`` up to ``version``; ``error`` (one line naming the folder or file) when the folder lacks either file,
    the JSON is corrupt or not an object of that format, or its version is newer than ``version``."""
    meta_p, w_p = folder / meta_name, folder / weights_name
    if not meta_p.is_file() or not w_p.is_file():
        raise error(f"{folder}: not a saved {what} (needs {meta_name} and {weights_name})")
    try:
        meta = json.loads(meta_p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{meta_p}: corrupt JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_p}: not an anybind {what}")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > version:
        raise error(f"{meta_p}: format_version {meta.get('format_version')!r}; this anybind reads up to "
                    f"{version} (upgrade anybind)")
    return meta

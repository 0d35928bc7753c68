"""The English word list the corpus rules read (Debian ``wamerican``, ``/usr/share/dict/words``): loading it, and
installing it when the default file is missing (openclipart's ``not_english`` title rule, icons' name rule)."""

from __future__ import annotations

import os
from pathlib import Path

from .debian import ensure_debian_package

WORDS_PACKAGE = "wamerican"
DEFAULT_WORDS = "/usr/share/dict/words"


def load_words(path: str | os.PathLike[str] = DEFAULT_WORDS, lower_only: bool = False) -> frozenset[str] | None:
    """The entries of a word list (one a line; ``dog's`` adds ``dog``), or None when the file is missing.

    Casefolded by default; with ``lower_only`` only the entries written in lower case, as written (``gnome``,
    ``pocket``; not ``Firefox``, ``Linux``, ``PDF``: proper nouns and acronyms are not read as words)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    words = {w.strip() for w in text.splitlines()}
    words = {w for w in words if w == w.lower()} if lower_only else {w.casefold() for w in words}
    words.discard("")
    words |= {w[:-2] for w in words if w.endswith("'s")}
    return frozenset(words)


def ensure_words(path: str | os.PathLike[str]) -> Path:
    """``path``, after installing :data:`WORDS_PACKAGE` when it is the default list and missing
    (:func:`~anybind.corpora.debian.ensure_debian_package`: a :class:`~anybind.errors.DataError` naming the
    command when it cannot); any other path is returned as it is."""
    wp = Path(path)
    if not wp.is_file() and wp.absolute() == Path(DEFAULT_WORDS):
        ensure_debian_package(WORDS_PACKAGE, DEFAULT_WORDS)
    return wp


def missing_words_message(path: str | os.PathLike[str]) -> str:
    """The one line that names a missing word list and the command that installs the default one."""
    return f"{path} is missing (`sudo apt-get install -y {WORDS_PACKAGE}`)"

"""The two string rules every layer shares: when a text counts as empty, and what a record id may be.

* :func:`is_blank` -- a text is empty when nothing is left after removing whitespace
  and invisible format characters (Unicode category ``Cf``: zero-width space U+200B,
  zero-width (non-)joiner U+200C/U+200D, word joiner U+2060, byte-order mark U+FEFF,
  ...).  Such a text embeds as noise, so it is refused like ``""``.
* :func:`id_problem` -- a record id must be reachable through its own URL
  ``/items/<id>`` (percent-encoded).  Percent-encoding carries any character, so only
  what cannot make the round trip is refused: an empty id, leading or trailing
  whitespace (trimmed by shells, forms and copy-paste), control characters
  (``\\n``, ``\\r``, ``\\t``, NUL, ...: the router does not match a ``\\n``), lone
  surrogates (not encodable as UTF-8), and ``.`` / ``..`` path segments (browsers and
  HTTP clients collapse them, even percent-encoded, so the URL names another item).
  ``/``, ``?``, ``#``, ``%``, spaces inside, and any other Unicode are fine.
"""

from __future__ import annotations

import re
import unicodedata

#: appended to every refusal of an id
ID_RULE = "an id must be reachable by its URL /items/<id>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


#: letters that render as nothing (Hangul fillers, the blank Braille pattern)
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing visible: only whitespace, invisible format characters (Cf: zero-width
    spaces, tag characters...), combining marks with nothing to combine with, and blank-rendering letters."""
    first = text[:1]
    if first.isalnum() and first not in _BLANK_LETTERS:  # the common case, without a per-character scan
        return False
    return all(ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in ("Cf", "Mn", "Me")
               for ch in text)


def id_problem(rid: str) -> str | None:
    """Why ``rid`` cannot be a record id (its URL would not lead back to it), or ``None`` when it can."""
    if is_blank(rid):
        return "empty id"
    m = _CONTROL.search(rid)
    if m is not None:
        what = "a lone surrogate" if "\ud800" <= m.group() <= "\udfff" else "a control character"
        return f"{what} {m.group()!r} at position {m.start()}"
    if rid != rid.strip():
        return "leading or trailing whitespace"
    if any(seg in (".", "..") for seg in rid.split("/")):
        return "a '.' or '..' path segment (URLs collapse it)"
    return None

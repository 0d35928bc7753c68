"""How an encoder spec is spelt: one spelling per ensemble (split out of :mod:`anybind.encoders.concat`, which
re-exports it, so that the registry and the encoder base can use it without importing the ensemble's module).

:func:`canonical_spec` writes every bare-modality part of a ``concat(...)`` group as its default spec
(``text:concat(text,text:e5-small)`` -> ``text:concat(text:minilm,text:e5-small)``); :func:`bare_spelt` gives back
an identity as it was recorded before that rule (what an older saved space holds).
"""

from __future__ import annotations

import re

from .defaults import DEFAULTS, default_spec


#: a part that is a bare modality name (``text``, ``image+bridge``): the modality's default encoder
_BARE_PART = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)((?:\+bridge)(?:\(.*\))?)?")


def canonical_part(part: str) -> str:
    """One ensemble part in its canonical spelling: a bare modality (``text``, ``image+bridge``) written as that
    modality's default spec (``text:minilm``, ``image:efficientnet-lite0+bridge``), as :func:`get_encoder
    <anybind.encoders.registry.get_encoder>` resolves it (:data:`~anybind.encoders.defaults.DEFAULTS`); any other part as given."""
    m = _BARE_PART.fullmatch(part)
    if m is None or m.group(1).split("_", 1)[0] not in DEFAULTS:
        return part
    return default_spec(m.group(1)) + (m.group(2) or "")


def _pieces(inner: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` of each top-level comma-separated piece of ``inner`` (as :func:`split_specs` splits)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append((start, i))
            start = i + 1
    out.append((start, len(inner)))
    return out


def _closing(spec: str, open_at: int) -> int | None:
    """The index of the ``)`` that closes the ``(`` at ``open_at``, or None (unbalanced)."""
    depth = 0
    for i in range(open_at, len(spec)):
        depth += (spec[i] == "(") - (spec[i] == ")")
        if depth == 0:
            return i
    return None


def canonical_spec(spec: str) -> str:
    """``spec`` with every bare-modality part of its ``concat(...)`` groups, at any depth, in its canonical spelling
    (:func:`canonical_part`): ``text:concat(text,text:e5-small)`` -> ``text:concat(text:minilm,text:e5-small)``, one
    ensemble with one spelling (its identity, cached features and saved spaces).  Nothing else is rewritten: a spec
    the grammar refuses (unbalanced, spaces) is returned as given, for the encoder to name its mistake."""
    start = spec.find("concat(")
    if start < 0:
        return spec
    open_at = start + len("concat")
    close = _closing(spec, open_at)
    inner = spec[open_at + 1 : close]
    if close is None or any(c.isspace() for c in inner):
        return spec
    parts = []
    for a, b in _pieces(inner):
        piece = canonical_spec(inner[a:b])  # a nested ensemble (or a bridge into one) too
        parts.append(piece if "=" in piece.split(":", 1)[0] else canonical_part(piece))  # an option continues a part
    return spec[: open_at + 1] + ",".join(parts) + ")" + canonical_spec(spec[close + 1 :])


_GROUP = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:concat\(")


def bare_spelt(identity: str, spec: str) -> str:
    """``identity`` as it was recorded before :func:`canonical_spec` (what a space saved then holds): each ensemble of
    ``spec`` typed with a bare part headed its identity as typed (``text:concat(text,text:e5-small)|parts=...``),
    also inside another encoder's (a label bridge into it, an ensemble holding it)."""
    for m in _GROUP.finditer(spec):
        close = _closing(spec, m.end() - 1)
        typed = spec[m.start() : (close or 0) + 1]
        if close is not None and (canon := canonical_spec(typed)) != typed:
            identity = identity.replace(f"{canon}|parts=", f"{typed}|parts=")
    return identity

"""Errors anybind raises on purpose; each message names the record or file and what is wrong."""

from __future__ import annotations


_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x7F: "\\x7f"}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}  # line breaks to str.splitlines


class AnybindError(Exception):
    """Base class: anything anybind reports to the user as a clear message.

    The message is always one line: a value quoted from a record or a file that holds a line break or
    another control character is shown escaped (``\\n``), so that one problem is one line to grep.
    """

    def __str__(self) -> str:
        return super().__str__().translate(_ESCAPES)


class DataError(AnybindError, ValueError):
    """A record, file or manifest is unusable (named in the message)."""


class RenderTimeout(DataError):
    """A file whose rendering ran past its time budget (an SVG over ``max_svg_seconds``): not rendered, but not
    known to be corrupt -- it may render with a larger budget or on a less busy machine."""


#: the words :func:`unusable_file` recognises a :class:`RenderTimeout`'s message by, where only its text travels
#: (a feature cache's per-item reasons are strings)
RENDER_TIMEOUT_MARK = "to render (the time budget"


def unusable_file(modality: str, why: "str | BaseException") -> str:
    """The one-line reason a record is skipped for its ``modality`` file: ``render timed out for <modality>: ...``
    for a :class:`RenderTimeout` (the file and the budget are in its message), ``corrupt file for <modality>: ...``
    for anything else that cannot be decoded."""
    timed_out = isinstance(why, RenderTimeout) or RENDER_TIMEOUT_MARK in str(why)
    return f"{'render timed out' if timed_out else 'corrupt file'} for {modality}: {why}"


class EncoderError(AnybindError, RuntimeError):
    """An encoder cannot be built, or returned something unusable."""


class SpaceError(AnybindError, RuntimeError):
    """A saved space is inconsistent with what it is used with."""


class OutputError(AnybindError, ValueError):
    """An output path that writing there could lose data at (a file, a foreign folder, an artefact without overwrite)."""


class CaptionError(AnybindError, RuntimeError):
    """A captioner or its language model cannot be built, loaded or used (named in the message)."""


class FederationError(AnybindError, RuntimeError):
    """A federation step that would break its protocol (a message carrying what it may not, named in the message)."""

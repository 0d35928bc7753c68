"""Errors anybind raises on purpose; each message names the record or file and what is wrong."""

from __future__ import annotations


class AnybindError(Exception):
    """Base class: anything anybind reports to the user as a clear message."""


class DataError(AnybindError, ValueError):
    """A record, file or manifest is unusable (named in the message)."""


class EncoderError(AnybindError, RuntimeError):
    """An encoder cannot be built, or returned something unusable."""


class SpaceError(AnybindError, RuntimeError):
    """A saved space is inconsistent with what it is used with."""


class OutputError(AnybindError, ValueError):
    """An output path that writing there could lose data at (a file, a foreign folder, an artefact without overwrite)."""

"""The index's errors: :class:`QueryError` (an unusable query) and :class:`IndexError_`
(a missing, damaged or misused index folder)."""

from __future__ import annotations

from ..errors import AnybindError, DataError


class QueryError(DataError):
    """A search query is unusable (empty text, unreadable file, unknown modality, bad k...)."""


class IndexError_(AnybindError, RuntimeError):
    """An index folder is missing, damaged, or inconsistent with how it is used."""

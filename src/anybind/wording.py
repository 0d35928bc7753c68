"""Counts in the messages the library logs and the CLI prints: ``counted(1, "epoch")`` reads "1 epoch",
``counted(2, "epoch")`` "2 epochs" (never "1 epochs")."""

from __future__ import annotations


def counted(n: int | float, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, singular for exactly one, else ``plural`` (default: ``noun`` + "s"); ``noun`` may lead
    with a qualifier ("val pair": "1 val pair", "3 val pairs")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"

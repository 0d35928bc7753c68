"""The library's transient progress display: one shared shape for the bars of long library loops (building a
corpus, writing training shards).  Progress bars are the one thing the library draws; messages are logged."""

from __future__ import annotations

__all__ = ["make_progress"]


def make_progress(enabled: bool):
    """A transient Rich progress display (or None when ``enabled`` is false)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )

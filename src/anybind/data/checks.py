"""Remembered media checks: a file that decoded once is not decoded again until it changes.

:func:`anybind.data.manifest.load_manifest` decodes every image, sound and time series
(``check_media=True``) so that a corrupt file is reported, with its record, before any
encoding starts.  That costs the same on every command: 32 s for the 949 Tux Paint
records on a 2-core machine, an hour for 100k files.  Each successful check is recorded
here under (absolute path, check kind) with the file's size and modification time (ns)
and :data:`CHECK_VERSION`; a later load whose file still has that size and time only
``stat()``\\ s it.  A failed check is never recorded (it is reported again every time), and
a changed, replaced or touched file is decoded again.  A file rewritten in place with the same
size and mtime is not noticed here; when encoding then fails to decode it, :func:`forget`
drops its checks (the feature cache does), so the next ``validate`` reports it.

Stored in one SQLite file (Python's own ``sqlite3``: safe with several processes writing)
beside the feature cache: ``$ANYBIND_MEDIA_CHECKS``, else ``<feature cache>/media-checks.sqlite``;
``ANYBIND_MEDIA_CHECKS=off`` (or ``load_manifest(check_cache=False)``, ``anybind validate
--recheck``) decodes everything.  If the file cannot be opened or written, checks simply are
not remembered (with one logged warning naming the file).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_VERSION = 2  # bump when what a check verifies changes: every file is then checked again
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ok (path TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (path, kind))"
)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def default_checks_path() -> Path | None:
    """Where checks are remembered; ``None`` when ``ANYBIND_MEDIA_CHECKS=off``."""
    env = os.environ.get("ANYBIND_MEDIA_CHECKS")
    if env:
        return None if env.strip().lower() in ("off", "0", "no", "false") else Path(env).expanduser()
    from ..io import default_cache_dir

    return default_cache_dir() / "media-checks.sqlite"


class MediaChecks:
    """The remembered checks of one ``load_manifest`` call: read once, written once at the end."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._known: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._new: list[tuple[str, str, int, int, int]] = []
        if self.path is not None:
            try:
                db = self._connect()
                try:
                    self._known = {(p, k): (s, t, v) for p, k, s, t, v in db.execute("SELECT * FROM ok")}
                finally:
                    db.close()
            except (sqlite3.Error, OSError) as e:
                self._disable(e)

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)
        db.execute(_SCHEMA)
        return db

    def _disable(self, e: Exception) -> None:
        log.warning("%s: media checks are not remembered (%s)", self.path, _one_line(e))
        self.path = None

    def known(self, path: Path, kind: str, st: os.stat_result) -> bool:
        """Whether ``path`` passed a ``kind`` check as it is now (same size and mtime)."""
        return self._known.get((str(path.absolute()), kind)) == (st.st_size, st.st_mtime_ns, CHECK_VERSION)

    def remember(self, path: Path, kind: str, st: os.stat_result) -> None:
        if self.path is not None:
            self._new.append((str(path.absolute()), kind, st.st_size, st.st_mtime_ns, CHECK_VERSION))

    def flush(self) -> None:
        """Write the checks passed since the last flush, in one transaction."""
        if self.path is None or not self._new:
            self._new.clear()
            return
        try:
            db = self._connect()
            try:
                with db:  # one transaction, committed on success
                    db.executemany("INSERT OR REPLACE INTO ok VALUES (?, ?, ?, ?, ?)", self._new)
            finally:
                db.close()
        except (sqlite3.Error, OSError) as e:
            self._disable(e)
        self._new.clear()


def forget(paths: "list[Path]", path: str | Path | None = None) -> None:
    """Drop every remembered check of these files (``path``: the checks file, default the usual one)."""
    db_path = Path(path) if path is not None else default_checks_path()
    if db_path is None or not db_path.exists() or not paths:
        return
    try:
        names = sorted({str(p.absolute()) for p in paths} | {str(p.resolve()) for p in paths})
        db = sqlite3.connect(db_path, timeout=60)
        try:
            with db:
                db.execute(_SCHEMA)
                db.executemany("DELETE FROM ok WHERE path = ?", [(n,) for n in names])
        finally:
            db.close()
    except (sqlite3.Error, OSError) as e:
        log.warning("%s: media checks could not be updated (%s)", db_path, _one_line(e))

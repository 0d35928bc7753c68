"""The writer lock of an index folder: writers (create, add, delete, optimize, ANN build, repair)
serialise on it across processes, so that two ``anybind index`` runs on one index never both
insert the same row.  Readers never take it.

It is an exclusive ``flock`` on ``.anybind-write.lock`` inside the index folder: the kernel
releases it when the holding process exits or dies, so a killed writer never leaves a stale
lock.  The folder may be removed or replaced while a writer waits; the lock is then retaken on
the file now at the path.  The lock is reentrant within a thread; another thread of the same
process waits like another process would."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import IndexError_

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_FILE = ".anybind-write.lock"

_held = threading.local()


class WriterLock:
    """A held writer lock (from :func:`writer_lock`)."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = folder
        self.fd = fd

    def reattach(self) -> None:
        """After the holder itself removed or replaced the folder: take the lock on the new folder's
        lock file (waiting for a writer who took it meanwhile) and let go of the old one."""
        old, self.fd = self.fd, _acquire(self.folder, create=True)
        if old is not None:
            os.close(old)


def _key(folder: Path) -> str:
    """One spelling per folder (symlinks, ``..``, relative paths), so that reentrancy never misses."""
    return os.path.realpath(folder)


def _is_current(fd: int, lock_path: Path) -> bool:
    try:
        st = os.stat(lock_path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (fs.st_ino, fs.st_dev)


def _acquire(folder: Path, create: bool) -> int | None:
    if fcntl is None:  # pragma: no cover
        log.warning("%s: no flock on this platform: concurrent writers are not serialised", folder)
        return None
    lock_path = folder / LOCK_FILE
    while True:
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise IndexError_(f"{folder}: exists and is not a folder, cannot hold an index") from None
            except OSError as e:
                raise IndexError_(f"{folder}: cannot create the index folder ({e.strerror or e})") from None
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if create:
                continue  # removed between mkdir and open: make it again
            raise IndexError_(f"{folder}: no index folder there (removed while writing to it?)") from None
        except PermissionError:  # someone else's lock file: flock works on a read-only descriptor too
            try:
                fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise IndexError_(f"{lock_path}: cannot open the writer lock ({e.strerror or e})") from None
        except OSError as e:
            raise IndexError_(f"{lock_path}: cannot open the writer lock ({e.strerror or e})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: waiting for another process writing to this index", folder)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, lock_path):
            return fd
        os.close(fd)  # the folder was removed or replaced while we waited: lock the one there now


@contextmanager
def writer_lock(folder: str | Path, *, create: bool = False) -> Iterator[WriterLock]:
    """Hold the writer lock of the index folder ``folder`` (waiting for other writers to finish).

    create: make the folder if it does not exist (for creating an index); otherwise a missing
        folder is an :class:`~anybind.index.IndexError_`.
    """
    folder = Path(folder)
    key = _key(folder)
    held: dict[str, WriterLock] = _held.__dict__.setdefault("locks", {})
    if key in held:  # reentrant: this thread holds it already
        yield held[key]
        return
    lock = WriterLock(folder, _acquire(folder, create))
    held[key] = lock
    try:
        yield lock
    finally:
        del held[key]
        if lock.fd is not None:
            os.close(lock.fd)  # closing the last descriptor releases the flock


def relock(folder: str | Path) -> None:
    """If this thread holds ``folder``'s lock but the folder was removed or replaced (by this thread,
    e.g. an overwrite), take the lock of the lock file there now."""
    folder = Path(folder)
    lock = _held.__dict__.get("locks", {}).get(_key(folder))
    if lock is not None and lock.fd is not None and not _is_current(lock.fd, folder / LOCK_FILE):
        lock.reattach()


def discard_parts(folder: Path, made_dir: bool, parts: Sequence[str]) -> None:
    """Remove ``parts`` of an index folder (give ``index.json`` first, so that it stops being an index
    first), its lock file, and the folder itself if ``made_dir`` and nothing else is left in it.
    Call it holding the lock: waiting writers then retake it on a fresh lock file."""
    for part in (*parts, LOCK_FILE):
        p = folder / part
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    if made_dir:
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: leave it
            pass

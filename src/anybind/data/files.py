"""Opening an input file safely: only regular files are read.

Every place that reads an item's bytes (the feature cache's content hash, the media
decoders, query files) goes through :func:`open_regular`.  A missing path, a folder, a
FIFO, a device or a socket is refused with a one-line :class:`~anybind.errors.DataError`
*before* it is opened (``os.stat``), so a FIFO can never block the reader; the opened
descriptor is checked again (``fstat``) in case the path was swapped in between.

Work that keys the same files twice in a row (a check on the scored items, then their encoding through the
feature cache) does it inside :func:`file_keys_remembered`: each unchanged file is read once for its key.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

from ..errors import DataError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _why_not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a regular file"
    kind = next((name for test, name in _KINDS if test(mode)), "special")
    return f"not a regular file ({kind})"


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file (``None`` when it is a regular file); never opens it."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "file does not exist"
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        return f"cannot read ({getattr(e, 'strerror', None) or e})"
    return _why_not_regular(st.st_mode)


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for binary reading; :class:`DataError` naming it for anything else."""
    why = file_problem(path)
    if why:
        raise DataError(f"{path}: {why}")
    # O_NONBLOCK: if the path became a FIFO after the stat, opening it must not wait for a writer
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        why = _why_not_regular(os.fstat(fd).st_mode)
        if why:
            raise DataError(f"{path}: {why}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as f:
        try:
            return f.read()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def absolute_as_given(path: str | Path) -> str:
    """``path`` (``~`` expanded) made absolute without resolving links: under this process' folder as the shell
    names it (``$PWD`` when that is this folder, as ``pwd`` shows it; the kernel's resolved name otherwise), so a
    folder reached through a link keeps the link's name (what other machines mounting the same storage share).
    ``.`` and repeated slashes go, ``..`` stays: after a link it is the link target's parent, the folder the kernel
    opens here (a lexical ``os.path.normpath`` would name the link's own parent, another folder)."""
    p = os.path.expanduser(str(path))
    if os.path.isabs(p):
        return str(Path(p))
    here, pwd = os.getcwd(), os.environ.get("PWD", "")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, here):
            here = pwd
    except OSError:
        pass
    return str(Path(here, p))


#: a URI's start: its scheme (RFC 3986: a letter, then letters, digits, ``+``, ``-`` or ``.``; two characters at
#: least: a single letter is a Windows drive, ``C://runs``, as pyarrow's filesystems read it) and ``://``
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")


def is_uri(where: str | Path) -> bool:
    """Whether ``where`` is a URI (a ``str`` starting with a scheme of two characters or more and ``://``), not a
    local path (``C://runs``: the drive ``C:``)."""
    return isinstance(where, str) and _SCHEME.match(where) is not None


def location_as_given(where: str | Path) -> str:
    """A storage location handed to other processes or machines (Ray Train's ``storage_path``): a URI, anything
    that starts with a scheme and ``://`` (``s3://bucket/runs``, ``gs://...``, ``file:///srv/runs``), as typed --
    its meaning does not depend on this process' folder, and ``Path`` would fold its ``//`` --, a local path
    :func:`absolute_as_given`."""
    return str(where) if is_uri(where) else absolute_as_given(where)


#: within :func:`file_keys_remembered`: each file's key by the file's path and ``os.stat`` signature
_KEYS: ContextVar[dict[tuple, str] | None] = ContextVar("anybind_file_keys", default=None)


@contextmanager
def file_keys_remembered() -> Iterator[None]:
    """Within (this thread, and the contexts copied from it): a file's content key
    (:func:`~anybind.encoders.base.content_key`) is made once while the file is unchanged -- the same path, device,
    inode, size, modification and change times -- and answered from memory after; for work that keys the same files
    twice in a row (an overlap check on the scored files, then their encoding).  A scope inside another shares its
    memory.  Only for a scope that short: a file rewritten in place to the same size within the file system's clock
    tick keeps its times."""
    if _KEYS.get() is not None:
        yield
        return
    token = _KEYS.set({})
    try:
        yield
    finally:
        _KEYS.reset(token)


def remembered_key(path: str | Path, make: Callable[[str | Path], str]) -> str:
    """``make(path)``, the file's key; inside :func:`file_keys_remembered`, made once per unchanged file."""
    memo = _KEYS.get()
    if memo is None:
        return make(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # make() says what is wrong with it
        return make(path)
    sig = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if sig not in memo:
        memo[sig] = make(path)
    return memo[sig]

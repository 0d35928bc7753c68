"""Opening the stored file of an indexed item for ``/items`` and ``/thumbs``, checked at serve time.

The index records each file item's path (resolved when it was indexed) and its content key
(``"f:" + sha256`` of the bytes, see :meth:`anybind.encoders.base.Encoder.content_key`).  What
is at that path now may differ: the file may have been edited, or swapped for a link to
``/etc/passwd``.  :meth:`ItemFiles.open` serves the file only when

* **it is inside the indexed folders**: the real path of the file actually opened (every link
  resolved, read back from the open descriptor) lies directly in one of the folders that hold
  the index's file items (the *indexed folders*: the directories of the stored paths of every
  file row);  else **404**;
* **its content is what was indexed**: its size equals the size stored when it was indexed
  (compared first: a file of another size, however large, is refused without reading it), and
  the SHA-256 of its bytes equals the stored content key;  else **409**.  The hash is computed
  once per file version: the verdict on a version (device, inode, size, mtime, ctime), match or
  mismatch, is remembered, so a swapped-in file is hashed at most once however often it is asked
  for.  Rows whose key is no file hash (custom encoders, raw vectors) are served with the folder
  check alone; rows of an index written before sizes were stored, with the hash check alone.

The file is opened once (non-blocking, so a FIFO cannot hang a worker) and served from that
open descriptor (``/proc/self/fd/N``), so a swap after the check cannot change what is sent.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders.base import file_digest
from ..errors import AnybindError

if TYPE_CHECKING:
    import pyarrow as pa

_PROC_FD = "/proc/self/fd"
# read-only; no link as the last component; non-blocking, so a FIFO put in a file's place cannot hang a worker
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class NotFound(AnybindError):
    """No such stored item, or its file cannot be served (HTTP 404)."""


class Changed(AnybindError):
    """A stored item's file no longer holds the content that was indexed (HTTP 409)."""


@dataclass
class OpenItemFile:
    """A checked, open item file.  ``path`` opens this very file (``/proc/self/fd/N`` where there is one)."""

    path: str
    stat: os.stat_result
    fd: int

    def head(self, n: int) -> bytes:
        return os.pread(self.fd, n, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "OpenItemFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a response that never ran its close
        try:
            self.close()
        except OSError:
            pass


def indexed_folders(
    sources: "pa.ChunkedArray", modality: np.ndarray, file_modalities: list[str]
) -> frozenset[str]:
    """The directories of the stored paths of every file row (one vectorised pass)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not file_modalities or len(sources) == 0:
        return frozenset()
    mask = np.isin(modality, np.asarray(file_modalities, dtype=object))
    col = sources.filter(pa.array(mask))
    dirs = pc.unique(pc.replace_substring_regex(col, pattern="/[^/]*$", replacement="")).to_pylist()
    return frozenset((d or "/") for d in dirs if d is not None)


def _sha256_fd(fd: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    pos = 0
    while True:
        block = os.pread(fd, chunk, pos)
        if not block:
            return h.hexdigest()
        h.update(block)
        pos += len(block)


class ItemFiles:
    """Opens indexed items' files, checked (see the module doc).  Thread-safe."""

    def __init__(self, max_verified: int = 4096):
        self.folders: frozenset[str] = frozenset()
        self.max_verified = int(max_verified)
        self._verified: OrderedDict[tuple, bool] = OrderedDict()  # file version -> its content matched
        self._lock = threading.Lock()

    def set_folders(self, folders: frozenset[str]) -> None:
        self.folders = folders

    def open(
        self, item_id: str, modality: str, source: str, key: str | None, size: int | None = None
    ) -> OpenItemFile:
        """Open ``source`` for serving, or raise :class:`NotFound` (gone, not a file, outside the indexed
        folders) / :class:`Changed` (size or content differs from what was indexed; ``size``: the
        indexed size in bytes, when the index recorded it)."""
        what = f"the stored {modality} file of item {item_id!r}"
        if not os.path.isabs(source):
            raise NotFound(f"{what} is missing")
        real = os.path.realpath(source)
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except FileNotFoundError:
            raise NotFound(f"{what} is missing") from None
        except OSError as e:  # a link swapped in after realpath (ELOOP), a folder, no permission...
            raise NotFound(f"{what} cannot be opened ({e.strerror or e})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"{what} is no longer a regular file; not served")
            opened, path = real, real
            if os.path.isdir(_PROC_FD):
                path = f"{_PROC_FD}/{fd}"
                opened = os.readlink(path)
            if os.path.dirname(opened) not in self.folders:
                raise NotFound(
                    f"{what} now leads outside the folders this index was built from (a link?); not served"
                )
            digest = file_digest(key)
            if digest:
                if size is not None and st.st_size != size:
                    raise _changed(what, f"{st.st_size:,} bytes, indexed {size:,}")
                self._check_content(fd, st, opened, key, digest, what)
            return OpenItemFile(path, st, fd)
        except BaseException:
            os.close(fd)
            raise

    def _check_content(self, fd: int, st: os.stat_result, opened: str, key: str, digest: str, what: str) -> None:
        version = (opened, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, key)
        with self._lock:
            ok = self._verified.get(version)
            if ok is not None:
                self._verified.move_to_end(version)
        if ok is None:
            ok = _sha256_fd(fd) == digest
            with self._lock:
                self._verified[version] = ok
                while len(self._verified) > self.max_verified:
                    self._verified.popitem(last=False)
        if not ok:
            raise _changed(what, "its content no longer matches")


def _changed(what: str, why: str) -> Changed:
    return Changed(
        f"{what} changed since it was indexed ({why}); not served: re-index it to serve the new file"
    )

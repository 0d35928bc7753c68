"""Safe writing of files and artefact folders: nothing of the user's is ever lost to an output path.

An *artefact* is a folder anybind writes as a whole (a saved space, an index, a fusion
model, training shards).  Each kind has a *marker*, a JSON file naming its format, written
last: its presence marks a complete artefact (:data:`KINDS`).

:func:`check_output` refuses, before any work starts, an output path that is a file, the
current or home folder (or an ancestor of either), a non-empty folder that is not an artefact
of that kind, an artefact holding other files too, or an existing artefact of that kind
without ``overwrite``.  Empty folders and new paths are fine.

:func:`atomic_write_dir` writes a folder as a recoverable swap::

    .<name>.<token>.lock   held (flock) by the writer for the whole write
    .<name>.<token>.tmp    written fully, marker last, fsynced
    <name>  -> .<name>.<token>.old      (marker removed from the old one only once it is replaced)
    .<name>.<token>.tmp -> <name>
    .<name>.<token>.old removed, then the lock

A kill at any point leaves the complete old or the complete new version at ``<name>``, or
(between the two renames) at a leftover; :func:`recover_dir`, run by every write and by every
load, puts the newest complete leftover of a dead writer back at ``<name>`` when it is
missing and removes the others.  A writer is dead when its lock file is free.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # no flock (Windows): leftovers are never taken for a dead writer's, so never touched
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$ANYBIND_CACHE``, else ``$XDG_CACHE_HOME/anybind/features``, else ``~/.cache/anybind/features``."""
    env = os.environ.get("ANYBIND_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "anybind" / "features"


@dataclass(frozen=True)
class Kind:
    """One artefact kind: its marker file, the format the marker names, and the entries it is made of."""

    label: str
    marker: str
    format: str
    parts: tuple[str, ...]  # fnmatch patterns of the entries a saved artefact holds
    ignored: tuple[str, ...] = ()  # entries that neither make a folder non-empty nor foreign (lock files)


KINDS: dict[str, Kind] = {
    "space": Kind("a saved space", "space.json", "anybind.space",
                  ("space.json", "projectors.safetensors", "calibration.json", "vocabulary.json", "vocabulary.safetensors")),
    "index": Kind(
        "an index", "index.json", "anybind.index", ("index.json", "space", "items.lance", ".index.json.*.tmp"),
        ignored=("*.lock",),
    ),
    "fusion": Kind("a fusion model", "fusion.json", "anybind.fusion", ("fusion.json", "fusion.safetensors")),
    "zero-shot": Kind("a zero-shot classifier", "classifier.json", "anybind.zero-shot-classifier",
                      ("classifier.json", "bias.safetensors")),
    "captioner": Kind("a captioner", "captioner.json", "anybind.captioner",
                      ("captioner.json", "mapper.safetensors", "memory.safetensors", "memory.json", "space")),
    "training-shards": Kind(
        "training shards", "shards.json", "anybind.training-shards",
        ("shards.json", "[0-9]*.safetensors", ".shards.json.*.tmp"),
    ),
}
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<token>(?:\d+-)?[0-9a-f]{8})\.(?P<what>tmp|old|lock)$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the complete new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- recognising artefacts ---------------------------------------------------------------
def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown artefact kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def is_complete(path: Path, kind: str) -> bool:
    """``path`` is a folder holding a complete artefact of ``kind`` (its marker names the format)."""
    k = _kind(kind)
    try:
        meta = json.loads((Path(path) / k.marker).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == k.format


def artefact_kind(path: Path) -> str | None:
    """The kind of complete artefact the folder ``path`` holds, or None."""
    return next((k for k in KINDS if is_complete(path, k)), None)


def _listing(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _protected(p: Path) -> str | None:
    """Why ``p`` (absolute) must never be replaced: the current or home folder, or one holding either."""
    for what, where in (("the current folder", Path.cwd), ("your home folder", Path.home)):
        try:
            w = Path(os.path.abspath(where()))
        except (OSError, RuntimeError):
            continue
        if p == w:
            return f"is {what}"
        if p in w.parents:
            return f"holds {what}"
    return None


def check_output(path: str | Path, kind: str, overwrite: bool = False, *, update: bool = False) -> Path:
    """Refuse an output path that writing ``kind`` there could lose data at; returns it made absolute.

    Accepted: a new path, an empty folder, an artefact of ``kind`` with ``overwrite`` (replaced)
    or with ``update`` (written in place).  Raises :class:`~anybind.errors.OutputError` otherwise.
    """
    k = _kind(kind)
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    recover_dir(p, kind)
    why = _protected(p)
    if why:
        raise OutputError(f"{path}: {why}; give a new or empty folder below it as the output")
    if p.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; give the folder itself (or a new one) as the output")
    if not p.exists():
        up = next((a for a in p.parents if a.exists()), None)
        if up is not None and not up.is_dir():
            raise OutputError(f"{path}: {up} is a file, not a folder; choose another output")
        return p
    if not p.is_dir():
        raise OutputError(f"{path}: is an existing file; choose a new or empty folder as the output")
    try:
        entries = [e for e in os.listdir(p) if not any(fnmatch.fnmatch(e, g) for g in k.ignored)]
    except OSError as e:
        raise OutputError(f"{path}: cannot list it ({e.strerror}); choose another output") from None
    if not entries:
        return p
    found = artefact_kind(p)
    if found != kind:
        what = f"holds {KINDS[found].label}" if found else f"holds {_listing(entries)}"
        raise OutputError(
            f"{path}: is a non-empty folder that is not {k.label} ({what}); choose a new or empty folder"
        )
    if not overwrite:
        if update:
            return p  # written in place: nothing beside it is touched
        raise OutputError(f"{path}: already holds {k.label}; pass --overwrite (overwrite=True) to replace it, "
                          "or choose another folder")
    foreign = [e for e in entries if not any(fnmatch.fnmatch(e, g) for g in k.parts)]
    if foreign:
        raise OutputError(
            f"{path}: holds {k.label} but also other files ({_listing(foreign)}) that replacing it would lose; "
            "move them out or choose another folder"
        )
    return p


# -- the swap and its recovery --------------------------------------------------------------
def check_output_file(path: str | Path, marker: bytes, overwrite: bool = False) -> Path:
    """Refuse a single-file output (a report, a numbers file) that writing could lose data at.

    Accepted: a new path, or (replaced) a file this program wrote before -- its first 4 KB hold ``marker`` --
    or any regular file with ``overwrite``.  A folder, a link, or someone else's file is refused.
    """
    p = Path(path).expanduser()
    if p.is_symlink():
        raise OutputError(f"{path}: is a link; give the file's own path or a new one")
    if p.exists():
        if not p.is_file():
            raise OutputError(f"{path}: is not a regular file (a folder?); give a new file name")
        if not overwrite:
            with open(p, "rb") as f:
                head = f.read(4096)
            if marker not in head:
                raise OutputError(f"{path}: already exists and was not written by anybind; pass --overwrite "
                                  "(overwrite=True) to replace it, or choose another name")
    return p.absolute()


def _try_lock(lock: Path) -> int | None:
    """An fd holding ``lock`` exclusively, or None when a live writer holds it (or it is gone)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _leftovers(p: Path) -> dict[str, dict[str, Path]]:
    """The swap leftovers beside ``p``, by writer token: {token: {"tmp"|"old"|"lock": path}}."""
    out: dict[str, dict[str, Path]] = {}
    try:
        names = os.listdir(p.parent)
    except OSError:
        return out
    for n in names:
        m = _LEFTOVER.match(n)
        if m and m["name"] == p.name:
            out.setdefault(m["token"], {})[m["what"]] = p.parent / n
    return out


def _remove(p: Path, kind: str | None) -> None:
    """Remove a leftover folder, its marker first (so a half-removed one never looks complete)."""
    if p.is_dir() and not p.is_symlink():
        if kind:
            (p / KINDS[kind].marker).unlink(missing_ok=True)
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def recover_dir(path: str | Path, kind: str, wait_s: float = 2.0) -> None:
    """Settle the leftovers of killed writes of ``path``: if it is missing, the newest complete one
    becomes it; the others are removed.  Leftovers of a live writer are left alone (when it is
    mid-swap, this waits up to ``wait_s`` for it).  Best effort: a failure is logged, not raised."""
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    _kind(kind)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            live_swap = _recover_once(p, kind)
        except OSError as e:
            log.warning("%s: could not settle the leftovers of an interrupted write (%s)", p, e)
            return
        if not live_swap or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _recover_once(p: Path, kind: str) -> bool:
    """One pass of :func:`recover_dir`; True when ``p`` is missing while a live writer is mid-swap."""
    groups = _leftovers(p)
    if not groups:
        return False
    held: dict[str, int] = {}
    live_swap = False
    try:
        for token, g in groups.items():
            fd = _try_lock(g["lock"]) if "lock" in g else -1  # no lock file: an older anybind's, dead
            if fd is None:
                live_swap |= "old" in g
            else:
                held[token] = fd
        dead = [g for t, g in groups.items() if t in held]
        complete = [g[w] for g in dead for w in ("tmp", "old") if w in g and is_complete(g[w], kind)]
        if complete and not live_swap and not os.path.lexists(p):
            best = max(complete, key=lambda d: (d / KINDS[kind].marker).stat().st_mtime)
            os.rename(best, p)
            log.warning("%s: restored the complete version an interrupted write left at %s", p, best.name)
        keep = set() if is_complete(p, kind) else set(complete)  # never remove what may be the only copy
        for g in dead:
            for w in ("tmp", "old"):
                if w in g and g[w] not in keep and os.path.lexists(g[w]):
                    _remove(g[w], kind)
            if "lock" in g and not keep.intersection(g.values()):
                g["lock"].unlink(missing_ok=True)
    finally:
        for fd in held.values():
            if fd >= 0:
                os.close(fd)
    return live_swap and not os.path.lexists(p)


def _fsync_tree(root: Path) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(d))


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _take_lock(p: Path) -> tuple[str, Path, int]:
    """A fresh writer token and its held lock file beside ``p``."""
    while True:
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lock = p.with_name(f".{p.name}.{token}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        if fcntl is None:
            return token, lock, fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return token, lock, fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by a recovery between create and lock: take another


def atomic_write_dir(
    path: str | Path, write: Callable[[Path], None], kind: str | None = None, overwrite: bool = False
) -> Path:
    """Fill a fresh temporary folder with ``write(tmp)``, then swap it in for ``path`` (see the module doc).

    ``path`` must pass :func:`check_output` for ``kind`` (checked before ``write`` and again before
    the swap); without a kind it must be new or an empty folder.  ``write`` must write the kind's
    marker last.  On any failure the temporary folder is removed and ``path`` is untouched.
    """
    given = Path(path)
    p = check_output(given, kind, overwrite) if kind else _check_plain(given)
    p.parent.mkdir(parents=True, exist_ok=True)
    token, lock, fd = _take_lock(p)
    tmp, old = p.with_name(f".{p.name}.{token}.tmp"), p.with_name(f".{p.name}.{token}.old")
    moved = False
    try:
        tmp.mkdir()
        write(tmp)
        if kind and not is_complete(tmp, kind):
            raise OutputError(f"{given}: the writer left no valid {KINDS[kind].marker} (nothing was replaced)")
        _fsync_tree(tmp)
        if kind:
            check_output(given, kind, overwrite)
        else:
            _check_plain(given)
        if os.path.lexists(p):
            os.rename(p, old)
            moved = True
        os.rename(tmp, p)
        moved = False
        _fsync_dir(p.parent)
        if os.path.lexists(old):
            _remove(old, kind)
    except BaseException:
        if moved and not os.path.lexists(p):
            os.rename(old, p)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
    return given


def _check_plain(path: Path) -> Path:
    """A kind-less folder write: only onto a new path or an empty folder."""
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    if _protected(p):
        raise OutputError(f"{path}: {_protected(p)}; give a new or empty folder below it as the output")
    if os.path.lexists(p) and (not p.is_dir() or p.is_symlink() or any(os.scandir(p))):
        raise OutputError(f"{path}: exists and is not an empty folder; choose a new or empty folder")
    return p

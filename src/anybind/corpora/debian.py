"""Corpora that come from Debian packages: make sure the package is installed.

:func:`ensure_debian_package` checks a path the package installs; when it is
missing and we run as root (containers, CI) it runs ``apt-get install -y PKG``
(with ``apt-get update`` first when the package lists are missing or stale);
otherwise it raises :class:`~anybind.errors.DataError` giving the exact command
to run.  :func:`debian_package_version` reads the installed version for the
corpus' provenance record.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import DataError

# Debian package names: lowercase letters, digits, + - . ; at least 2 chars, starting alphanumeric.
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")

# apt-get's messages when it does not know the package (no/stale lists), not a real failure.
_NEEDS_UPDATE = (
    "unable to locate package",
    "has no installation candidate",
    "is not available, but is referred to",
    "failed to fetch",  # stale lists pointing at files the mirror no longer has
)

_APT_TIMEOUT_S = 1800


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _check_name(pkg: str) -> None:
    if not isinstance(pkg, str) or not _PKG_RE.match(pkg):
        raise ValueError(f"not a Debian package name: {pkg!r}")


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(
            ["apt-get", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"`apt-get {' '.join(args)}` could not run: {e}") from None


def _tail(proc: subprocess.CompletedProcess[str], n: int = 8) -> str:
    lines = ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def ensure_debian_package(pkg: str, probe_path: str | os.PathLike[str]) -> Path:
    """Return ``probe_path`` once it exists, installing Debian package ``pkg`` if needed.

    * ``probe_path`` exists: nothing to do.
    * running as root with ``apt-get`` available: ``apt-get install -y PKG``;
      when apt does not know the package yet (fresh container without lists),
      ``apt-get update`` and a second install attempt.
    * otherwise: :class:`DataError` whose message is the exact command to run.

    Raises :class:`DataError` when the install fails, or succeeds without
    creating ``probe_path`` (wrong package for that path).
    """
    _check_name(pkg)
    probe = Path(probe_path)
    if probe.exists():
        return probe
    if shutil.which("apt-get") is None:
        raise DataError(
            f"{probe} does not exist: it comes with the Debian/Ubuntu package {pkg!r}. "
            f"Install it with `sudo apt-get install -y {pkg}` (on another system, "
            "get the files another way and pass their folder explicitly)."
        )
    if not _is_root():
        raise DataError(
            f"{probe} does not exist: it comes with the Debian package {pkg!r}. "
            f"Install it with: sudo apt-get install -y {pkg}"
        )
    proc = _apt(["install", "-y", "--no-install-recommends", pkg])
    if proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or "")).lower()
        if any(s in out for s in _NEEDS_UPDATE):
            upd = _apt(["update"])
            if upd.returncode != 0:
                raise DataError(
                    f"installing {pkg!r} needs `apt-get update`, which failed "
                    f"(exit {upd.returncode}; no network?):\n{_tail(upd)}\n"
                    f"Run `apt-get update && apt-get install -y {pkg}` where the network is reachable."
                )
            proc = _apt(["install", "-y", "--no-install-recommends", pkg])
    if proc.returncode != 0:
        raise DataError(
            f"`apt-get install -y {pkg}` failed (exit {proc.returncode}):\n{_tail(proc)}\n"
            f"{probe} is needed; install {pkg!r} by hand and retry."
        )
    if not probe.exists():
        raise DataError(f"installed Debian package {pkg!r}, but {probe} still does not exist")
    return probe


def debian_package_version(pkg: str) -> str:
    """The installed version of ``pkg`` (``dpkg-query``), or ``"unknown"``."""
    _check_name(pkg)
    if shutil.which("dpkg-query") is None:
        return "unknown"
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else "unknown"


def debian_copyright_path(pkg: str) -> Path:
    """Where Debian puts a package's machine-readable copyright/license file."""
    _check_name(pkg)
    return Path("/usr/share/doc") / pkg / "copyright"

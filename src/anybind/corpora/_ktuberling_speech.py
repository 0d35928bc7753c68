"""The recordings of KTuberling's words: ``sounds/<lang>.soundtheme`` read, each file checked and copied once.

Rules in :mod:`anybind.corpora.ktuberling` (**Speech**).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DataError
from ._build import stable_message
from .tuxpaint_source import normalise_lang

__all__ = ["Clip", "Recordings", "load_soundthemes", "parse_soundtheme", "read_xml", "speech_field"]


def speech_field(lang: str) -> str:
    """``en`` -> ``speech``; ``sr@latin`` -> ``speech_sr_latin``."""
    return "speech" if lang == "en" else f"speech_{normalise_lang(lang)}"


def read_xml(path: Path, what: str) -> Any:
    """The root element of an XML file parsed with defusedxml; a one-line :class:`DataError` otherwise."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring
    from xml.etree.ElementTree import ParseError

    try:
        return fromstring(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: unreadable {what} ({e.strerror or e})") from None
    except (ParseError, DefusedXmlException, ValueError) as e:
        raise DataError(f"{path}: not a well-formed {what} ({type(e).__name__}: {e})") from None


def parse_soundtheme(path: str | os.PathLike[str]) -> dict[str, str]:
    """A ``.soundtheme`` file -> {sound name: file path relative to the sounds folder} (first entry wins)."""
    p = Path(path)
    root = read_xml(p, "KTuberling sound theme")
    if root.tag != "language":
        raise DataError(f"{p}: not a KTuberling sound theme (root <{root.tag}>, not <language>)")
    out: dict[str, str] = {}
    for s in root.iter("sound"):
        name, file = s.get("name"), s.get("file")
        if name and file:
            out.setdefault(name, file)
    return out


@dataclass
class Clip:
    """One recording in the corpus: its manifest field, path and length."""

    field: str
    rel: str  # path in the corpus
    seconds: float


def load_soundthemes(sounds: Path, problems: Counter[str], bad: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every readable ``<lang>.soundtheme`` of ``sounds``: {lang: {sound name: file}}, English first."""
    out: dict[str, dict[str, str]] = {}
    for p in sorted(sounds.glob("*.soundtheme")) if sounds.is_dir() else []:
        try:
            out[p.stem] = parse_soundtheme(p)
        except DataError as e:
            problems["soundtheme_unreadable"] += 1
            bad[p.name] = stable_message(str(e), sounds)
    # English first: a recording another language reuses byte for byte is kept under the first one
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "en", kv[0])))


class Recordings:
    """Finds, checks (decodes) and copies each recording once."""

    def __init__(self, tmp: Path, sounds: Path, langs: dict[str, dict[str, str]], problems: Counter[str]):
        self.tmp, self.sounds, self.langs, self.problems = tmp, sounds, langs, problems
        self.done: dict[tuple[str, str], Clip | None] = {}
        self.bad_audio: dict[str, str] = {}
        self.missing: list[str] = []
        self.same_as: Counter[str] = Counter()
        self._by_hash: dict[tuple[str, str], str] = {}  # (sound, sha256) -> first language

    def clips(self, sound: str) -> list[Clip]:
        """The recordings of ``sound`` in every language that has a usable one."""
        out = []
        for lang in self.langs:
            if (lang, sound) not in self.done:
                self.done[(lang, sound)] = self._clip(lang, sound)
            c = self.done[(lang, sound)]
            if c is not None:
                out.append(c)
        return out

    def _clip(self, lang: str, sound: str) -> Clip | None:
        from ..data.media import load_audio

        rel = self.langs[lang].get(sound)
        if rel is None:
            return None
        pp = PurePosixPath(rel)
        if pp.is_absolute() or ".." in pp.parts or not pp.parts:
            self.problems["speech_path_outside"] += 1
            self.bad_audio[f"{lang}:{rel}"] = "path leaves the sounds folder"
            return None
        path = self.sounds / pp
        try:
            data = path.read_bytes()
        except OSError:
            self.problems["speech_file_missing"] += 1
            self.missing.append(rel)
            return None
        digest = hashlib.sha256(data).hexdigest()
        first = self._by_hash.setdefault((sound, digest), lang)
        if first != lang:
            self.problems["speech_same_as_other_language"] += 1
            self.same_as[f"{lang} = {first}"] += 1
            return None
        dest = self.tmp / "media" / "sounds" / pp
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        try:
            wav, sr = load_audio(dest)
        except DataError as e:
            dest.unlink()
            self.problems["speech_bad_audio"] += 1
            self.bad_audio[rel] = stable_message(str(e), self.tmp)
            return None
        return Clip(speech_field(lang), f"media/sounds/{pp.as_posix()}", round(len(wav) / sr, 3))



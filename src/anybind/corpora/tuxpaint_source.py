"""Reading the Tux Paint stamps folder: caption files (every language, their encodings and misnamings),
the stamps and their sounds, the package version and licence (:mod:`anybind.corpora.tuxpaint` states
the rules and builds the corpus from what this module reads)."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .debian import debian_copyright_path, debian_package_version

NAME = "tuxpaint"
PACKAGE = "tuxpaint-stamps-default"
DEFAULT_STAMPS_DIR = "/usr/share/tuxpaint/stamps"
BUILDER_VERSION = "1"
UPSTREAM = "Tux Paint stamps (https://tuxpaint.org/), Bill Kendrick and contributors"

IMAGE_EXTS = (".png", ".svg")  # order = preference
_AUDIO_EXTS = (".ogg", ".wav")  # order = preference
_STEM_EXTS = frozenset({".png", ".svg", ".txt", ".dat"})
VARIANT_SUFFIXES = ("_mirror_flip", "_flip_mirror", "_mirror", "_flip")

_TRANSLATION_RE = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2,4})?(?:@[A-Za-z]+)?)\.utf-?8\s*=(.*)$", re.I)
_LOC_RE = re.compile(r"^([A-Za-z]{2,3})(?:_[A-Za-z]{2,4})?(?:@[A-Za-z]+)?$")
_LINE_SPLIT_RE = re.compile(rb"\r\n|\r|\n")
_WS_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FINAL_PUNCT = ".!?。！？…:;, "

# Languages whose script we check: a value with no letter in the block is mis-encoded.
_SCRIPT_BLOCKS: dict[str, tuple[int, int]] = {"ta": (0x0B80, 0x0BFF)}  # TSCII shown as Latin-1


# --------------------------------------------------------------------------- summary


# --------------------------------------------------------------------------- captions


def normalise_lang(code: str) -> str:
    """``pt_BR`` -> ``pt_br``; ``sr@latin`` -> ``sr_latin``; ``zh-TW`` -> ``zh_tw``."""
    return code.strip().lower().replace("@", "_").replace("-", "_")


def _clean(text: str) -> str:
    return _WS_RE.sub(" ", _CONTROL_RE.sub("", text)).strip()


@dataclass
class Caption:
    english: str | None
    translations: dict[str, str]  # normalised lang -> text
    problems: Counter[str]


def parse_caption(data: bytes) -> Caption:
    """Parse a Tux Paint stamp ``.txt`` file (see the module docstring for the rules)."""
    problems: Counter[str] = Counter()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    english: str | None = None
    translations: dict[str, str] = {}
    for raw in _LINE_SPLIT_RE.split(data):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = None
        if english is None:
            if line is None:
                problems["caption_english_not_utf8"] += 1
                line = raw.decode("cp1252", errors="replace")
            if _TRANSLATION_RE.match(line.strip()):
                problems["caption_no_english_line"] += 1
                english = ""  # the file starts with translations: no English caption
            else:
                english = _clean(line)
                continue
        if line is None:
            problems["caption_line_not_utf8"] += 1
            continue
        m = _TRANSLATION_RE.match(line.strip())
        if not m:
            problems["caption_line_unparsed"] += 1
            continue
        lang = normalise_lang(m.group(1))
        value = _clean(m.group(2))
        if not value:
            problems["caption_translation_empty"] += 1
            continue
        block = _SCRIPT_BLOCKS.get(lang.split("_")[0])
        if block and not any(block[0] <= ord(c) <= block[1] for c in value):
            problems["caption_wrong_script"] += 1
            continue
        if lang in translations:
            problems["caption_duplicate_language"] += 1
            continue
        translations[lang] = value
    return Caption(english=english or None, translations=translations, problems=problems)


def split_key(english: str) -> str:
    return _WS_RE.sub(" ", english.casefold()).strip().rstrip(_FINAL_PUNCT)


# --------------------------------------------------------------------------- scanning


@dataclass
class Sound:
    path: Path
    dest_name: str  # canonical Tux Paint name (misnamings corrected)
    rank: tuple[int, int, int, str]  # lower is better


@dataclass
class Stamp:
    folder: Path
    category: str
    stem: str
    files: dict[str, Path] = field(default_factory=dict)  # ".png" -> path
    sounds: dict[tuple[str, str | None], list[Sound]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.category}/{self.stem}" if self.category else self.stem


def _strip_audio_exts(name: str) -> tuple[str, str, int]:
    """``x_desc_da.ogg.ogg`` -> (``x_desc_da``, ``.ogg``, 2)."""
    base, n, ext = name, 0, ""
    while True:
        b, e = os.path.splitext(base)
        if e.lower() in _AUDIO_EXTS and b:
            base, n, ext = b, n + 1, ext or e.lower()
        else:
            return base, ext, n


def _sound_slot(rest: str, langs: frozenset[str]) -> tuple[str, str | None] | None:
    """The part of a sound name after the stem -> (kind, locale) or None."""

    def loc(s: str) -> str | None:
        m = _LOC_RE.match(s)
        return normalise_lang(s) if m and m.group(1).lower() in langs else None

    if rest == "":
        return ("sound", None)
    low = rest.lower()
    if low == "_desc":
        return ("desc", None)
    if low.startswith("_desc_"):
        lc = loc(rest[6:])
        return ("desc", lc) if lc else None
    if rest.startswith("_"):
        lc = loc(rest[1:])
        return ("sound", lc) if lc else None
    return None


def scan(
    stamps_dir: Path, langs: frozenset[str], problems: Counter[str], unmatched: list[str]
) -> list[Stamp]:
    stamps: list[Stamp] = []
    for folder, dirs, files in os.walk(stamps_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder_p = Path(folder)
        rel = folder_p.relative_to(stamps_dir).as_posix()
        category = "" if rel == "." else rel
        by_stem: dict[str, Stamp] = {}
        audio: list[str] = []
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() in _STEM_EXTS and stem:
                st = by_stem.setdefault(stem, Stamp(folder_p, category, stem))
                st.files[ext.lower()] = folder_p / name
            elif ext.lower() in _AUDIO_EXTS:
                audio.append(name)
            # anything else (README, .xcf sources...) is not part of a stamp
        lower: dict[str, list[str]] = {}
        for s in by_stem:
            lower.setdefault(s.lower(), []).append(s)
        for name in audio:
            base, ext, n_ext = _strip_audio_exts(name)
            best: tuple[tuple[int, int, int, str], str, tuple[str, str | None], str] | None = None
            for cut in range(len(base), 0, -1):  # longest stem first
                head, rest = base[:cut], base[cut:]
                if rest and rest[0] != "_":
                    continue
                slot = _sound_slot(rest, langs)
                if slot is None:
                    continue
                candidates = [(0, head)] if head in by_stem else []
                candidates += [(1, s) for s in lower.get(head.lower(), []) if s != head]
                if candidates:
                    case, stem = candidates[0]
                    rank = (case, int(n_ext > 1), _AUDIO_EXTS.index(ext), name)
                    best = (rank, stem, slot, stem + rest + ext)
                    break
            if best is None:
                unmatched.append(f"{category}/{name}" if category else name)
                continue
            rank, stem, slot, dest = best
            if rank[0]:
                problems["sound_recovered_letter_case"] += 1
            if rank[1]:
                problems["sound_recovered_double_extension"] += 1
            by_stem[stem].sounds.setdefault(slot, []).append(Sound(folder_p / name, dest, rank))
        stamps.extend(by_stem[s] for s in sorted(by_stem))
    return stamps


def caption_languages(stamps_dir: Path) -> frozenset[str]:
    """Language codes (``fr``, ``zh``...) used in any caption file: the valid sound locales."""
    langs: set[str] = set()
    for txt in stamps_dir.rglob("*.txt"):
        try:
            data = txt.read_bytes()
        except OSError:
            continue
        for raw in _LINE_SPLIT_RE.split(data):
            m = _TRANSLATION_RE.match(raw.decode("utf-8", errors="replace").strip())
            if m:
                langs.add(m.group(1).split("_")[0].split("@")[0].lower())
    langs.add("en")
    return frozenset(langs)


# (path, mtime, size) -> error message or None: a rebuild in the same process does not
# rasterise the same ~165 SVGs again (that is most of a build's time).
_IMAGE_CHECKS: dict[tuple[str, int, int], str | None] = {}


def image_error(path: Path) -> str | None:
    """Why ``path`` does not decode with :func:`load_image`, or None when it does."""
    from ..data.media import load_image

    try:
        st = path.stat()
    except OSError as e:
        return f"{path}: unreadable ({e.strerror or e})"
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _IMAGE_CHECKS:
        try:
            load_image(path, size=64)
            _IMAGE_CHECKS[key] = None
        except DataError as e:
            _IMAGE_CHECKS[key] = str(e)
    return _IMAGE_CHECKS[key]


def audio_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(b"OggS") or (head.startswith(b"RIFF") and head[8:12] == b"WAVE")


# --------------------------------------------------------------------------- build


def package_info(stamps_dir: Path) -> dict[str, str]:
    default = Path(DEFAULT_STAMPS_DIR)
    is_default = default.exists() and stamps_dir.resolve() == default.resolve()
    return {
        "package": PACKAGE,
        "version": debian_package_version(PACKAGE) if is_default else "unknown",
        "stamps_dir": str(stamps_dir),
        "license": "GPL-2",
        "upstream": UPSTREAM,
    }


def write_license(tmp: Path, source: dict[str, str]) -> None:
    cp = debian_copyright_path(PACKAGE)
    if cp.is_file():
        shutil.copyfile(cp, tmp / "LICENSE")
    else:
        (tmp / "LICENSE").write_text(
            "The Tux Paint stamps are distributed under the GNU General Public License,\n"
            "version 2 or later (GPL-2), Copyright 2002-2022 Bill Kendrick and contributors.\n"
            f"(The Debian copyright file {cp} was not found on the machine that built this corpus.)\n",
            encoding="utf-8",
        )
    (tmp / "SOURCE.md").write_text(
        "# Tux Paint stamps corpus\n\n"
        f"* Data: {source['upstream']}\n"
        f"* Debian package: `{source['package']}` version `{source['version']}`\n"
        f"* Read from: `{source['stamps_dir']}`\n"
        f"* License: {source['license']} (see `LICENSE`, copied from the package's copyright file).\n"
        "  The media files are unmodified copies; redistributing this folder is distributing\n"
        "  GPL-2 material, with the obligations that come with it.\n"
        f"* Built by `anybind.corpora.tuxpaint` version {BUILDER_VERSION}; the rules used to pair\n"
        "  captions, images and sounds are in that module's docstring.\n",
        encoding="utf-8",
    )

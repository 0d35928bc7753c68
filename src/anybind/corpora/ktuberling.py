"""KTuberling's sprites as an image / text / speech corpus with human voices in 23 languages.

Source: the Debian package ``ktuberling-data`` (GPL-2+), installed at
``/usr/share/ktuberling``: ``pics/<theme>.theme`` + ``.svg``/``.svgz`` +
``.desktop`` (10 themes: Potato Guy, Pizzeria, Robin Tux...) and
``sounds/<lang>.soundtheme`` + ``sounds/<lang>/`` (recordings of the words,
``.ogg``/``.wav``/``.opus``).

Rules (numbers for ktuberling-data 4:22.12.3-1)
-----------------------------------------------

**Records.**  One per ``<object name=... sound=...>`` of a ``.theme`` (495
entries, 487 records): id ``<theme>/<object>`` (``pizzeria/olive1``),
``labels`` ``{"theme": <theme file stem>, "sound": <sound name>}``.  Themes
in file-name order, objects in ``.theme`` order; an object listed twice in
its theme is skipped the second time (``duplicate_object``: Robot
workshop's ``scissorArm1`` and ``scissorArm2``), one without ``sound`` as
``no_sound_name``.

**Image.**  The object is the element of the theme's SVG whose id is its
name, cut out with :class:`anybind.corpora._svg_sprites.SvgScene`: drawn
alone, cropped to its bounding box and centred on a transparent square,
``media/images/<theme>/<object>.png`` (RGBA, ``size`` = 256 pixels).
Skipped: ``not_in_scene`` (no such id), ``bad_render`` (CairoSVG cannot draw
it), ``blank_render`` (draws nothing, or only further than half the canvas
size off it), ``invisible_on_white`` (fewer than
``MIN_VISIBLE`` = 1 % of its drawn pixels stand out on white: the 6 white
highlights of Butterflies and Christmas, which every model would see as a
blank picture once :func:`anybind.data.media.load_image` puts it on white).

**Text.**  The English word of the sound name: the theme prefix removed
(``pizzeria_``, ``tv_``, ``xmas_``, ``tux-``...), ``_`` and ``-`` read as
spaces (``tv_breakdown_lorry`` -> ``breakdown lorry``), then the table
:data:`WORDS` for misspellings (``pizzeria_brocolli`` -> ``broccoli``,
``whitch-tux`` -> ``witch tux``), run-together words (``egypt_palmtree`` ->
``palm tree``) and names that say what the sound does rather than what the
picture shows (``tux-fly``, a flying dove; ``bow``, Potato Guy's bow tie,
distinct from Robin Tux's ``bow``).  Bare words like the emoji corpus (no
article).  The package has no written translations of the words: the
``.mo`` catalogues hold only the program's messages, and the recordings'
file names are ASCII spellings (``da/oeje.ogg`` for *øje*) or the English
name (``de/eye.ogg``), so there is no ``text_<lang>``.

**Speech.**  ``sounds/<lang>.soundtheme`` maps sound names to files.  A
record gets the recording of its sound name in each language: ``speech``
for ``en``, ``speech_<lang>`` otherwise, with the language normalised like
Tux Paint's (``sr@latin`` -> ``speech_sr_latin``).  Languages are taken
English first, then in file-name order.  Files are copied to
``media/sounds/<path in the package>`` (one copy however many sprites share
the word) and decoded once with :func:`anybind.data.media.load_audio` at
build time.  Counted in ``problems`` (the record keeps its other fields):
``speech_file_missing`` (185: every file of ``id.soundtheme`` for a sound in
use; the package has no ``sounds/id/``), ``speech_bad_audio``,
``speech_path_outside`` (a path leaving ``sounds/``),
``speech_same_as_other_language`` (33: byte-identical to the recording of
the same word in an earlier language; the Serbian ``sr@ijekavian``,
``sr@ijekavianlatin`` and ``sr@latin`` themes reuse the ``sr`` recordings),
``soundtheme_unreadable``.  Sound names no theme uses (``badge``,
``cigar``...) are listed under ``unused_sounds``.  So 23 languages, 1,804
recordings (31 minutes), 237 records with English speech and every record
with speech in at least 4 languages.

**Split.**  :func:`anybind.data.manifest.hash_split` of the English word,
70/10/20 of the words: every sprite of a word (27 eyes...) is in one split,
so a test word is never seen in training (records: 337 train, 36 val, 114
test).

A theme whose ``.theme`` does not parse is skipped as ``bad_theme`` (its
stem); one whose SVG does not, as ``bad_scene`` (each of its objects).  The
build is atomic and deterministic (:mod:`anybind.corpora._build`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package
from ._ktuberling_speech import Recordings, load_soundthemes, parse_soundtheme, read_xml, speech_field
from ._svg_sprites import SvgScene, visible_fraction

__all__ = [
    "DEFAULT_ROOT", "PACKAGE", "WORDS", "build_ktuberling", "english_word", "parse_soundtheme", "parse_theme",
]  # fmt: skip

NAME = "ktuberling"
PACKAGE = "ktuberling-data"
DEFAULT_ROOT = "/usr/share/ktuberling"
BUILDER_VERSION = "2"  # 2: an inherited gradient paints every use in a sprite (svg_process.references_resolved_once)
MIN_VISIBLE = 0.01

_PREFIXES = ("robot_workshop_", "butterflies_", "pizzeria_", "egypt_", "moon_", "xmas_", "tv_", "tux-")
WORDS: dict[str, str] = {
    "bow": "bow tie",
    "egypt_palmtree": "palm tree",
    "egypt_sphynx": "sphinx",
    "moon_fallingstar": "falling star",
    "pizzeria_brocolli": "broccoli",
    "tv_fireengine": "fire engine",
    "tv_volley_net": "volleyball net",
    "tux-dowe": "dove",
    "tux-fly": "flying dove",
    "tux-shoot": "bow and arrow",
    "tux-note": "musical note",
    "tux-notes": "musical notes",
    "tux-wanted": "wanted poster",
    "frier-tux": "friar tux",
    "sherif-tux": "sheriff tux",
    "whitch-tux": "witch tux",
    "xmas_ball": "christmas ball",
    "xmas_tree": "christmas tree",
    "xmas_lights": "christmas lights",
}
_OBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WS_RE = re.compile(r"\s+")


def english_word(sound: str) -> str:
    """``pizzeria_olive`` -> ``olive``; ``tv_breakdown_lorry`` -> ``breakdown lorry``; :data:`WORDS` first."""
    if sound in WORDS:
        return WORDS[sound]
    s = sound
    for p in _PREFIXES:
        if s.startswith(p) and len(s) > len(p):
            s = s[len(p) :]
            break
    return _WS_RE.sub(" ", s.replace("_", " ").replace("-", " ")).strip().lower()


def parse_theme(path: str | os.PathLike[str]) -> tuple[str, str | None, list[tuple[str, str]]]:
    """A ``.theme`` file -> (SVG file name, ``.desktop`` file name, [(object name, sound name)])."""
    p = Path(path)
    root = read_xml(p, "KTuberling theme")
    if root.tag != "playground" or not root.get("gameboard"):
        raise DataError(f"{p}: not a KTuberling theme (no <playground gameboard=...>)")
    objects = [(o.get("name") or "", o.get("sound") or "") for o in root.iter("object")]
    return root.get("gameboard"), root.get("desktop"), objects


def _desktop_name(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"^Name=(.+)$", text, re.M)
    return m.group(1).strip() if m else None


# --------------------------------------------------------------------------- build


def build_ktuberling(
    out_dir: str | os.PathLike[str],
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    themes: Sequence[str] | None = None,
    limit: int | None = None,
    size: int = 256,
    progress: bool = True,
) -> CorpusSummary:
    """Build the KTuberling corpus into ``out_dir`` (see the module docstring for the rules).

    ``root``: a folder laid out like ``/usr/share/ktuberling`` (``pics/``,
    ``sounds/``); ``themes``: theme file stems to include (default all);
    ``limit``: the first N objects of each theme, for quick checks.
    """
    src = Path(root)
    if not src.exists() and src.absolute() == Path(DEFAULT_ROOT):
        ensure_debian_package(PACKAGE, DEFAULT_ROOT)
    pics = src / "pics"
    if not pics.is_dir():
        raise DataError(
            f"{pics} does not exist: install the Debian package with `sudo apt-get install -y {PACKAGE}` "
            f"(it installs {DEFAULT_ROOT}), or pass a folder laid out like it."
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    available = sorted(p.stem for p in pics.glob("*.theme"))
    if themes is not None:
        unknown = sorted(set(themes) - set(available))
        if unknown:
            there = ", ".join(available) or "none"
            raise DataError(f"{pics}: no theme {', '.join(unknown)} (there are: {there})")
        available = [t for t in available if t in set(themes)]
    if not available:
        raise DataError(f"{pics}: no *.theme files")

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, src.absolute(), available, limit, size, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path, out_dir: Path, src: Path, theme_stems: list[str], limit: int | None, size: int, prog: Any
) -> CorpusSummary:
    pics, sounds = src / "pics", src / "sounds"
    problems: Counter[str] = Counter()
    bad_files: dict[str, str] = {}
    langs = load_soundthemes(sounds, problems, bad_files)
    speech = Recordings(tmp, sounds, langs, problems)
    skipped: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    theme_info: dict[str, dict[str, Any]] = {}
    used_sounds: set[str] = set()

    parsed: list[tuple[str, str, str | None, list[tuple[str, str]]]] = []
    for stem in theme_stems:
        try:
            board, desktop, objects = parse_theme(pics / f"{stem}.theme")
        except DataError as e:
            skipped.setdefault("bad_theme", []).append(stem)
            bad_files[f"{stem}.theme"] = stable_message(str(e), pics)
            continue
        parsed.append((stem, board, desktop, objects[:limit] if limit else objects))
    for p in sorted(pics.glob("*.theme")):  # every theme, built or not: which recordings no theme uses
        try:
            used_sounds.update(s for _, s in parse_theme(p)[2])
        except DataError:
            pass  # reported above when the theme is built
    total = sum(len(p[3]) for p in parsed)
    task = prog.add_task("cutting sprites", total=total) if prog is not None else None
    for stem, board, desktop, objects in parsed:
        title = _desktop_name(pics / desktop) if desktop else None
        if title is None:
            problems["theme_without_name"] += 1
        theme_info[stem] = {"name": title or stem, "scene": board, "objects": len(objects), "records": 0}
        try:
            scene: SvgScene | None = SvgScene(pics / PurePosixPath(board).name)
        except DataError as e:
            scene = None
            bad_files[board] = stable_message(str(e), pics)
        seen: set[str] = set()
        for name, sound in objects:
            if prog is not None:
                prog.advance(task)
            rid = f"{stem}/{name}"
            why = _object_problem(name, sound, seen, scene)
            seen.add(name)
            if why is not None:
                skipped.setdefault(why, []).append(rid)
                continue
            try:
                img = scene.render(name, size)  # type: ignore[union-attr]
            except DataError as e:
                skipped.setdefault("bad_render", []).append(rid)
                bad_files[rid] = stable_message(str(e), pics)
                continue
            if img is None:
                skipped.setdefault("blank_render", []).append(rid)
                continue
            if visible_fraction(img) < MIN_VISIBLE:
                skipped.setdefault("invisible_on_white", []).append(rid)
                continue
            rel = f"media/images/{stem}/{name}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            img.save(tmp / rel, format="PNG")
            word = english_word(sound)
            rec: dict[str, Any] = {"id": rid, "split": hash_split(word), "text": word, "image": rel}
            for clip in speech.clips(sound):
                rec[clip.field] = clip.rel
            rec["labels"] = {"theme": stem, "sound": sound}
            records.append(rec)
            theme_info[stem]["records"] += 1
    return _finish(
        tmp, out_dir, src, records, skipped, problems, bad_files, speech, theme_info, used_sounds, size, limit
    )


def _object_problem(name: str, sound: str, seen: set[str], scene: SvgScene | None) -> str | None:
    if scene is None:
        return "bad_scene"
    if not _OBJECT_RE.match(name):
        return "bad_object_name"
    if name in seen:
        return "duplicate_object"
    if not sound:
        return "no_sound_name"
    if not scene.has(name):
        return "not_in_scene"
    return None


def _finish(
    tmp: Path,
    out_dir: Path,
    src: Path,
    records: list[dict[str, Any]],
    skipped: dict[str, list[str]],
    problems: Counter[str],
    bad_files: dict[str, str],
    speech: Recordings,
    theme_info: dict[str, dict[str, Any]],
    used_sounds: set[str],
    size: int,
    limit: int | None,
) -> CorpusSummary:
    clips = [c for c in speech.done.values() if c is not None]
    per_lang: dict[str, dict[str, int]] = {}
    for (lang, _sound), c in sorted(speech.done.items()):
        if c is not None:
            d = per_lang.setdefault(lang, {"clips": 0, "records": 0})
            d["clips"] += 1
    for lang, d in per_lang.items():
        d["records"] = sum(1 for r in records if speech_field(lang) in r)
    all_sounds = {s for m in speech.langs.values() for s in m}
    default = src == Path(DEFAULT_ROOT)
    version = debian_package_version(PACKAGE) if default else "unknown"
    meta = {
        "description": "KTuberling (KDE) sprites cut from its themed SVG scenes, each with its English "
        "word as text and human recordings of the word in ~25 languages as speech.",
        "source": {"package": PACKAGE, "version": version, "root": str(src), "license": "GPL-2+"},
        "builder": {"module": __name__, "version": BUILDER_VERSION, "size": size, "limit": limit},
        "media": "sprites rendered into media/images/ (RGBA PNG, transparent); "
        "recordings copied into media/sounds/",
        "split": "hash_split(English word): 70/10/20, every sprite of a word in one split",
        "themes": theme_info,
        "words": {s: english_word(s) for s in sorted(used_sounds)},
        "speech": {
            "languages": len(per_lang),
            "clips": len(clips),
            "seconds_total": round(sum(c.seconds for c in clips), 1),
            "per_language": per_lang,
            "same_as_other_language": dict(sorted(speech.same_as.items())),
        },
        "unused_sounds": sorted(all_sounds - used_sounds),
        "missing_files": sorted(speech.missing),
        "bad_audio": dict(sorted(speech.bad_audio.items())),
        "bad_files": dict(sorted(bad_files.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems, max_ids=200)
    write_license(
        tmp,
        {PACKAGE: debian_copyright_path(PACKAGE)} if default else {},
        fallback="KTuberling data (pictures and sounds) (c) the KTuberling developers (KDE), GPL-2+.",
        source_md=(
            "# KTuberling corpus\n\n"
            f"* Pictures and recordings: KTuberling's data (`{src}`, Debian `{PACKAGE}` {version}),\n"
            "  GPL-2+: the PNGs in media/images/ are renderings of elements of its SVG scenes;\n"
            "  media/sounds/ holds copies of its recordings, laid out as in the package.\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
    )
    return summary



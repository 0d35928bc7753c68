"""Noto Color Emoji as an image / text corpus: every single-code-point emoji, drawn.

Sources (Debian packages, installed when missing and running as root):

* ``fonts-noto-color-emoji`` -- ``/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf``
  (SIL OFL 1.1), the pictures.  A CBDT bitmap font: FreeType only draws it at
  its one strike size, 109 (Pillow ``ImageFont.truetype(path, 109)``, drawn
  with ``embedded_color=True``: 136 x 128 pixel glyphs).
* ``unicode-data`` -- ``/usr/share/unicode/emoji/emoji-test.txt`` (Unicode
  data license), the list of emoji with their CLDR short names and their
  *group* and *subgroup* (``Smileys & Emotion`` / ``face-smiling``).  This is
  Unicode's own grouping, offline, no PyPI package needed; Debian 12 ships
  version 15.0, the version of Noto Color Emoji 2.042.

Rules (numbers for emoji-test 15.0 and Noto Color Emoji 2.042)
---------------------------------------------------------------

**Which emoji.**  An entry of ``emoji-test.txt`` is a *single-code-point
emoji* when its code points, less the emoji presentation selector U+FE0F,
are one code point (``263A FE0F`` and ``263A`` are both U+263A smiling face).
That is 1,386 code points: faces, animals, objects, symbols, and the 9
*components* (5 skin-tone swatches, 4 hair styles).  Flags, keycaps, ZWJ
sequences and skin-tone variants are sequences: not included.  Each code
point is one record, whatever its statuses; its name, group and subgroup are
those of its first entry in the file (they are the same for all its
entries).

**Image.**  The glyph is drawn on a transparent canvas, centred on a square
of side max(width, height) (136 x 136), and saved as ``media/<hex>.png``
(RGBA; :func:`anybind.data.media.load_image` composites it on white).  A code
point the font has no glyph for (its cmap, read with fontTools) is skipped
as ``not_in_font``; a drawing with no visible pixel as ``blank_render``.

**Text.**  The CLDR short name, cleaned: lower case (``OK hand`` -> ``ok
hand``, ``T-Rex`` -> ``t-rex``), curly quotes removed (``Japanese “here”
button`` -> ``japanese here button``), whitespace collapsed.  With
``article=True`` (off by default) it gets ``a``/``an`` in front (``a
grinning face``, ``an owl``, ``a unicorn``); names whose head noun looks
plural (``sparkles``, ``hundred points``) are left as they are.  The Unicode
character name (``GRINNING FACE``, from Python's :mod:`unicodedata`, absent
for code points newer than its Unicode version) and the code point go to
``meta``.

**Other languages and keywords.**  From the Unicode CLDR annotations
(Debian ``unicode-cldr-core``; ``cldr_dir=None`` leaves them out): the
emoji's name in every CLDR locale as ``text_<locale>`` (``text_fr``,
``text_pt_pt``: a sub-locale only where it differs from its parent) and
its English keywords as ``text_keywords`` (``face, grin, grinning face``);
rules in :mod:`anybind.corpora._cldr`.  ``text`` is unchanged: CLDR 41's
English names are those of ``emoji-test.txt`` for every emoji both have.
Emoji newer than the CLDR version (21 of emoji 15.0 for CLDR 41) have
neither; they are listed in ``corpus.json`` (``cldr.without_annotation``).

**Labels.**  ``group`` (10 groups) and ``subgroup`` (~100).

**Split.**  :func:`anybind.data.manifest.hash_split` of the cleaned name:
70/10/20, deterministic and stable when emoji are added.

Malformed lines of ``emoji-test.txt`` are counted in ``problems``
(``emoji_test_line_unparsed``) and skipped.  The build is atomic and
deterministic like :mod:`anybind.corpora.tuxpaint` (same inputs, same bytes).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, write_license
from ._cldr import CLDR_PACKAGE, DEFAULT_CLDR, read_cldr
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package

__all__ = [
    "DEFAULT_CLDR",
    "DEFAULT_EMOJI_TEST",
    "DEFAULT_FONT",
    "EmojiEntry",
    "build_emoji",
    "clean_emoji_name",
    "parse_emoji_test",
]

NAME = "emoji"
BUILDER_VERSION = "2"  # 2: CLDR captions
FONT_PACKAGE = "fonts-noto-color-emoji"
DATA_PACKAGE = "unicode-data"
DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
DEFAULT_EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
_CLDR_EN = f"{DEFAULT_CLDR}/annotations/en.xml"
FONT_SIZE = 109  # the only strike of Noto Color Emoji's CBDT bitmaps

_LINE_RE = re.compile(
    r"^([0-9A-Fa-f]{4,6}(?:\s+[0-9A-Fa-f]{4,6})*)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E(\d+\.\d+)\s+(.+?)\s*$"
)
_QUOTES = '“”‘’"«»'
_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class EmojiEntry:
    codepoint: int
    name: str  # CLDR short name as in emoji-test.txt
    group: str
    subgroup: str
    version: str  # emoji version, "1.0"
    statuses: tuple[str, ...]


def parse_emoji_test(text: str, problems: Counter[str] | None = None) -> list[EmojiEntry]:
    """The single-code-point emoji of an ``emoji-test.txt``, in file (CLDR) order."""
    problems = problems if problems is not None else Counter()
    group = subgroup = ""
    found: dict[int, dict[str, Any]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*(group|subgroup):\s*(.+)$", line)
            if m:
                if m.group(1) == "group":
                    group, subgroup = m.group(2).strip(), ""
                else:
                    subgroup = m.group(2).strip()
            continue
        m = _LINE_RE.match(line)
        if not m:
            problems["emoji_test_line_unparsed"] += 1
            continue
        cps = [int(c, 16) for c in m.group(1).split() if int(c, 16) != 0xFE0F]
        if len(cps) != 1:
            continue  # a sequence (flag, keycap, ZWJ, skin tone variant)
        cp = cps[0]
        if cp in found:
            found[cp]["statuses"].append(m.group(2))
            continue
        found[cp] = {
            "name": m.group(4),
            "group": group,
            "subgroup": subgroup,
            "version": m.group(3),
            "statuses": [m.group(2)],
        }
    return [
        EmojiEntry(cp, v["name"], v["group"], v["subgroup"], v["version"], tuple(v["statuses"]))
        for cp, v in found.items()
    ]


def clean_emoji_name(name: str, article: bool = False) -> str:
    """``Japanese “here” button`` -> ``japanese here button`` (``article``: ``a japanese here button``)."""
    text = "".join(" " if c in _QUOTES else c for c in name)
    text = _WS_RE.sub(" ", text).strip().lower()
    if article and text and not _looks_plural(text):
        text = ("an " if _vowel_sound(text) else "a ") + text
    return text


# vowel letters read as "you"/"wun": a unicorn, a euro banknote, a one-piece swimsuit
_CONSONANT_SOUND = ("uni", "eu", "one", "use", "ufo", "ewe")


def _vowel_sound(text: str) -> bool:
    return text[0] in "aeiou" and not text.startswith(_CONSONANT_SOUND)


def _looks_plural(text: str) -> bool:
    """Whether the head noun looks plural: ``sparkles``, ``hundred points`` get no article.

    The head is the last word before ``with``/``of``/``in``/``on``/``for``
    (``face with tears of joy`` -> ``face``); a guess, the article is optional.
    """
    head = re.split(r" (?:with|of|in|on|for|and) ", text, maxsplit=1)[0].split()[-1]
    return head.endswith("s") and not head.endswith(("ss", "us", "is", "'s"))


# --------------------------------------------------------------------------- rendering


def _font_cmap(font_path: Path) -> set[int]:
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(font_path), lazy=True) as f:
            return set(f["cmap"].getBestCmap())
    except (TTLibError, OSError, KeyError, AssertionError) as e:
        raise DataError(f"{font_path}: not a readable font ({type(e).__name__}: {e})") from None


def _render(font: Any, ch: str):
    """The glyph of ``ch`` centred on a transparent square, or None when nothing is drawn."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(ch)
    w, h = right - left, bottom - top
    if w <= 0 or h <= 0:
        return None
    glyph = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((-left, -top), ch, font=font, embedded_color=True)
    if glyph.getchannel("A").getbbox() is None:
        return None
    side = max(w, h)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(glyph, ((side - w) // 2, (side - h) // 2))
    return canvas


# --------------------------------------------------------------------------- build


def _resolve(path: str | os.PathLike[str], default: str, package: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file() and p.absolute() == Path(default) and not p.exists():
        ensure_debian_package(package, default)
    if not p.is_file():
        raise DataError(
            f"{what} {p} does not exist: install the Debian package with "
            f"`sudo apt-get install -y {package}` (it installs {default}), or pass a path to a copy."
        )
    return p.absolute()


def build_emoji(
    out_dir: str | os.PathLike[str],
    font_path: str | os.PathLike[str] = DEFAULT_FONT,
    emoji_test: str | os.PathLike[str] = DEFAULT_EMOJI_TEST,
    cldr_dir: str | os.PathLike[str] | None = DEFAULT_CLDR,
    article: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> CorpusSummary:
    """Build the emoji corpus into ``out_dir`` (see the module docstring for the rules).

    ``limit`` keeps the first N emoji of ``emoji-test.txt`` (CLDR order), for
    quick checks; ``cldr_dir``: CLDR's ``common/`` folder (``None``: no
    ``text_<locale>`` / ``text_keywords``).  Missing default inputs are
    installed (as root) or named in a :class:`DataError` with the ``apt-get``
    command.
    """
    font = _resolve(font_path, DEFAULT_FONT, FONT_PACKAGE, "emoji font")
    test = _resolve(emoji_test, DEFAULT_EMOJI_TEST, DATA_PACKAGE, "emoji list")
    cldr: Path | None = None
    if cldr_dir is not None:  # the English file stands for the folder: the one every build needs
        en = _resolve(Path(cldr_dir) / "annotations" / "en.xml", _CLDR_EN, CLDR_PACKAGE, "CLDR annotations")
        cldr = en.parent.parent
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, font, test, cldr, article, limit, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path,
    out_dir: Path,
    font_path: Path,
    test_path: Path,
    cldr_dir: Path | None,
    article: bool,
    limit: int | None,
    prog: Any,
) -> CorpusSummary:
    from PIL import ImageFont

    problems: Counter[str] = Counter()
    try:
        text = test_path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{test_path}: unreadable emoji list ({e})") from None
    entries = parse_emoji_test(text, problems)
    if not entries:
        raise DataError(f"{test_path}: no emoji found (is it Unicode's emoji-test.txt?)")
    if limit is not None:
        entries = entries[:limit]
    cmap = _font_cmap(font_path)
    cldr = read_cldr(cldr_dir, {chr(e.codepoint) for e in entries}, problems) if cldr_dir else None
    try:
        font = ImageFont.truetype(str(font_path), FONT_SIZE)
    except OSError as e:
        raise DataError(
            f"{font_path}: FreeType cannot open it at size {FONT_SIZE} ({e}); "
            "a CBDT color font such as Noto Color Emoji only draws at its strike size"
        ) from None

    media = tmp / "media"
    media.mkdir()
    task = prog.add_task("rendering emoji", total=len(entries)) if prog is not None else None
    skipped: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    no_cldr: list[str] = []
    for e in entries:
        if prog is not None:
            prog.advance(task)
        rid = f"U+{e.codepoint:04X}"
        if e.codepoint not in cmap:
            skipped.setdefault("not_in_font", []).append(rid)
            continue
        img = _render(font, chr(e.codepoint))
        if img is None:
            skipped.setdefault("blank_render", []).append(rid)
            continue
        name = clean_emoji_name(e.name, article=article)
        if not name:
            skipped.setdefault("no_name", []).append(rid)
            continue
        rel = f"media/{e.codepoint:04x}.png"
        img.save(tmp / rel, format="PNG")
        meta: dict[str, Any] = {"codepoint": rid, "emoji_version": e.version, "cldr_name": e.name}
        uname = unicodedata.name(chr(e.codepoint), None)
        if uname:
            meta["unicode_name"] = uname
        split = hash_split(clean_emoji_name(e.name))
        rec: dict[str, Any] = {"id": rid, "split": split, "text": name, "image": rel}
        if cldr is not None:
            rec.update(cldr.captions(chr(e.codepoint), e.name))
            if cldr.name("en", chr(e.codepoint)) is None:
                no_cldr.append(rid)
        rec["labels"] = {"group": e.group, "subgroup": e.subgroup}
        rec["meta"] = meta
        records.append(rec)

    source = {
        "packages": {
            FONT_PACKAGE: _version(FONT_PACKAGE, font_path, DEFAULT_FONT),
            DATA_PACKAGE: _version(DATA_PACKAGE, test_path, DEFAULT_EMOJI_TEST),
        },
        "font": str(font_path),
        "emoji_test": str(test_path),
        "emoji_test_version": _emoji_test_version(text),
        "license": "images: SIL Open Font License 1.1 (Noto Color Emoji); names, groups, CLDR: Unicode license",
    }
    if cldr_dir is not None:
        source["packages"][CLDR_PACKAGE] = _version(CLDR_PACKAGE, cldr_dir, DEFAULT_CLDR)
    groups = Counter(r["labels"]["group"] for r in records)
    meta = {
        "description": "Noto Color Emoji: every single-code-point emoji drawn as a 136x136 PNG, "
        "with its CLDR name as text and its Unicode group/subgroup as labels.",
        "source": source,
        "builder": {"module": __name__, "version": BUILDER_VERSION, "article": article, "limit": limit},
        "media": "rendered into media/ (RGBA PNG, transparent background)",
        "split": "hash_split(cleaned name): 70/10/20",
        "labels": {
            "group": dict(sorted(groups.items())),
            "subgroups": len({r["labels"]["subgroup"] for r in records}),
        },
    }
    if cldr is not None and cldr_dir is not None:
        meta["description"] += (
            " Its name in every CLDR locale as text_<locale> and its English keywords as text_keywords."
        )
        meta["cldr"] = cldr.describe(cldr_dir, records, no_cldr)
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(
        tmp,
        {
            FONT_PACKAGE: debian_copyright_path(FONT_PACKAGE),
            DATA_PACKAGE: debian_copyright_path(DATA_PACKAGE),
            **({CLDR_PACKAGE: debian_copyright_path(CLDR_PACKAGE)} if cldr is not None else {}),
        },
        fallback="Noto Color Emoji (c) Google Inc., SIL Open Font License 1.1.\n"
        "emoji-test.txt (c) Unicode, Inc., Unicode License Agreement - Data Files and Software.",
        source_md=(
            "# Emoji corpus\n\n"
            f"* Pictures: Noto Color Emoji (`{font_path}`, Debian `{FONT_PACKAGE}` "
            f"{source['packages'][FONT_PACKAGE]}), SIL Open Font License 1.1: the PNGs in media/ are\n"
            "  renderings of the font's glyphs.\n"
            f"* Names, groups, subgroups: Unicode `emoji-test.txt` {source['emoji_test_version']} (`{test_path}`, "
            f"Debian `{DATA_PACKAGE}` {source['packages'][DATA_PACKAGE]}), Unicode license.\n"
            + (
                f"* Names in other languages and English keywords: Unicode CLDR {cldr.version} annotations "
                f"(`{cldr_dir}`, Debian `{CLDR_PACKAGE}` {source['packages'][CLDR_PACKAGE]}), Unicode license.\n"
                if cldr is not None
                else ""
            )
            + f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
    )
    return summary


def _version(pkg: str, path: Path, default: str) -> str:
    return debian_package_version(pkg) if path == Path(default) else "unknown"


def _emoji_test_version(text: str) -> str:
    m = re.search(r"^#\s*Version:\s*(\S+)", text, re.M)
    return m.group(1) if m else "unknown"

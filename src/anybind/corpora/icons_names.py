"""Papirus icon names: which names read as English words (the caption rule), and the icon files of a theme folder
with the names that link to them (see :mod:`anybind.corpora.icons`)."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

NAME = "icons"
BUILDER_VERSION = "3"
PACKAGE = "papirus-icon-theme"
DEFAULT_ROOT = "/usr/share/icons/Papirus"
DEFAULT_SIZE_DIR = "64x64"
DEFAULT_CONTEXTS = ("apps", "devices", "mimetypes", "places")
NAME_REASONS = (
    "colour_variant", "reverse_dns", "digits", "app_name", "only_generic", "not_words", "brand", "format"
)  # fmt: skip

#: Tokens that name the freedesktop naming scheme or a desktop, not what the icon shows; dropped before the word
#: check (read off the 64x64 names: ``application-x-``/``vnd.`` MIME prefixes, ``gnome-dev-``, ``gtk-``,
#: ``stock_``, ``cs-`` and ``cs-cat-`` (Cinnamon settings and their categories), ``i-``, ``-icon``, ``-symbolic``...).
GENERIC_TOKENS = frozenset(
    {
        "application", "x", "vnd", "icon", "symbolic", "gnome", "gtk", "kde", "xfce", "stock", "dev", "fs",
        "cs", "cat", "i", "inode", "org", "com", "io", "net", "default",
    }
)  # fmt: skip

#: Papirus' folder colours: ``places/folder-<colour>-*`` and ``user-<colour>-*`` are the default folder's
#: pictures in another colour (26 sets of 74 names).
COLOUR_VARIANTS = frozenset(
    {
        "adwaita", "black", "blue", "bluegrey", "breeze", "brown", "carmine", "custom", "cyan", "darkcyan",
        "deeporange", "green", "grey", "indigo", "magenta", "nordic", "orange", "palebrown", "paleorange", "pink",
        "red", "teal", "violet", "white", "yaru", "yellow",
    }
)  # fmt: skip

#: In ``apps``, a name is kept only when it starts with one of these: the freedesktop Icon Naming
#: Specification's application-icon prefixes (``accessories-calculator``, ``preferences-desktop-keyboard``) or a
#: desktop's own tools (``gnome-chess``, ``cs-keyboard``).  Any other app icon is a program's logo under its
#: brand name, which reads as words too often (``call-of-duty``, ``prison-architect``, ``pocket``): ``app_name``.
APP_PREFIXES = frozenset(
    {
        "accessories", "applications", "help", "internet", "multimedia", "office", "preferences", "system",
        "utilities", "user", "cs", "gnome", "gtk", "kde", "stock", "xfce",
    }
)  # fmt: skip

#: Brand, company, product and program names that the word list accepts in lower case, read off the names the
#: rule kept in builder version 2 (``application-vnd.google-apps.form`` "google apps form", ``application-vnd.adobe
#: .flash.movie`` "adobe flash movie", ``x-office-document``'s link ``ms-word``, ``folder-blue-steam``): the
#: picture is a logo or a product's file, not the thing the word names.  A name with one of these is ``brand``.
BRAND_TOKENS = frozenset(
    {
        "adobe", "affinity", "android", "apple", "audacity", "balsa", "blender", "designer", "dos", "excel",
        "genius", "google", "illustrator", "latex", "linguist", "love", "maxima", "monkey", "ms", "oregano", "palm",
        "plasma", "snap", "steam", "thunderbolt", "tiled", "twitch", "wine", "wolfram",
    }
)  # fmt: skip

#: File-format, MIME and packaging jargon that the word list accepts (``octet stream``, ``riff``, ``source rpm``,
#: ``mime deb``, ``text css``): the name of a format, not of anything drawn.  A name with one is ``format``.
#: Programming languages are not on it (``text python``, ``text ruby``: how a reader names the source file).
FORMAT_TOKENS = frozenset(
    {
        "asp", "css", "cue", "deb", "hip", "markdown", "mime", "mo", "octet", "postscript", "riff", "rpm", "rss",
        "sass", "shorten", "step", "tar", "torrent", "trig", "turtle",
    }
)  # fmt: skip

_SPLIT_RE = re.compile(r"[-_.+]+")
_REVERSE_DNS_RE = re.compile(r"^[a-z]{2,4}\.[A-Za-z0-9]")
_LETTERS_RE = re.compile(r"^[a-z]{2,}$")


def name_tokens(name: str) -> list[str]:
    """``preferences-desktop-keyboard`` -> ``['preferences', 'desktop', 'keyboard']`` (split on ``- _ . +``)."""
    return [t for t in _SPLIT_RE.split(name) if t]


def is_word(token: str, words: frozenset[str]) -> bool:
    t = token.lower()
    if not _LETTERS_RE.match(t):
        return False
    return t in words or (t.endswith("s") and t[:-1] in words)


def name_problem(name: str, context: str, words: frozenset[str]) -> str | None:
    """Why an icon name is not a caption (a reason of :data:`NAME_REASONS`, the first that applies), or None."""
    toks = name_tokens(name)
    low = [t.lower() for t in toks]
    if context == "places" and len(low) >= 2 and low[0] in ("folder", "user") and low[1] in COLOUR_VARIANTS:
        return "colour_variant"
    if _REVERSE_DNS_RE.match(name):
        return "reverse_dns"
    if any(any(c.isdigit() for c in t) for t in toks):
        return "digits"
    if context == "apps" and low and low[0] not in APP_PREFIXES:
        return "app_name"
    left = [t for t in low if t not in GENERIC_TOKENS]
    if not left:
        return "only_generic"
    if not all(is_word(t, words) for t in left):
        return "not_words"
    if any(_in(t, BRAND_TOKENS) for t in left):
        return "brand"
    if any(_in(t, FORMAT_TOKENS) for t in left):
        return "format"
    return None


def _in(token: str, stop: frozenset[str]) -> bool:
    return token in stop or (token.endswith("s") and token[:-1] in stop)


def name_caption(name: str) -> str:
    """The caption of a name that passes :func:`name_problem`: its words in order, lower case, generic ones out."""
    return " ".join(t for t in (x.lower() for x in name_tokens(name)) if t not in GENERIC_TOKENS)


@dataclass
class IconFile:
    """One real SVG file of the theme and every name that shows it (its own and its links')."""

    path: Path
    context: str
    name: str
    aliases: list[str] = field(default_factory=list)  # "<context>/<name>" of the links to it, sorted
    duplicates: list[str] = field(default_factory=list)  # "<context>/<name>" of later files with the same bytes

    @property
    def id(self) -> str:
        return f"{self.context}/{self.name}"

    @property
    def contexts(self) -> set[str]:
        """The contexts the picture is a real file in: its own and its duplicates' (not its links')."""
        return {self.context, *(d.split("/", 1)[0] for d in self.duplicates)}


def scan_theme(base: Path, contexts: tuple[str, ...], limit: int | None) -> tuple[list[IconFile], Counter[str]]:
    """The real ``.svg`` files of ``base/<context>`` (sorted; the first ``limit`` of each context), each with the
    names of the links to it, and the links counted (``total``, ``to_listed_file``, ``broken``, ``outside``:
    pointing out of ``base``, ``to_unlisted_file``: to a file not listed (another context, or past ``limit``)).
    A context folder ``base`` does not have is a :class:`DataError` naming it, never skipped."""
    files: list[IconFile] = []
    link_paths: list[tuple[str, str, Path]] = []
    for ctx in contexts:
        folder = base / ctx
        if not folder.is_dir():
            have = ", ".join(sorted(d.name for d in base.iterdir() if d.is_dir())) if base.is_dir() else "nothing"
            raise DataError(f"{folder}: the icon theme has no context folder {ctx!r} (it has: {have})")
        n = 0
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".svg") or entry.startswith("."):
                continue
            p = folder / entry
            if p.is_symlink():
                link_paths.append((ctx, entry[: -len(".svg")], p))
            elif p.is_file() and (limit is None or n < limit):
                files.append(IconFile(path=p, context=ctx, name=entry[: -len(".svg")]))
                n += 1
    by_real = {os.path.realpath(f.path): f for f in files}
    real_base = os.path.realpath(base)
    links: Counter[str] = Counter()
    for ctx, name, p in link_paths:
        links["total"] += 1
        target = os.path.realpath(p)
        if not os.path.exists(target):
            links["broken"] += 1
        elif not target.startswith(real_base + os.sep):
            links["outside"] += 1
        elif target in by_real:
            links["to_listed_file"] += 1
            by_real[target].aliases.append(f"{ctx}/{name}")
        else:
            links["to_unlisted_file"] += 1
    for f in files:
        f.aliases.sort()
    return files, links

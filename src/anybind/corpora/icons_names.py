"""Icon names: which names read as English words (the caption rule of :mod:`anybind.corpora.icons`; the icon
files of a theme and the names that link to them are read by :mod:`anybind.corpora.icons_themes`)."""

from __future__ import annotations

import re

NAME = "icons"
BUILDER_VERSION = "4"
PACKAGE = "papirus-icon-theme"
DEFAULT_ROOT = "/usr/share/icons/Papirus"
DEFAULT_SIZE_DIR = "64x64"
DEFAULT_CONTEXTS = ("apps", "devices", "mimetypes", "places")
NAME_REASONS = (
    "colour_variant", "reverse_dns", "digits", "app_name", "only_generic", "not_words", "brand", "format", "symbolic"
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
        "purple", "red", "teal", "violet", "white", "yaru", "yellow",
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
        "adobe", "affinity", "android", "apple", "audacity", "balsa", "blender", "cups", "designer", "dos", "excel",
        "fedora", "genius", "glade", "google", "illustrator", "latex", "linguist", "love", "marble", "maxima",
        "mono", "monkey", "ms", "olive", "opera", "oregano", "palm", "plasma", "snap", "steam", "thunderbolt",
        "tiled", "twitch", "wine", "wolfram",
    }
)  # fmt: skip

#: File-format, MIME and packaging jargon that the word list accepts (``octet stream``, ``riff``, ``source rpm``,
#: ``mime deb``, ``text css``): the name of a format, not of anything drawn.  A name with one is ``format``.
#: Programming languages are not on it (``text python``, ``text ruby``: how a reader names the source file).
FORMAT_TOKENS = frozenset(
    {
        "ace", "arc", "asp", "css", "cue", "deb", "hip", "jar", "la", "markdown", "mime", "mo", "octet",
        "postscript", "riff", "rpm", "rss", "sass", "shorten", "step", "tar", "torrent", "trig", "turtle", "zip",
        "zoo",
    }
)  # fmt: skip

_COLOURED = ("folder", "user", "network")
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
    if context == "places" and len(low) >= 2 and (
        (low[0] in _COLOURED and low[1] in COLOUR_VARIANTS)
        or (low[0] in COLOUR_VARIANTS and low[1] in _COLOURED)
        or (low[:2] == ["folder", "color"] and len(low) >= 3 and low[2] in COLOUR_VARIANTS)
    ):
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
    if "symbolic" in low:
        return "symbolic"
    return None


def _in(token: str, stop: frozenset[str]) -> bool:
    return token in stop or (token.endswith("s") and token[:-1] in stop)


def name_caption(name: str) -> str:
    """The caption of a name that passes :func:`name_problem`: its words in order, lower case, generic ones out."""
    return " ".join(t for t in (x.lower() for x in name_tokens(name)) if t not in GENERIC_TOKENS)

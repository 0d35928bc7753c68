"""The icon themes the icons corpus reads (:mod:`anybind.corpora.icons`): where each Debian package puts its
full-colour SVGs per context, and the real files of a theme with the names that link to them.

Each theme draws the freedesktop standard names (``audio-headphones``, ``folder-documents``) in its own style, so
one caption can have several pictures.  Themes lay their folders out in two ways: ``<size>/<context>`` (Papirus,
Tango, Numix) and ``<context>/<size>`` (Breeze, Faenza); :class:`Theme` names each context's folder.  Looked at and
left out (Debian bookworm): ``adwaita-icon-theme`` 43, ``mate-icon-theme``, ``suru-icon-theme`` (every SVG a
``-symbolic`` monochrome glyph; their full-colour icons, where any, are PNGs), ``elementary-xfce-icon-theme`` 0.17
(full-colour icons are PNGs; its SVGs are symbolic).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

_C4 = ("apps", "devices", "mimetypes", "places")


@dataclass(frozen=True)
class Theme:
    """An installed icon theme: its key (ids, labels), Debian package, folder and each context's SVG folder."""

    key: str
    package: str | None
    root: str
    folders: tuple[tuple[str, str], ...]  # (context, folder relative to root)
    licence: str = "see LICENSE"
    upstream: str = ""

    def folder(self, context: str) -> str | None:
        return dict(self.folders).get(context)


def _theme(key: str, package: str, root: str, pattern: str, licence: str, upstream: str, **over: str) -> Theme:
    folders = tuple((c, over.get(c, pattern.format(c=c))) for c in _C4)
    return Theme(key, package, root, folders, licence, upstream)


#: The themes read by name (``--theme``).  Size folders: the largest that holds the full-colour SVGs of most of a
#: context (Breeze's ``apps`` are drawn at 48, its other contexts at 64; Tango and Faenza have ``scalable``).
THEMES = {
    t.key: t
    for t in (
        _theme("papirus", "papirus-icon-theme", "/usr/share/icons/Papirus", "64x64/{c}", "GPL-3",
               "https://github.com/PapirusDevelopmentTeam/papirus-icon-theme"),
        _theme("breeze", "breeze-icon-theme", "/usr/share/icons/breeze", "{c}/64", "LGPL-3+ (parts LGPL-2.1+, BSD)",
               "https://invent.kde.org/frameworks/breeze-icons", apps="apps/48"),
        _theme("faenza", "faenza-icon-theme", "/usr/share/icons/Faenza", "{c}/scalable", "GPL-3+",
               "https://www.gnome-look.org (Faenza icon theme)"),
        _theme("numix", "numix-icon-theme", "/usr/share/icons/Numix", "64/{c}", "GPL-3+",
               "https://github.com/numixproject/numix-icon-theme"),
        _theme("tango", "tango-icon-theme", "/usr/share/icons/Tango", "scalable/{c}", "public domain",
               "http://tango.freedesktop.org/Tango_Icon_Library"),
    )
}  # fmt: skip
DEFAULT_THEMES = ("papirus", "breeze", "faenza", "numix", "tango")


def named_themes(keys: tuple[str | Theme, ...]) -> tuple[Theme, ...]:
    """The themes of ``keys`` (in that order, each once; a :class:`Theme` is taken as it is); an unknown key is a
    :class:`DataError` naming the known ones."""
    out: list[Theme] = []
    for k in keys:
        t = k if isinstance(k, Theme) else THEMES.get(k.lower())
        if t is None:
            raise DataError(f"icons: no icon theme {k!r} (known: {', '.join(THEMES)})")
        if t not in out:
            out.append(t)
    if not out:
        raise DataError(f"icons: no theme to read (known: {', '.join(THEMES)})")
    return tuple(out)


def folder_theme(root: Path, size_dir: str, contexts: tuple[str, ...]) -> Theme:
    """A theme folder of the Papirus layout (``root/<size_dir>/<context>``), keyed by the folder's name."""
    key = root.name.lower() or "theme"
    return Theme(key, None, str(root), tuple((c, f"{size_dir}/{c}") for c in contexts))


@dataclass
class IconFile:
    """One real SVG file of a theme and every name that shows it (its own and its links')."""

    path: Path
    theme: str
    context: str
    name: str
    aliases: list[str] = field(default_factory=list)  # "<context>/<name>" of the links to it, sorted
    duplicates: list[str] = field(default_factory=list)  # ids of later files with the same bytes

    @property
    def id(self) -> str:
        return f"{self.theme}/{self.context}/{self.name}"

    @property
    def contexts(self) -> set[str]:
        """The contexts the picture is a real file in: its own and its duplicates' (not its links')."""
        return {self.context, *(d.split("/")[-2] for d in self.duplicates)}


def scan_theme(
    theme: Theme, contexts: tuple[str, ...], limit: int | None
) -> tuple[list[IconFile], Counter[str], list[str]]:
    """The real ``.svg`` files of the theme's ``contexts`` folders (sorted; the first ``limit`` of each), each with
    the names of the links to it; the links counted (``total``, ``to_listed_file``, ``broken``: dangling,
    ``outside``: out of the theme's folder, ``to_unlisted_file``: another context or past ``limit``); and the
    contexts the theme has no folder for (counted, logged, skipped: a theme need not draw every context)."""
    base = Path(theme.root)
    files: list[IconFile] = []
    link_paths: list[tuple[str, str, Path]] = []
    missing: list[str] = []
    for ctx in contexts:
        rel = theme.folder(ctx)
        folder = base / rel if rel is not None else None
        if folder is None or not folder.is_dir():
            missing.append(ctx)
            log.warning("icon theme %s has no %s folder (%s): skipped", theme.key, ctx, folder or "none listed")
            continue
        n = 0
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".svg") or entry.startswith("."):
                continue
            p = folder / entry
            if p.is_symlink():
                link_paths.append((ctx, entry[: -len(".svg")], p))
            elif p.is_file() and (limit is None or n < limit):
                files.append(IconFile(path=p, theme=theme.key, context=ctx, name=entry[: -len(".svg")]))
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
    return files, links, missing

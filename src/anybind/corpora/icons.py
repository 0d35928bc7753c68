"""Named icons of the Papirus icon theme, drawn, with their names as captions when the names read as words.

Source: the Debian package ``papirus-icon-theme`` (GPL-3; 23 MB download, ~200 MB installed),
``/usr/share/icons/Papirus/<size>/<context>/<name>.svg``.  One size folder (``64x64``: the largest that has
full-colour ``apps``, ``devices``, ``mimetypes`` and ``places``; ``categories`` holds one link) and those four
contexts.  Half the names are symlinks to another file (``audio-x-mp3`` -> ``audio-x-generic``).

Rules (numbers for papirus-icon-theme 20230104-2, 64x64)
---------------------------------------------------------

**Files.**  One record per real ``.svg`` file (5,819), never per link: a link (5,726, all to a listed file) adds
its name to its target's names.  Files with the same bytes as an earlier one (contexts in the order above, names
sorted) are dropped as ``duplicate`` and their names join the earlier file's.  ``unreadable`` and ``bad_render``
(:func:`anybind.data.svg.render_svg` refuses or fails: not an SVG, corrupt) are counted and listed with their
error in ``corpus.json`` ``bad_files``.

**The name rule** (:func:`~anybind.corpora.icons_names.name_problem`; the first that applies is the reason):

1. ``colour_variant``: ``places/folder-<colour>-*`` and ``user-<colour>-*`` with one of Papirus' 26 folder colours
   (:data:`~anybind.corpora.icons_names.COLOUR_VARIANTS`): the default folder's picture in another colour.
2. ``reverse_dns``: an application id (``org.gnome.Calculator``, ``io.github.celluloid_player.Celluloid``).
3. ``digits``: a token with a digit (``libreoffice7.3-math``, ``steam_icon_38700``, ``3dchess``).
4. ``app_name`` (``apps`` only): the first token is not a freedesktop application-icon prefix or a desktop's own
   tools (:data:`~anybind.corpora.icons_names.APP_PREFIXES`: ``accessories``, ``applications``, ``preferences``,
   ``system``, ``utilities``, ``gnome``, ``cs``...): the icon is a program's logo under its brand name, which
   reads as English too often (``call-of-duty``, ``prison-architect``, ``pocket``).  A link from another context
   to a picture whose only real files are in ``apps`` is held to this rule too: ``mimetypes/application-x-glade``
   names the ``apps/glade`` logo (builder version 2; version 1 kept 9 such logos: "glade", "zoom", "jar"...).
5. ``only_generic``: nothing left once the freedesktop-generic tokens are dropped
   (:data:`~anybind.corpora.icons_names.GENERIC_TOKENS`, read off the names: ``application``, ``x``, ``vnd``,
   ``icon``, ``symbolic``, ``gnome``, ``gtk``, ``kde``, ``xfce``, ``stock``, ``dev``, ``fs``, ``cs``, ``cat``, ``i``,
   ``inode``, ``org``, ``com``, ``io``, ``net``, ``default``).
6. ``not_words``: a token left (split on ``- _ . +``) is not an English word: an entry written in lower case in
   ``/usr/share/dict/words`` (Debian ``wamerican``; an ``s`` plural tolerated; proper nouns and acronyms such as
   ``Firefox``, ``Linux``, ``PDF`` do not count; at least two letters).
7. ``brand`` (builder version 3): a token left names a brand, company, product or program the word list also
   accepts as a lower-case word (:data:`~anybind.corpora.icons_names.BRAND_TOKENS`: ``google``, ``adobe``, ``ms``,
   ``android``, ``steam``, ``blender``, ``plasma``...): the picture is a logo or a product's file, not what the
   word names (``application-vnd.google-apps.form``, ``application-vnd.adobe.flash.movie``, ``folder-steam``).
8. ``format`` (builder version 3): a token left is file-format, MIME or packaging jargon
   (:data:`~anybind.corpora.icons_names.FORMAT_TOKENS`: ``octet``, ``riff``, ``rpm``, ``deb``, ``mime``, ``css``,
   ``tar``...): a format's name, not a picture of anything (``application-octet-stream``, ``application-x-source-rpm``).
   Both lists were read off every caption version 2 kept (335, all contexts, with their links' captions), never
   from a retrieval score; a token is on them only when every kept name holding it used it in that sense.  An ``s``
   plural counts.  Programming languages are not on them (``text python``, ``text ruby``: a known limit).

**Caption.**  The words left, in order, lower case: ``audio-headphones`` -> ``audio headphones``,
``gnome-dev-keyboard`` -> ``keyboard``, ``text-x-python`` -> ``text python``.  A file is kept when any of its names
passes: its own name's caption first, else its first passing alias (sorted); the other distinct passing captions go
to ``text_aliases`` (``"; "``-joined).  A file none of whose names passes is dropped with its own name's reason.
Links' names are counted by reason in ``corpus.json`` ``alias_rule``.  Known limits: a few app-prefixed logos pass
(``gnome-pie`` "pie", ``gnome-do`` "do"), mimetype captions read like file types (``text python``, ``flash video``:
``flash`` stays off the brand list for ``media-flash``, a flash memory card), not like objects.  Version 2 kept 47
more files whose every passing name held a brand or format token (30 of its 70 mimetypes: "google apps form",
"adobe flash movie", "ms access", "octet stream", "source rpm"; 8 places: "folder steam", "folder tar"; 9 apps:
"preferences desktop plasma", "twitch"); 3 kept files lost their first caption to the lists and are captioned by
the next (``application-x-iso`` "cue" -> "raw disk image", ``audio-x-flac`` "shorten" -> "audio wave",
``application-x-font-ttf`` "font dos" -> "font collection", which moves it from train to test).

**Image.**  The SVG drawn by the project's renderer (:func:`anybind.data.svg.render_svg`) at ``size`` (256)
pixels wide, a transparent PNG ``media/<context>/<name>.png`` (:func:`anybind.data.media.load_image` puts it on
white).  **Labels**: ``context``.  **Split**: :func:`anybind.data.manifest.hash_split` of the caption.
``limit``: only the first N real files of each context (quick looks and tests).

**Counts** (version 3, the whole 64x64 set, ~5 s): 5,819 files, 20 ``duplicate``; dropped by the name rule
``app_name`` 2,741, ``colour_variant`` 1,877, ``reverse_dns`` 456, ``digits`` 224, ``not_words`` 189, ``brand`` 13,
``format`` 10, ``only_generic`` 1; kept 288 (208 train, 24 val, 56 test; apps 175, places 50, mimetypes 40,
devices 23), 113 of them captioned through a link's name (the theme files a picture under one name and links the
standard one to it: ``folder-blue-documents`` is the file, ``folder-documents`` the link), 123 with
``text_aliases``.  Of the 5,726 links' names 424 pass (version 2: 476; the 52 are ``brand`` 35, ``format`` 17; a
link to an app logo counts as ``app_name``, rule 4, before the later rules).  (Version 2: 335 kept, 246 / 28 / 61.)
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package
from .icons_names import (
    BUILDER_VERSION,
    DEFAULT_CONTEXTS,
    DEFAULT_ROOT,
    DEFAULT_SIZE_DIR,
    NAME,
    NAME_REASONS,
    PACKAGE,
    IconFile,
    name_caption,
    name_problem,
    scan_theme,
)
from .words import DEFAULT_WORDS, ensure_words, load_words, missing_words_message

__all__ = ["DEFAULT_CONTEXTS", "DEFAULT_ROOT", "PACKAGE", "build_icons", "name_caption", "name_problem"]

DEFAULT_IMAGE_SIZE = 256
FALLBACK_LICENSE = "Papirus icon theme: GPL-3 (https://github.com/PapirusDevelopmentTeam/papirus-icon-theme)."
_APP_NAME_RULE = NAME_REASONS.index("app_name")


def build_icons(
    out_dir: str | os.PathLike[str],
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    size_dir: str = DEFAULT_SIZE_DIR,
    contexts: tuple[str, ...] = DEFAULT_CONTEXTS,
    words: str | os.PathLike[str] = DEFAULT_WORDS,
    limit: int | None = None,
    size: int = DEFAULT_IMAGE_SIZE,
    install: bool = True,
    progress: bool = True,
) -> CorpusSummary:
    """Build the icons corpus into ``out_dir`` (see the module docstring); missing default inputs are installed
    (``install`` and root), or named in one line with the command that installs them."""
    for key, value in (("limit", limit), ("size", size)):
        if value is not None and value < 1:
            raise DataError(f"icons: {key} must be a whole number >= 1, got {value}")
    src = Path(root)
    if install and src.absolute() == Path(DEFAULT_ROOT) and not src.exists():
        ensure_debian_package(PACKAGE, DEFAULT_ROOT)
    base = src / size_dir
    if not base.is_dir():
        raise DataError(
            f"icon theme folder {base} does not exist: install it with `sudo apt-get install -y {PACKAGE}` "
            f"(it installs {DEFAULT_ROOT}), or pass root= pointing to a copy"
        )
    wp = ensure_words(words) if install else Path(words)
    word_list = load_words(wp, lower_only=True)
    if word_list is None:
        raise DataError(f"the English word list of the name rule: {missing_words_message(wp)}")
    base = base.absolute()

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, base, tuple(contexts), word_list, limit, size, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _captions(
    f: IconFile, words: frozenset[str], alias_rule: Counter[str], logo: bool
) -> tuple[str | None, list[str]]:
    """(the reason the file's own name fails or None, the distinct captions of its passing names, own first).

    A link's name is judged in the link's context and, with ``logo`` (the picture's only real files are in
    ``apps``), also by the apps rule: the picture is a program's logo whatever context links to it
    (``mimetypes/application-x-glade`` -> the ``apps/glade`` logo); a picture that is also a real file of another
    context (``apps/skanlite`` = ``devices/scanner``) is not only a logo."""
    own = name_problem(f.name, f.context, words)
    caps = [name_caption(f.name)] if own is None else []
    for a in f.aliases:
        ctx, name = a.split("/", 1)
        why = name_problem(name, ctx, words)
        if logo and ctx != "apps" and (why is None or NAME_REASONS.index(why) > _APP_NAME_RULE):
            why = name_problem(name, "apps", words)  # the first rule that applies, the apps rule (4) included
        alias_rule[why or "kept"] += 1
        if why is None and name_caption(name) not in caps:
            caps.append(name_caption(name))
    return own, caps


def _build_into(
    tmp: Path,
    out_dir: Path,
    base: Path,
    contexts: tuple[str, ...],
    words: frozenset[str],
    limit: int | None,
    size: int,
    prog: Any,
) -> CorpusSummary:
    from ..data.limits import current_limits
    from ..data.svg import render_svg

    skipped: dict[str, list[str]] = {}
    bad_files: dict[str, str] = {}
    files, links = scan_theme(base, contexts, limit)
    if not files:
        raise DataError(f"{base}: no .svg icon file in {', '.join(contexts)} (a PNG theme such as Adwaita or hicolor "
                        "is not read; pass root= a Papirus-style SVG theme)")
    task = prog.add_task("reading icons", total=len(files)) if prog is not None else None
    first: dict[str, IconFile] = {}
    datas: dict[str, bytes] = {}
    duplicate_of: dict[str, str] = {}
    unique: list[IconFile] = []
    for f in files:
        if prog is not None:
            prog.advance(task)
        try:
            data = f.path.read_bytes()
        except OSError as e:
            skipped.setdefault("unreadable", []).append(f.id)
            bad_files[f.id] = f"unreadable ({e.strerror or e})"
            continue
        h = hashlib.sha256(data).hexdigest()
        if h in first:
            keep = first[h]
            skipped.setdefault("duplicate", []).append(f.id)
            duplicate_of[f.id] = keep.id
            keep.duplicates.append(f.id)
            keep.aliases = sorted({*keep.aliases, f.id, *f.aliases})
            continue
        first[h] = f
        datas[f.id] = data
        unique.append(f)

    alias_rule: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    lim = current_limits()
    records: list[dict[str, Any]] = []
    rtask = prog.add_task("drawing icons", total=len(unique)) if prog is not None else None
    for f in unique:
        if prog is not None:
            prog.advance(rtask)
        own, caps = _captions(f, words, alias_rule, f.contexts == {"apps"})
        if not caps:
            skipped.setdefault(own or "not_words", []).append(f.id)
            continue
        if own is not None:
            problems["caption_from_alias"] += 1
        try:
            png = render_svg(datas[f.id], f"{f.context}/{f.path.name}", size, lim)
        except DataError as e:
            skipped.setdefault("bad_render", []).append(f.id)
            bad_files[f.id] = stable_message(str(e), base)
            continue
        rel = Path("media", f.context, f.name + ".png")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(png)
        rec: dict[str, Any] = {"id": f.id, "split": hash_split(caps[0]), "text": caps[0]}
        if len(caps) > 1:
            rec["text_aliases"] = "; ".join(caps[1:])
        rec["image"] = rel.as_posix()
        rec["labels"] = {"context": f.context}
        records.append(rec)

    name_drops = {r: len(skipped.get(r, [])) for r in NAME_REASONS}
    if not records:
        why = ", ".join(f"{k} {len(v)}" for k, v in sorted(skipped.items()) if v)
        raise DataError(f"icons: no icon kept from the {len(files)} .svg files of {base} ({why})")
    version = debian_package_version(PACKAGE) if base == Path(DEFAULT_ROOT, DEFAULT_SIZE_DIR) else "unknown"
    source = dict(package=PACKAGE, version=version, theme_dir=str(base), contexts=list(contexts))
    source["license"] = "GPL-3 (the package's copyright file is copied into LICENSE)"
    source["upstream"] = "https://github.com/PapirusDevelopmentTeam/papirus-icon-theme"
    meta = {
        "description": "Papirus icons drawn as PNGs with their names as captions, kept only when a name reads as "
        "English words (rule in the builder's docstring).",
        "source": source,
        "builder": {"module": __name__, "version": BUILDER_VERSION, "size": size, "limit": limit},
        "media": f"PNG {size} px wide drawn by anybind.data.svg.render_svg into media/<context>/",
        "split": "hash_split(caption): 70/10/20, same caption -> same split",
        "files": {"svg": len(files), "unique": len(unique), "links": dict(sorted(links.items()))},
        "name_rule": {"dropped": name_drops, "dropped_total": sum(name_drops.values())},
        "alias_rule": dict(sorted(alias_rule.items())),
        "bad_files": dict(sorted(bad_files.items())),
        "duplicate_of": dict(sorted(duplicate_of.items())),
    }
    source_md = (
        "# Icons corpus\n\n"
        f"* Icons: Papirus icon theme, Debian `{PACKAGE}` ({base}), GPL-3: the images are drawings of its\n"
        "  SVGs and stay under GPL-3 (LICENSE holds the package's copyright file).\n"
        "* Text: each icon's name read as words; names that do not read as words are dropped\n"
        "  (counts in corpus.json, `name_rule` and `alias_rule`).\n"
        f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
    )
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(tmp, {PACKAGE: debian_copyright_path(PACKAGE)}, FALLBACK_LICENSE, source_md)
    return summary

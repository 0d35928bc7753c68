"""Named icons of freedesktop icon themes, drawn, with their names as captions when the names read as words.

Sources (builder version 4; :mod:`anybind.corpora.icons_themes`): five Debian icon themes that draw the freedesktop
standard names (``audio-headphones``, ``folder-documents``) each in its own full-colour SVG style, so one caption
has up to five pictures.  ``themes`` picks them (default all five; ``--theme papirus`` is the Papirus-only source of
version 3); each theme's folder per context (``apps``, ``devices``, ``mimetypes``, ``places``):

=========  ========================  =====================  ===============================  ==================
theme      package (download)        licence                folders                          kept / real files
=========  ========================  =====================  ===============================  ==================
papirus    papirus-icon-theme 23 MB  GPL-3                  ``64x64/<context>``              288 / 5,819
breeze     breeze-icon-theme 3 MB    LGPL-3+ (parts 2.1+)   ``<context>/64``, apps ``/48``    149 / 666
faenza     faenza-icon-theme 17 MB   GPL-3+                 ``<context>/scalable``           134 / 503
numix      numix-icon-theme 2 MB     GPL-3+                 ``64/<context>``                 154 / 776
tango      tango-icon-theme 1 MB     public domain          ``scalable/<context>``           73 / 78
=========  ========================  =====================  ===============================  ==================

Size folders: the largest holding most of a context's full-colour SVGs (Breeze draws ``apps`` at 48 only).  Looked
at and left out: Adwaita 43, MATE, Suru (every SVG a ``-symbolic`` monochrome glyph), elementary-xfce 0.17
(full-colour icons are PNGs).  Half the names are symlinks to another file (``audio-x-mp3`` -> ``audio-x-generic``).

Rules (numbers for papirus-icon-theme 20230104-2, 64x64, unless said)
----------------------------------------------------------------------

**Files.**  One record per (theme, real ``.svg`` file) (Papirus 5,819), never per link: a link (5,726, all to a
listed file) adds its name to its target's names; a dangling link is counted (``links.broken``: Numix 3) and
skipped, as is a theme without a folder for a context (``missing_contexts``).  Files with the same bytes as an
earlier one (themes, then contexts in the orders above, names sorted) are dropped as ``duplicate`` and their names
join the earlier file's.  ``unreadable`` and ``bad_render``
(:func:`anybind.data.svg.render_svg` refuses or fails: not an SVG, corrupt) are counted and listed with their
error in ``corpus.json`` ``bad_files``.

**The name rule** (:func:`~anybind.corpora.icons_names.name_problem`; the first that applies is the reason):

1. ``colour_variant``: ``places/folder-<colour>-*`` and ``user-<colour>-*`` with one of Papirus' 26 folder colours
   (:data:`~anybind.corpora.icons_names.COLOUR_VARIANTS`): the default folder's picture in another colour.  Version
   4, for Numix's layout: also ``<colour>-folder-*``, ``<colour>-user-*``, ``<colour>-network*`` and
   ``folder-color-<colour>*``, and Numix's ``purple`` (Numix: 320 files, "blue folder music").
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
   Version 4 added the tokens read the same way off the captions the four new themes kept: brands ``cups``,
   ``fedora``, ``glade``, ``marble``, ``mono``, ``olive``, ``opera``; formats ``ace``, ``arc``, ``jar``, ``la``,
   ``zip``, ``zoo`` (Papirus' kept files do not change).
9. ``symbolic`` (builder version 4): a ``-symbolic`` name is a monochrome glyph, not a drawing (Faenza 14).

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
pixels wide, a transparent PNG ``media/<theme>/<context>/<name>.png`` (:func:`anybind.data.media.load_image`
puts it on white); the id is ``<theme>/<context>/<name>``.  **Labels**: ``context``, ``theme``.  **Split**:
:func:`anybind.data.manifest.hash_split` of the least caption of the records that share a caption or alias, directly
or through others: every theme's picture of a name falls in one split, also where two themes caption it differently
(Papirus draws ``gnome-calculator``, "calculator", and links ``accessories-calculator``, which Tango draws): no
caption or alias is in two splits (split by each record's own caption, 46 of 141 test records had an alias or
caption of a train record; the metric's duplicate-aware ranking counts one caption's pictures as one answer).
``limit``: only the first N real files of each context of each theme (quick looks and tests).  ``corpus.json``
``source.themes`` holds per theme its package, version, licence, folders, files, links, kept and dropped by reason.

**Counts** (version 4, the five themes, ~30 s): 7,842 files, 38 ``duplicate``; dropped by the name rule
``app_name`` 3,263, ``colour_variant`` 2,208, ``not_words`` 674, ``reverse_dns`` 464, ``digits`` 289, ``format``
48, ``brand`` 45, ``symbolic`` 14, ``only_generic`` 1; kept 798 images of 473 distinct captions (train 612 / 353,
val 67 / 38, test 119 / 82: images / captions), 163 captions drawn by 2-5 themes; apps 277, mimetypes 213, places
169, devices 139; 190 captioned through a link's name, 342 with ``text_aliases``.  Papirus alone (``--theme
papirus``) is version 3 but for the ids (``papirus/`` in front) and 3 splits (209 / 25 / 54: 3 version-3 leaks):

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
from dataclasses import replace
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
    name_caption,
    name_problem,
)
from .icons_themes import DEFAULT_THEMES, THEMES, IconFile, Theme, folder_theme, named_themes, scan_theme
from .words import DEFAULT_WORDS, ensure_words, load_words, missing_words_message

__all__ = [
    "DEFAULT_CONTEXTS", "DEFAULT_ROOT", "DEFAULT_THEMES", "PACKAGE", "THEMES", "build_icons", "name_caption",
    "name_problem",
]  # fmt: skip

DEFAULT_IMAGE_SIZE = 256
FALLBACK_LICENSE = "Papirus icon theme: GPL-3 (https://github.com/PapirusDevelopmentTeam/papirus-icon-theme)."
_APP_NAME_RULE = NAME_REASONS.index("app_name")


def build_icons(
    out_dir: str | os.PathLike[str],
    themes: tuple[str | Theme, ...] = DEFAULT_THEMES,
    root: str | os.PathLike[str] | None = None,
    size_dir: str = DEFAULT_SIZE_DIR,
    contexts: tuple[str, ...] = DEFAULT_CONTEXTS,
    words: str | os.PathLike[str] = DEFAULT_WORDS,
    limit: int | None = None,
    size: int = DEFAULT_IMAGE_SIZE,
    install: bool = True,
    progress: bool = True,
) -> CorpusSummary:
    """Build the icons corpus into ``out_dir`` from ``themes`` (keys of :data:`THEMES`, or :class:`Theme`), or from
    one theme folder ``root`` of the Papirus layout (``root/<size_dir>/<context>``; then ``themes`` is not read).
    Missing themes' packages are installed (``install``, as root), or named in one line with the command that
    installs them."""
    for key, value in (("limit", limit), ("size", size)):
        if value is not None and value < 1:
            raise DataError(f"icons: {key} must be a whole number >= 1, got {value}")
    src = Path(os.path.abspath(root)) if root is not None else None  # "..": the folder's own name keys the theme
    if src is not None and src != Path(DEFAULT_ROOT):
        chosen: tuple[Theme, ...] = (folder_theme(src, size_dir, tuple(contexts)),)
    else:
        chosen = named_themes(("papirus",) if root is not None else tuple(themes))
        if src is not None and size_dir != DEFAULT_SIZE_DIR:  # Papirus' own folder at another size
            chosen = (replace(chosen[0], folders=tuple((c, f"{size_dir}/{c}") for c in contexts)),)
    for t in chosen:
        if t.package is not None and install and not Path(t.root).exists():
            ensure_debian_package(t.package, t.root)
        if not Path(t.root).is_dir():
            how = f"install it with `sudo apt-get install -y {t.package or PACKAGE}`"
            raise DataError(f"icon theme folder {t.root} does not exist: {how} (it installs {t.root}), or pass "
                            "root= pointing to a copy")
    wp = ensure_words(words) if install else Path(words)
    word_list = load_words(wp, lower_only=True)
    if word_list is None:
        raise DataError(f"the English word list of the name rule: {missing_words_message(wp)}")

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, chosen, tuple(contexts), word_list, limit, size, prog)

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


def _read_files(
    files: list[IconFile], first: dict[str, IconFile], skipped: dict[str, list[str]], bad_files: dict[str, str],
    duplicate_of: dict[str, str], prog: Any,
) -> tuple[list[IconFile], dict[str, bytes]]:
    """The files whose bytes no earlier file (of this theme or an earlier one) has, and their bytes; a file that
    cannot be read is ``unreadable``, a copy of an earlier one ``duplicate`` (its names join the earlier file's)."""
    task = prog.add_task("reading icons", total=len(files)) if prog is not None else None
    unique: list[IconFile] = []
    datas: dict[str, bytes] = {}
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
            keep.aliases = sorted({*keep.aliases, f"{f.context}/{f.name}", *f.aliases})
            continue
        first[h] = f
        datas[f.id] = data
        unique.append(f)
    return unique, datas


def _scan_all(
    themes: tuple[Theme, ...], contexts: tuple[str, ...], limit: int | None
) -> list[tuple[Theme, list[IconFile], Counter[str], list[str]]]:
    scans = [(t, *scan_theme(t, contexts, limit)) for t in themes]
    for ctx in contexts:
        if all(ctx in missing for _, _, _, missing in scans):
            t = themes[0]
            parent = Path(t.root) / Path(t.folder(ctx) or t.folders[0][1]).parent
            have = ", ".join(sorted(d.name for d in parent.iterdir() if d.is_dir())) if parent.is_dir() else "nothing"
            raise DataError(f"{parent / ctx}: no icon theme read has a context folder {ctx!r} ({t.key} has: {have})")
    if not any(files for _, files, _, _ in scans):
        where = ", ".join(str(Path(t.root) / Path(t.folders[0][1]).parent) for t in themes)
        raise DataError(f"{where}: no .svg icon file in {', '.join(contexts)} (a PNG theme such as Adwaita or "
                        "hicolor is not read; pass root= a Papirus-style SVG theme)")
    return scans


def _build_into(
    tmp: Path,
    out_dir: Path,
    themes: tuple[Theme, ...],
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
    duplicate_of: dict[str, str] = {}
    first: dict[str, IconFile] = {}
    scans = _scan_all(themes, contexts, limit)
    read = [(t, *_read_files(files, first, skipped, bad_files, duplicate_of, prog)) for t, files, _, _ in scans]
    alias_rule: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    per_alias: dict[str, Counter[str]] = {}
    lim = current_limits()
    records: list[dict[str, Any]] = []
    names: list[list[str]] = []  # each record's captions, its own first
    n_unique = sum(len(u) for _, u, _ in read)
    rtask = prog.add_task("drawing icons", total=n_unique) if prog is not None else None
    for t, unique, datas in read:
        rule = per_alias.setdefault(t.key, Counter())
        for f in unique:
            if prog is not None:
                prog.advance(rtask)
            own, caps = _captions(f, words, rule, f.contexts == {"apps"})
            if not caps:
                skipped.setdefault(own or "not_words", []).append(f.id)
                continue
            if own is not None:
                problems["caption_from_alias"] += 1
            try:
                png = render_svg(datas[f.id], f"{f.theme}/{f.context}/{f.path.name}", size, lim)
            except DataError as e:
                skipped.setdefault("bad_render", []).append(f.id)
                bad_files[f.id] = stable_message(str(e), Path(t.root))
                continue
            rel = Path("media", f.theme, f.context, f.name + ".png")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(png)
            rec: dict[str, Any] = {"id": f.id, "split": "", "text": caps[0]}  # split: _split_by_names
            if len(caps) > 1:
                rec["text_aliases"] = "; ".join(caps[1:])
            rec["image"] = rel.as_posix()
            rec["labels"] = {"context": f.context, "theme": f.theme}
            records.append(rec)
            names.append(caps)
        alias_rule.update(rule)
    _split_by_names(records, names)

    name_drops = {r: len(skipped.get(r, [])) for r in NAME_REASONS}
    n_svg = sum(len(files) for _, files, _, _ in scans)
    if not records:
        why = ", ".join(f"{k} {len(v)}" for k, v in sorted(skipped.items()) if v)
        where = ", ".join(t.root for t in themes)
        raise DataError(f"icons: no icon kept from the {n_svg} .svg files of {where} ({why})")
    links: Counter[str] = Counter()
    per_theme: dict[str, Any] = {}
    for (t, files, tlinks, missing), (_, unique, _) in zip(scans, read):
        links.update(tlinks)
        mine = {r: len([i for i in ids if i.startswith(t.key + "/")]) for r, ids in sorted(skipped.items())}
        per_theme[t.key] = {
            "package": t.package, "version": _version(t), "root": t.root, "licence": t.licence,
            "upstream": t.upstream, "folders": {c: t.folder(c) for c in contexts}, "missing_contexts": missing,
            "svg": len(files), "unique": len(unique), "links": dict(sorted(tlinks.items())),
            "kept": sum(r["labels"]["theme"] == t.key for r in records),
            "dropped": {k: v for k, v in mine.items() if v},
            "captions": len({r["text"] for r in records if r["labels"]["theme"] == t.key}),
            "alias_rule": dict(sorted(per_alias.get(t.key, Counter()).items())),
        }  # fmt: skip
    source = {"themes": per_theme, "contexts": list(contexts),
              "license": "each theme's licence (the packages' copyright files are copied into LICENSE)"}
    meta = {
        "description": "Icons of freedesktop icon themes drawn as PNGs with their names as captions, kept only when "
        "a name reads as English words (rule in the builder's docstring).",
        "source": source,
        "builder": {"module": __name__, "version": BUILDER_VERSION, "size": size, "limit": limit,
                    "themes": [t.key for t in themes]},  # what the bench's build_once compares
        "media": f"PNG {size} px wide drawn by anybind.data.svg.render_svg into media/<theme>/<context>/",
        "split": "hash_split(caption): 70/10/20, the least caption of the records sharing a caption or "
        "alias (transitively), so no caption or alias is in two splits, whichever theme draws it",
        "files": {"svg": n_svg, "unique": n_unique, "links": dict(sorted(links.items()))},
        "name_rule": {"dropped": name_drops, "dropped_total": sum(name_drops.values())},
        "alias_rule": dict(sorted(alias_rule.items())),
        "bad_files": dict(sorted(bad_files.items())),
        "duplicate_of": dict(sorted(duplicate_of.items())),
    }
    lines = "".join(f"* `{t.key}`: {t.package or 'a theme folder'} ({t.root}), {t.licence}.\n" for t in themes)
    source_md = (
        "# Icons corpus\n\n"
        "Icons (drawings of the themes' SVGs, under each theme's licence; LICENSE holds the copyright "
        f"files):\n\n{lines}\n"
        "* Text: each icon's name read as words; names that do not read as words are dropped\n"
        "  (counts in corpus.json, `name_rule`, `alias_rule` and per theme `source.themes`).\n"
        f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
    )
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    copyrights = {t.package: debian_copyright_path(t.package) for t in themes if t.package is not None}
    write_license(tmp, copyrights, FALLBACK_LICENSE, source_md)
    return summary


def _split_by_names(records: list[dict[str, Any]], names: list[list[str]]) -> None:
    """Set each record's split: :func:`hash_split` of the least caption (``text``) of the records it shares a
    caption with, ``text`` or alias, directly or through others.  Two themes may caption one standard name
    differently (Papirus draws ``gnome-calculator`` and links ``accessories-calculator``, Tango draws the latter):
    split by each record's own caption, one is a test record whose alias is a train record's caption."""
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        parent.setdefault(c, c)
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for caps in names:
        for c in caps[1:]:
            a, b = find(caps[0]), find(c)
            parent[max(a, b)] = min(a, b)
    least: dict[str, str] = {}
    for r in records:
        g = find(r["text"])
        least[g] = min(least.get(g, r["text"]), r["text"])
    for r in records:
        r["split"] = hash_split(least[find(r["text"])])


def _version(t: Theme) -> str:
    known = t.package is not None and THEMES.get(t.key) == t
    return debian_package_version(t.package) if known and t.package else "unknown"

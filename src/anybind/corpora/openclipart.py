"""Open Clip Art Library drawings (SVG) with their titles and keywords as text.

Source: the Debian package ``openclipart-svg`` (public domain dedication;
25 MB download, 173 MB installed), ``/usr/share/openclipart/svg/<category>/...``:
8,121 ``.svg`` names in 22 top-level categories, each drawing carrying
Dublin Core metadata (``<metadata><rdf:RDF><cc:Work>``): ``dc:title``,
``dc:subject`` keywords, ``dc:creator``.

The manifest points at the SVG files (copied into ``media/`` by default);
the image encoders rasterise them (:func:`anybind.data.media.load_image`).
Rasterising the ~2,270 kept drawings takes ~4 minutes (~10 per second on
one core), so the build parses every file as XML (cheap, ~5 s) and
rasterises a deterministic sample (``check_sample``, default 200; ``-1`` =
all).

Rules (numbers for openclipart-svg 1:0.18+dfsg-19)
--------------------------------------------------

**Files dropped before looking at titles** (reasons in ``corpus.json``):

* ``symlink`` (663): a link to another file of the package (the same
  drawing filed under a second category).
* ``duplicate`` (438): the same drawing as another file -- identical bytes
  once the ``<metadata>`` block is removed (the package files some drawings
  in two folders with slightly different keywords).  The copy in the
  deepest folder is kept (``animals/amphibian`` over ``animals``), then the
  first path; ``corpus.json`` maps each dropped id to the kept one.
* ``bad_svg``: not well-formed XML; ``svg_entities`` (6): declares
  ``<!ENTITY ...>``, which the rasteriser (CairoSVG, through defusedxml)
  refuses; ``svg_unsupported`` (17): an opacity in percent
  (``fill-opacity:14.1176%``), which CairoSVG cannot parse; ``svg_no_size``
  (4): neither a ``viewBox`` nor an absolute width and height, which
  CairoSVG cannot size; ``unreadable``; ``bad_render``: failed to rasterise
  in the sample.  The cheap checks come from rasterising every kept
  drawing once and searching all files for each failure's cause: after
  them, 1 kept drawing of ~2,270 still fails
  (``st_pierre_miquelon_patri_01``, a CairoSVG IndexError), so a sample of
  200 tells the failure rate and the manifest check at encode time
  (:func:`anybind.data.manifest.load_manifest`) catches the rest.

**Title cleaning** (:func:`clean_title`): HTML entities decoded (twice: some
are double-escaped), UTF-8 read as Latin-1 repaired (``LÃ©zard`` ->
``Lézard``), underscores to spaces, a title without spaces split at
``-`` / ``.`` too (``arrow-up-green`` -> ``arrow up green``), glued words
split (``filmPhoto`` -> ``film Photo``, ``BlueMan`` -> ``Blue Man``), and a
trailing sequence number removed (``boat2`` -> ``boat``, ``Leone 02`` ->
``Leone``).

**Non-descriptive titles** (:func:`title_problem`; the first rule that
applies names the reason; the record is dropped):

1. ``no_title``: no ``dc:title`` in the work's metadata, or an empty one.
2. ``author_title``: the title names the author, not the drawing: it
   contains the ``dc:creator`` name (4+ characters), or ``by <Name>``
   (``Clipart by Nicu Buculei - jigsaw_red_10``, ``SVG Gradient Collection
   by Alan Horkan, 2004.``).
3. ``collection_title``: the title names a set the drawing belongs to:
   it contains *collection*, *theme*, *icons*, *iconset*, *icon set*,
   *clipart(s)*, *submission* or *svg* (``Part of the Flat Icon Collection
   (Wed Aug 25 ...)``, ``Lemon SVG theme``), or the same cleaned title is
   shared by ``max_title_share`` (10) or more different drawings
   (``gramastar`` x1375, ``card`` x226, ``AIGA_Symbol_Signs`` x122:
   the text would not tell the drawings apart).
4. ``file_like_title``: looks like a file or identifier: a file extension,
   ``#``, ``@``, ``\\``, or a word mixing letters and digits after the
   trailing number is gone (``BlueMan#305``, ``p2p``, ``40x30x80``; not
   ``3D``, ``1st``, ``1950s``).
5. ``no_words``: no run of two letters.
6. ``not_english``: fewer than half of the title's words are English words
   (``/usr/share/dict/words`` from Debian ``wamerican``, case-insensitive,
   plural/possessive ``s`` tolerated).  Catches the Italian (``Cavallo``,
   ``Stampante``), French (``flamme nue interdite``) and German titles that
   an English text encoder cannot read, and made-up names.  Without a word
   list this rule is skipped and ``corpus.json`` says so.

**Text.**  ``text`` = the cleaned title; ``text_keywords`` = the keywords
(lower case, underscores to spaces, de-duplicated, without empty ones,
``hash``, ``hash(0x...)``, ``unsorted`` and those naming the author), comma-separated,
when any are left.  **Labels**: ``category`` = the folder
(``animals/mammals``), ``top`` = its first part.  ``meta``: ``creator``.

**Split.**  :func:`anybind.data.manifest.hash_split` of the casefolded
title: drawings with the same title (up to 9 of them) stay in one split.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package
from .openclipart_titles import (
    BUILDER_VERSION,
    DEFAULT_CHECK_SAMPLE,
    DEFAULT_SVG_DIR,
    MAX_TITLE_SHARE,
    NAME,
    PACKAGE,
    TITLE_REASONS,
    WS_RE,
    Drawing,
    clean_keywords,
    clean_title,
    scan_drawings,
    title_problem,
    unmojibake,
)
from .words import DEFAULT_WORDS, WORDS_PACKAGE, ensure_words, load_words, missing_words_message

__all__ = [
    "DEFAULT_SVG_DIR",
    "DEFAULT_WORDS",
    "WORDS_PACKAGE",
    "build_openclipart",
    "clean_title",
    "load_words",
    "title_problem",
]

# --------------------------------------------------------------------------- build


def build_openclipart(
    out_dir: str | os.PathLike[str],
    svg_dir: str | os.PathLike[str] = DEFAULT_SVG_DIR,
    copy_media: bool = True,
    check_sample: int = DEFAULT_CHECK_SAMPLE,
    words: str | os.PathLike[str] | None = DEFAULT_WORDS,
    max_title_share: int = MAX_TITLE_SHARE,
    progress: bool = True,
) -> CorpusSummary:
    """Build the Open Clip Art corpus into ``out_dir`` (see the module docstring).

    ``check_sample``: how many kept drawings to rasterise as a check (0 none,
    -1 all); ``words``: the English word list for the ``not_english`` rule
    (``None`` skips the rule); ``copy_media=False`` points the manifest into
    ``svg_dir`` instead of copying ~150 MB.
    """
    src = Path(svg_dir)
    if not src.is_dir() and src.absolute() == Path(DEFAULT_SVG_DIR) and not src.exists():
        ensure_debian_package(PACKAGE, DEFAULT_SVG_DIR)
    if not src.is_dir():
        raise DataError(
            f"Open Clip Art folder {src} does not exist: install the Debian package with "
            f"`sudo apt-get install -y {PACKAGE}` (it installs {DEFAULT_SVG_DIR}), or pass svg_dir= pointing to a copy."
        )
    word_list: frozenset[str] | None = None
    words_note = "not_english rule off (words=None)"
    if words is not None:
        wp = Path(words)
        try:
            ensure_words(wp)
        except DataError as e:
            words_note = f"not_english rule off: {e}"
        word_list = load_words(wp)
        if word_list is not None:
            words_note = f"{wp} ({len(word_list)} words)"
        elif words_note.startswith("not_english rule off (words"):
            words_note = f"not_english rule off: {missing_words_message(wp)}"
    src = src.absolute()

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(
            tmp, out, src, copy_media, check_sample, word_list, words_note, max_title_share, prog
        )

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path,
    out_dir: Path,
    src: Path,
    copy_media: bool,
    check_sample: int,
    words: frozenset[str] | None,
    words_note: str,
    max_share: int,
    prog: Any,
) -> CorpusSummary:
    skipped: dict[str, list[str]] = {}
    bad_files: dict[str, str] = {}
    problems: Counter[str] = Counter()
    drawings = scan_drawings(src, skipped, bad_files, prog)

    # duplicates: same drawing, different metadata -> keep the deepest folder, then the first path
    by_body: dict[str, list[Drawing]] = {}
    for d in drawings:
        by_body.setdefault(d.body_hash, []).append(d)
    duplicate_of: dict[str, str] = {}
    unique: list[Drawing] = []
    for d in drawings:
        group = by_body[d.body_hash]
        keep = min(group, key=lambda x: (-x.category.count("/") - bool(x.category), x.id))
        if d is keep:
            unique.append(d)
        else:
            skipped.setdefault("duplicate", []).append(d.id)
            duplicate_of[d.id] = keep.id

    titles = {d.id: clean_title(d.title_raw) for d in unique}
    share = Counter(t.casefold() for t in titles.values() if t)
    kept: list[Drawing] = []
    examples: dict[str, list[str]] = {}
    for d in unique:
        t = titles[d.id]
        why = title_problem(t, d.creator, share[t.casefold()] if t else 0, words, max_share)
        if why is not None:
            skipped.setdefault(why, []).append(d.id)
            ex = examples.setdefault(why, [])
            shown = repr(d.title_raw) if d.title_raw else "(none)"
            if len(ex) < 12 and shown not in ex:
                ex.append(shown)
            continue
        if d.title_raw and t != WS_RE.sub(" ", d.title_raw).strip():
            problems["title_cleaned"] += 1
        kept.append(d)

    # rasterise a deterministic sample (by a hash of the id) as a check
    order = sorted(kept, key=lambda d: hashlib.sha256(d.id.encode()).hexdigest())
    sample = order if check_sample < 0 else order[: max(0, check_sample)]
    failed: set[str] = set()
    if sample:
        from ..data.media import load_image

        task = prog.add_task("rasterising a sample", total=len(sample)) if prog is not None else None
        for d in sample:
            if prog is not None:
                prog.advance(task)
            try:
                load_image(d.path, size=64)
            except DataError as e:
                failed.add(d.id)
                skipped.setdefault("bad_render", []).append(d.id)
                bad_files[d.id] = stable_message(str(e), src)
    render_check = {
        "sampled": len(sample),
        "of": len(kept),
        "failed": len(failed),
        "how": "load_image(size=64) on the kept drawings with the smallest sha256(id)",
    }

    records: list[dict[str, Any]] = []
    copies: list[tuple[Path, Path]] = []
    for d in kept:
        if d.id in failed:
            continue
        t = titles[d.id]
        if copy_media:
            rel = Path("media", d.id + ".svg")
            copies.append((d.path, tmp / rel))
            image = rel.as_posix()
        else:
            image = Path(os.path.relpath(d.path, out_dir)).as_posix()
        rec: dict[str, Any] = {"id": d.id, "split": hash_split(t.casefold()), "text": t}
        kws = clean_keywords(d.keywords, d.creator)
        if kws:
            rec["text_keywords"] = ", ".join(kws)
        rec["image"] = image
        rec["labels"] = {"category": d.category, "top": d.category.split("/", 1)[0]}
        if d.creator:
            rec["meta"] = {"creator": unmojibake(html.unescape(html.unescape(d.creator)))}
        records.append(rec)

    if copies:
        ctask = prog.add_task("copying SVGs", total=len(copies)) if prog is not None else None
        made: set[Path] = set()
        for s, dst in copies:
            if dst.parent not in made:
                dst.parent.mkdir(parents=True, exist_ok=True)
                made.add(dst.parent)
            shutil.copyfile(s, dst)
            if prog is not None:
                prog.advance(ctask)

    default = src == Path(DEFAULT_SVG_DIR)
    title_drops = {r: len(skipped.get(r, [])) for r in TITLE_REASONS}
    meta = {
        "description": "Open Clip Art Library drawings (SVG) with their cleaned titles as text, keywords as "
        "text_keywords and folders as labels; non-descriptive titles dropped by a documented rule.",
        "source": {
            "package": PACKAGE,
            "version": debian_package_version(PACKAGE) if default else "unknown",
            "svg_dir": str(src),
            "license": "public domain (Creative Commons Public Domain Dedication / Certification)",
            "upstream": "https://openclipart.org/",
        },
        "builder": {
            "module": __name__,
            "version": BUILDER_VERSION,
            "max_title_share": max_share,
            "check_sample": check_sample,
        },
        "media": "SVGs copied into media/" if copy_media else "paths into the package's folder (not copied)",
        "split": "hash_split(casefolded cleaned title): 70/10/20, same title -> same split",
        "files": {
            "svg": len(drawings)
            + sum(
                len(skipped.get(r, []))
                for r in (
                    "symlink",
                    "unreadable",
                    "svg_entities",
                    "svg_unsupported",
                    "svg_no_size",
                    "bad_svg",
                )
            ),
            "parsed": len(drawings),
            "unique_drawings": len(unique),
        },
        "title_rule": {
            "dropped": title_drops,
            "dropped_total": sum(title_drops.values()),
            "examples": {k: v for k, v in examples.items()},
            "word_list": words_note,
        },
        "render_check": render_check,
        "duplicate_of": dict(sorted(duplicate_of.items())),
        "bad_files": dict(sorted(bad_files.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(
        tmp,
        {PACKAGE: debian_copyright_path(PACKAGE)},
        fallback="Open Clip Art Library drawings: Creative Commons Public Domain Dedication.",
        source_md=(
            "# Open Clip Art corpus\n\n"
            f"* Drawings: Open Clip Art Library, Debian `{PACKAGE}` ({src}), public domain.\n"
            "* Text: each drawing's own `dc:title` (cleaned) and `dc:subject` keywords; drawings whose\n"
            "  title does not describe them are dropped (counts and examples in corpus.json, `title_rule`).\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
    )
    return summary

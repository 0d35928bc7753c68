"""Tux Paint stamps as a paired text / image / sound / speech corpus.

Source: the Debian package ``tuxpaint-stamps-default`` (GPL-2), installed at
``/usr/share/tuxpaint/stamps``.  :func:`build_tuxpaint` turns it into a folder
with ``manifest.jsonl`` (the format of :mod:`anybind.data.manifest`),
``corpus.json`` (counts, skips, provenance), ``LICENSE``, ``SOURCE.md`` and,
by default, ``media/`` with copies of every file the manifest references.

Rules (established by reading tuxpaint-stamps-default 2022.06.04-1; numbers
are for that version)
----------------------------------------------------------------------------

**Stamps.**  Category folders, nested (``animals/mammals/bears``).  A stamp
is a *stem* in one folder: the name of a ``.png``, ``.svg``, ``.txt`` or
``.dat`` file without its extension (970 stems).  Its id is
``<folder relative to the stamps dir>/<stem>`` (unique: stems are unique in
a folder).  Labels: ``category`` = the folder path, ``top`` = its first part.
``.dat`` files hold Tux Paint flags (``noflip``, ``colorable``, ``scale 25%``)
and are ignored.

**Image.**  ``stem.png`` when it exists, else ``stem.svg`` (83 stamps have
both, 165 are SVG only).  Every chosen image is decoded with
:func:`anybind.data.media.load_image` during the build; one that does not
decode skips the stamp (``bad_image``).  In 2022.06.04-1 that is
``food/loaf_of_bread.svg``, whose internal DTD entities (an Adobe
Illustrator export) are refused by CairoSVG.

**Mirror variants.**  ``stem_mirror.png`` (11) is the picture Tux Paint
shows when the stamp ``stem`` is mirrored, not a stamp of its own: skipped
as ``mirror_variant`` (likewise ``_flip`` / ``_mirror_flip``) when ``stem``
exists in the same folder.

**Caption** (``stem.txt``).  The first non-blank line is the English caption
(``text``).  The other lines are translations ``<lang>.utf8=<text>`` with
``lang`` like ``fr``, ``pt_BR``, ``ca@valencia``, ``sr@latin`` (~80
languages); each becomes ``text_<lang>`` with ``lang`` lowercased and ``@`` /
``-`` turned into ``_`` (``pt_BR`` -> ``text_pt_br``, ``ca@valencia`` ->
``text_ca_valencia``).  Whitespace is trimmed and runs of it collapsed.
Dropped and counted in ``corpus.json`` under ``problems``: blank lines,
lines that do not parse as ``lang.utf8=...`` (``caption_line_unparsed``),
empty translations, repeated languages (first kept), lines that are not
UTF-8 (``caption_line_not_utf8``; the English line alone falls back to
cp1252), and text in the wrong script: all 59 Tamil (``ta``) lines are
legacy TSCII bytes shown as Latin-1 (``´Õ ¨¸.``), so ``ta`` lines without
any Tamil letter are dropped (``caption_wrong_script``).  A BOM and CR line
ends are tolerated.  Some non-Latin languages carry the untranslated English
text (``km.utf8=Flat.``); those are kept as Tux Paint shows them.

**Sounds** (``.ogg``, or ``.wav``; a file is attributed to the longest stem
of its folder that leaves one of the suffixes below):

* ``stem.ogg`` / ``stem.wav``: the stamp's sound (135 files, all ``.ogg``).
* ``stem_<loc>.ogg`` (``7_de.ogg``, ``A_filled_en_GB.ogg``): a localized
  version of that sound, which Tux Paint plays instead of ``stem.ogg`` in
  that locale.  Only the number stamps (``symbols/math/0``..``9``, 10-19
  locales) and the English letters (104 stamps, ``en_GB`` only) have them:
  they are *spoken names* ("seven", "A"), not sound effects.  So when a
  stamp has localized sounds, its ``stem.ogg`` is the default-language
  (English) spoken name too.  These go to ``speech_name`` (the unsuffixed
  file) and ``speech_name_<loc>``; ``audio`` is a sound effect only: the
  unsuffixed file of a stamp without localized sounds (124 records).
* ``stem_desc.ogg`` / ``stem_desc_<loc>.ogg`` (and a few ``.wav``, all
  ``pt_BR``): a spoken description, English for the unsuffixed file
  (``speech``, ~65 stamps) and ``speech_<loc>`` otherwise (fr/ru/ro/ca/bg/es
  for ~900 stamps; be, el, da, lt, nl, pt_BR, ml for fewer).
* ``<loc>``: ``lang`` or ``lang_REGION`` where ``lang`` is one of the
  languages of the caption files (so ``apple_red.ogg`` is not a "red"
  locale), normalised like caption languages (``zh_tw``, ``pt_br``).
* Files the exact rules miss but that are plainly misnamed are recovered
  and counted: a stem differing only in letter case
  (``strawberry2_desc_el.ogg`` for ``Strawberry2``) and a doubled extension
  (``inukshuk-photo_desc_da.ogg.ogg``).  When several files fill one slot,
  the exact name wins over a recovered one and ``.ogg`` over ``.wav``.
* Sound files that match no stamp (20: ``wallaby_desc*.ogg``,
  ``mosquito.ogg`` with no such stamp, typos like ``cherinoya_desc_el.ogg``)
  are listed in ``corpus.json`` under ``unmatched_files``.
* Sound files are checked by signature (``OggS`` / ``RIFF....WAVE``, non
  empty) at build time, not decoded (7,800 files; decoding would take half a
  minute): :func:`anybind.data.manifest.load_manifest` decodes them.

**Skipped stamps** (never silently; counts and ids in ``corpus.json``):
``no_caption`` (an image without ``.txt``: e.g. ``cartoon/tux/tux-drat``),
``no_image`` (a caption without image: ``seasonal/christmas/gift``),
``no_image_no_caption`` (only a ``.dat`` or sounds), ``no_english_caption``
(a ``.txt`` without a usable first line), ``unreadable_caption``,
``mirror_variant``, ``bad_image``.

**Split.**  70/10/20 train/val/test from a hash of the English caption,
casefolded with whitespace and final punctuation stripped
(:func:`anybind.data.manifest.hash_split` on that key): deterministic and
stable when stamps are added, like a hash of the id, but stamps with the same
caption (278 of 949 records in 102 groups: the 4 drawings of "The letter
R.", 6 "A flower.", the photo and outline of the inukshuk) always land in the
same split, so a test caption never has a twin in train (a hash of the id
would spread 61 of these groups over two or three splits).

**Paths** in the manifest are relative to the manifest's folder: into
``media/<category>/`` when ``copy_media`` (the default: ~200 MB, mostly
spoken descriptions, and the corpus is then self-contained), else into the
stamps dir.  Copied files keep their Tux Paint name, corrected for the
recovered misnamings above.

The build goes to a temporary folder next to ``out_dir`` that replaces it at
the end; an existing ``out_dir`` is replaced only when it is empty or is a
previous build of this corpus.  The same inputs give byte-identical
``manifest.jsonl`` and ``corpus.json`` (nothing time-dependent is written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically
from .debian import ensure_debian_package
from .tuxpaint_counts import corpus_counts
from .tuxpaint_source import (
    BUILDER_VERSION,
    DEFAULT_STAMPS_DIR,
    IMAGE_EXTS,
    NAME,
    PACKAGE,
    VARIANT_SUFFIXES,
    Sound,
    Stamp,
    audio_ok,
    caption_languages,
    image_error,
    package_info,
    parse_caption,
    scan,
    split_key,
    write_license,
)

__all__ = [
    "BUILDER_VERSION",
    "DEFAULT_STAMPS_DIR",
    "PACKAGE",
    "CorpusSummary",
    "build_tuxpaint",
    "ensure_debian_package",
    "parse_caption",
]

def build_tuxpaint(
    out_dir: str | os.PathLike[str],
    stamps_dir: str | os.PathLike[str] = DEFAULT_STAMPS_DIR,
    copy_media: bool = True,
    progress: bool = True,
) -> CorpusSummary:
    """Build the Tux Paint stamps corpus into ``out_dir`` (see the module docstring).

    ``copy_media=False`` writes manifest paths pointing into ``stamps_dir``
    (relative to ``out_dir``) instead of copying ~200 MB of media.  With the
    default ``stamps_dir``, a missing package is installed when running as
    root, otherwise :class:`DataError` gives the ``apt-get`` command.
    """
    out_dir = Path(out_dir).absolute()
    stamps = Path(stamps_dir)
    if not stamps.is_dir():
        if stamps.absolute() == Path(DEFAULT_STAMPS_DIR) and not stamps.exists():
            ensure_debian_package(PACKAGE, DEFAULT_STAMPS_DIR)
        if not stamps.is_dir():
            raise DataError(
                f"Tux Paint stamps folder {stamps} does not exist (or is not a folder): "
                f"install the Debian package with `sudo apt-get install -y {PACKAGE}` "
                f"(it installs {DEFAULT_STAMPS_DIR}), or pass stamps_dir= pointing to a copy."
            )
    stamps = stamps.absolute()
    return build_atomically(
        NAME, out_dir, lambda tmp, out, prog: _build_into(tmp, out, stamps, copy_media, prog), progress
    )


@contextmanager
def tux_manifest(
    tux: str | os.PathLike[str] | None,
    stamps_dir: str | os.PathLike[str] = DEFAULT_STAMPS_DIR,
    install: bool = True,
    progress: bool = False,
) -> Iterator[tuple[Path, str]]:
    """The Tux Paint manifest a derived corpus (speech, video) reads: ``tux`` (a built corpus folder or its
    manifest), else one built from ``stamps_dir`` into a temporary folder (media not copied), removed on exit.
    Yields ``(absolute manifest path, where it came from)``."""
    if tux is not None:
        p = Path(tux)
        m = p / "manifest.jsonl" if p.is_dir() else p
        if not m.is_file():
            raise DataError(f"{tux}: no Tux Paint corpus there (build one with `anybind corpus tuxpaint --out DIR`)")
        yield m.absolute(), str(m.absolute())
        return
    stamps = Path(stamps_dir)
    if install and not stamps.exists() and stamps.absolute() == Path(DEFAULT_STAMPS_DIR):
        ensure_debian_package(PACKAGE, DEFAULT_STAMPS_DIR)
    tmp = Path(tempfile.mkdtemp(prefix="anybind-tux-"))
    try:
        build_tuxpaint(tmp / "tux", stamps_dir=stamps, copy_media=False, progress=progress)
        yield tmp / "tux" / "manifest.jsonl", f"built from {stamps.absolute()} (anybind.corpora.tuxpaint, copy_media=False)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_into(tmp: Path, out_dir: Path, stamps_dir: Path, copy_media: bool, prog: Any) -> CorpusSummary:
    problems: Counter[str] = Counter()
    unmatched: list[str] = []
    langs = caption_languages(stamps_dir)
    stamps = scan(stamps_dir, langs, problems, unmatched)
    stems_in = {(s.folder, s.stem) for s in stamps}

    task = prog.add_task("tuxpaint stamps", total=len(stamps)) if prog is not None else None
    skipped: dict[str, list[str]] = {}
    bad_images: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    copies: list[tuple[Path, Path]] = []

    def skip(reason: str, st: Stamp) -> None:
        skipped.setdefault(reason, []).append(st.id)

    def media_path(src: Path, st: Stamp, dest_name: str) -> str:
        if copy_media:
            rel = Path("media", st.category, dest_name) if st.category else Path("media", dest_name)
            copies.append((src, tmp / rel))
            return rel.as_posix()
        return Path(os.path.relpath(src, out_dir)).as_posix()

    for st in stamps:
        if prog is not None:
            prog.advance(task)
        variant_of = next(
            (st.stem[: -len(v)] for v in VARIANT_SUFFIXES if st.stem.endswith(v) and st.stem != v), None
        )
        if variant_of is not None and (st.folder, variant_of) in stems_in:
            skip("mirror_variant", st)
            continue
        image = next((st.files[e] for e in IMAGE_EXTS if e in st.files), None)
        txt = st.files.get(".txt")
        if image is None and txt is None:
            skip("no_image_no_caption", st)
            continue
        if txt is None:
            skip("no_caption", st)
            continue
        if image is None:
            skip("no_image", st)
            continue
        try:
            cap = parse_caption(txt.read_bytes())
        except OSError:
            skip("unreadable_caption", st)
            continue
        problems.update(cap.problems)
        if not cap.english:
            skip("no_english_caption", st)
            continue
        err = image_error(image)
        if err is not None:
            skip("bad_image", st)
            bad_images[st.id] = err.replace(str(stamps_dir) + os.sep, "")
            continue

        rec: dict[str, Any] = {"id": st.id, "split": hash_split(split_key(cap.english)), "text": cap.english}
        for lang in sorted(cap.translations):
            rec[f"text_{lang}"] = cap.translations[lang]
        rec["image"] = media_path(image, st, image.name)

        chosen: dict[tuple[str, str | None], Sound] = {}
        for slot, cands in st.sounds.items():
            good = [c for c in sorted(cands, key=lambda c: c.rank) if audio_ok(c.path)]
            problems["sound_bad_file"] += len(cands) - len(good)
            if good:
                chosen[slot] = good[0]
                problems["sound_duplicate_file"] += len(good) - 1
        spoken_names = any(kind == "sound" and loc is not None for kind, loc in chosen)
        sound_fields: list[tuple[str, Sound]] = []
        for (kind, loc), snd in chosen.items():
            if kind == "desc":
                key = "speech" if loc is None else f"speech_{loc}"
            elif spoken_names:
                key = "speech_name" if loc is None else f"speech_name_{loc}"
            else:
                key = "audio"  # loc is None here: localized sounds make them spoken names
            sound_fields.append((key, snd))
        # audio, speech, speech_<loc>..., speech_name, speech_name_<loc>...
        order = {"audio": 0, "speech": 1, "speech_name": 3}

        def field_order(kv: tuple[str, Sound]) -> tuple[int, str]:
            return order.get(kv[0], 4 if kv[0].startswith("speech_name_") else 2), kv[0]

        sound_fields.sort(key=field_order)
        for key, snd in sound_fields:
            rec[key] = media_path(snd.path, st, snd.dest_name)
        top = st.category.split("/", 1)[0]
        rec["labels"] = {"category": st.category, "top": top}
        records.append(rec)

    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):  # pragma: no cover - stems are unique per folder
        dup = [k for k, v in Counter(ids).items() if v > 1]
        raise DataError(f"duplicate stamp ids: {dup[:5]}")

    if copies:
        ctask = prog.add_task("copying media", total=len(copies)) if prog is not None else None
        made: set[Path] = set()
        for src, dst in copies:
            if dst.parent not in made:
                dst.parent.mkdir(parents=True, exist_ok=True)
                made.add(dst.parent)
            shutil.copyfile(src, dst)
            if prog is not None:
                prog.advance(ctask)

    manifest = tmp / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    counts = corpus_counts(records)
    skipped_counts = {k: len(v) for k, v in sorted(skipped.items())}
    source = package_info(stamps_dir)
    meta = {
        "name": NAME,
        "description": "Tux Paint stamps: clip-art images with English captions and translations, "
        "sound effects, spoken names and spoken descriptions.",
        "source": source,
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "manifest": "manifest.jsonl",
        "media": "copied into media/" if copy_media else "paths into the stamps dir (not copied)",
        "split": "hash_split(casefolded English caption): 70/10/20, same caption -> same split",
        "counts": counts,
        "skipped": skipped_counts,
        "skipped_ids": {k: sorted(v) for k, v in sorted(skipped.items())},
        "bad_images": dict(sorted(bad_images.items())),
        "problems": {k: v for k, v in sorted(problems.items()) if v},
        "unmatched_files": sorted(unmatched),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }
    (tmp / "corpus.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    write_license(tmp, source)

    return CorpusSummary(
        name=NAME,
        out_dir=out_dir,
        manifest=out_dir / "manifest.jsonl",
        records=len(records),
        splits=counts["splits"],
        modalities=counts["modalities"],
        skipped=skipped_counts,
        problems={k: v for k, v in sorted(problems.items()) if v},
    )

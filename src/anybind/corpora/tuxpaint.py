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
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.manifest import SPLITS, hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically
from ._debian import debian_copyright_path, debian_package_version, ensure_debian_package

__all__ = [
    "BUILDER_VERSION",
    "DEFAULT_STAMPS_DIR",
    "PACKAGE",
    "CorpusSummary",
    "build_tuxpaint",
    "ensure_debian_package",
    "parse_caption",
]

NAME = "tuxpaint"
PACKAGE = "tuxpaint-stamps-default"
DEFAULT_STAMPS_DIR = "/usr/share/tuxpaint/stamps"
BUILDER_VERSION = "1"
UPSTREAM = "Tux Paint stamps (https://tuxpaint.org/), Bill Kendrick and contributors"

_IMAGE_EXTS = (".png", ".svg")  # order = preference
_AUDIO_EXTS = (".ogg", ".wav")  # order = preference
_STEM_EXTS = frozenset({".png", ".svg", ".txt", ".dat"})
_VARIANT_SUFFIXES = ("_mirror_flip", "_flip_mirror", "_mirror", "_flip")

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
class _Sound:
    path: Path
    dest_name: str  # canonical Tux Paint name (misnamings corrected)
    rank: tuple[int, int, int, str]  # lower is better


@dataclass
class _Stamp:
    folder: Path
    category: str
    stem: str
    files: dict[str, Path] = field(default_factory=dict)  # ".png" -> path
    sounds: dict[tuple[str, str | None], list[_Sound]] = field(default_factory=dict)

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


def _scan(
    stamps_dir: Path, langs: frozenset[str], problems: Counter[str], unmatched: list[str]
) -> list[_Stamp]:
    stamps: list[_Stamp] = []
    for folder, dirs, files in os.walk(stamps_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder_p = Path(folder)
        rel = folder_p.relative_to(stamps_dir).as_posix()
        category = "" if rel == "." else rel
        by_stem: dict[str, _Stamp] = {}
        audio: list[str] = []
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() in _STEM_EXTS and stem:
                st = by_stem.setdefault(stem, _Stamp(folder_p, category, stem))
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
            by_stem[stem].sounds.setdefault(slot, []).append(_Sound(folder_p / name, dest, rank))
        stamps.extend(by_stem[s] for s in sorted(by_stem))
    return stamps


def _caption_languages(stamps_dir: Path) -> frozenset[str]:
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


def _image_error(path: Path) -> str | None:
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


def _audio_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(b"OggS") or (head.startswith(b"RIFF") and head[8:12] == b"WAVE")


# --------------------------------------------------------------------------- build


def _package_info(stamps_dir: Path) -> dict[str, str]:
    default = Path(DEFAULT_STAMPS_DIR)
    is_default = default.exists() and stamps_dir.resolve() == default.resolve()
    return {
        "package": PACKAGE,
        "version": debian_package_version(PACKAGE) if is_default else "unknown",
        "stamps_dir": str(stamps_dir),
        "license": "GPL-2",
        "upstream": UPSTREAM,
    }


def _write_license(tmp: Path, source: dict[str, str]) -> None:
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


def _build_into(tmp: Path, out_dir: Path, stamps_dir: Path, copy_media: bool, prog: Any) -> CorpusSummary:
    problems: Counter[str] = Counter()
    unmatched: list[str] = []
    langs = _caption_languages(stamps_dir)
    stamps = _scan(stamps_dir, langs, problems, unmatched)
    stems_in = {(s.folder, s.stem) for s in stamps}

    task = prog.add_task("tuxpaint stamps", total=len(stamps)) if prog is not None else None
    skipped: dict[str, list[str]] = {}
    bad_images: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    copies: list[tuple[Path, Path]] = []

    def skip(reason: str, st: _Stamp) -> None:
        skipped.setdefault(reason, []).append(st.id)

    def media_path(src: Path, st: _Stamp, dest_name: str) -> str:
        if copy_media:
            rel = Path("media", st.category, dest_name) if st.category else Path("media", dest_name)
            copies.append((src, tmp / rel))
            return rel.as_posix()
        return Path(os.path.relpath(src, out_dir)).as_posix()

    for st in stamps:
        if prog is not None:
            prog.advance(task)
        variant_of = next(
            (st.stem[: -len(v)] for v in _VARIANT_SUFFIXES if st.stem.endswith(v) and st.stem != v), None
        )
        if variant_of is not None and (st.folder, variant_of) in stems_in:
            skip("mirror_variant", st)
            continue
        image = next((st.files[e] for e in _IMAGE_EXTS if e in st.files), None)
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
        err = _image_error(image)
        if err is not None:
            skip("bad_image", st)
            bad_images[st.id] = err.replace(str(stamps_dir) + os.sep, "")
            continue

        rec: dict[str, Any] = {"id": st.id, "split": hash_split(split_key(cap.english)), "text": cap.english}
        for lang in sorted(cap.translations):
            rec[f"text_{lang}"] = cap.translations[lang]
        rec["image"] = media_path(image, st, image.name)

        chosen: dict[tuple[str, str | None], _Sound] = {}
        for slot, cands in st.sounds.items():
            good = [c for c in sorted(cands, key=lambda c: c.rank) if _audio_ok(c.path)]
            problems["sound_bad_file"] += len(cands) - len(good)
            if good:
                chosen[slot] = good[0]
                problems["sound_duplicate_file"] += len(good) - 1
        spoken_names = any(kind == "sound" and loc is not None for kind, loc in chosen)
        sound_fields: list[tuple[str, _Sound]] = []
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

        def field_order(kv: tuple[str, _Sound]) -> tuple[int, str]:
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

    counts = _counts(records)
    skipped_counts = {k: len(v) for k, v in sorted(skipped.items())}
    source = _package_info(stamps_dir)
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
    _write_license(tmp, source)

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


def _counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    def family(key: str) -> str | None:
        if key in ("id", "split", "labels"):
            return None
        if key.startswith("speech_name"):
            return "speech_name"
        if key.startswith("text_"):
            return "text_translated"
        if key.startswith("speech_"):
            return "speech_translated"
        return key

    fams = ("text", "text_translated", "image", "audio", "speech", "speech_translated", "speech_name")
    modalities = {m: 0 for m in fams}
    per_split = {s: {"records": 0, **{m: 0 for m in fams}} for s in SPLITS}
    fields: Counter[str] = Counter()
    text_langs: set[str] = set()
    speech_langs: set[str] = set()
    for r in records:
        present = {family(k) for k in r} - {None}
        per_split[r["split"]]["records"] += 1
        for m in present:
            modalities[m] += 1  # type: ignore[index]
            per_split[r["split"]][m] += 1  # type: ignore[index]
        for k in r:
            if family(k) is not None:
                fields[k] += 1
            if k.startswith("text_"):
                text_langs.add(k[5:])
            elif k.startswith("speech_") and not k.startswith("speech_name"):
                speech_langs.add(k[7:])
    image_kinds = Counter(os.path.splitext(r["image"])[1].lower() for r in records)
    return {
        "records": len(records),
        "splits": {s: per_split[s]["records"] for s in SPLITS},
        "modalities": modalities,
        "per_split": per_split,
        "image_formats": dict(sorted(image_kinds.items())),
        "text_languages": len(text_langs) + 1,
        "speech_languages": sorted(speech_langs | ({"en"} if modalities["speech"] else set())),
        "fields": dict(sorted(fields.items())),
    }

"""Openclipart titles and metadata: the title rule (which titles are usable English captions, and why the
others are not), keywords, and the metadata read from each SVG (see :mod:`anybind.corpora.openclipart`)."""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

NAME = "openclipart"
BUILDER_VERSION = "1"
PACKAGE = "openclipart-svg"
DEFAULT_SVG_DIR = "/usr/share/openclipart/svg"
MAX_TITLE_SHARE = 10
DEFAULT_CHECK_SAMPLE = 200
TITLE_REASONS = ("no_title", "author_title", "collection_title", "file_like_title", "no_words", "not_english")

WS_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_COLLECTION_RE = re.compile(
    r"\b(collections?|themes?|icons|icon ?sets?|cliparts?|clip arts?|submission|sibmission|svg)\b", re.I
)
_BY_NAME_RE = re.compile(r"\bby\s+[A-Z]")
_FILE_RE = re.compile(r"\.(svg|png|jpe?g|gif|ai|eps|xcf|pdf)\b|[#@\\]", re.I)
_MIXED_RE = re.compile(r"\b(?=\w*[^\W\d_])(?=\w*\d)\w+\b")
_ORDINAL_RE = re.compile(r"^\d+(d|st|nd|rd|th|s)$", re.I)  # 3D, 1st, 1950s: words, not identifiers
PERCENT_OPACITY_RE = re.compile(rb"opacity\s*(?::|=\s*[\"'])\s*[\d.]+%")
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_TRAILING_NUMBER_RE = re.compile(r"(?<=[^\W\d_])[\s_-]*\d{1,3}$")
METADATA_RE = re.compile(rb"<metadata\b.*?</metadata\s*>", re.S)
_DROP_KEYWORDS = frozenset({"", "hash", "unsorted"})


# --------------------------------------------------------------------------- titles


def clean_title(raw: str | None) -> str:
    """Decode, unglue and trim a ``dc:title`` (see the module docstring); ``""`` for none."""
    if not raw:
        return ""
    t = unmojibake(html.unescape(html.unescape(raw)))
    t = WS_RE.sub(" ", _CONTROL_RE.sub(" ", t)).strip()
    if " " not in t:
        t = re.sub(r"(?<=[^\W_])[-.](?=[^\W_])", " ", t)
    t = t.replace("_", " ")
    t = re.sub(r"(?<=[a-z]{2})(?=[A-Z][a-z])", " ", t)
    t = WS_RE.sub(" ", t).strip()
    t = _TRAILING_NUMBER_RE.sub("", t).strip()
    return t


def unmojibake(t: str) -> str:
    """``LÃ©zard`` (UTF-8 read as Latin-1) -> ``Lézard``; anything else unchanged."""
    if not re.search("[\u00c2\u00c3][\u0080-\u00bf]", t):
        return t
    try:
        return t.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return t


def _is_word(w: str, words: frozenset[str]) -> bool:
    w = w.casefold()
    if w.endswith("'s"):
        w = w[:-2]
    if w in words:
        return True
    if w.endswith("ies") and w[:-3] + "y" in words:
        return True
    if w.endswith("es") and w[:-2] in words:
        return True
    return w.endswith("s") and w[:-1] in words


def title_problem(
    title: str,
    creator: str | None = None,
    share: int = 1,
    words: frozenset[str] | None = None,
    max_share: int = MAX_TITLE_SHARE,
) -> str | None:
    """Why a cleaned title does not describe its drawing (a reason of :data:`TITLE_REASONS`), or None.

    ``share``: how many different drawings have this cleaned title;
    ``words``: the English word list (None skips the ``not_english`` rule).
    """
    if not title.strip():
        return "no_title"
    cf = title.casefold()
    cr = WS_RE.sub(" ", html.unescape(creator or "")).strip().casefold()
    if _BY_NAME_RE.search(title) or (len(cr) >= 4 and cr in cf) or (cr and cr == cf):
        return "author_title"
    if _COLLECTION_RE.search(title) or share >= max_share:
        return "collection_title"
    if _FILE_RE.search(title) or any(not _ORDINAL_RE.match(m) for m in _MIXED_RE.findall(title)):
        return "file_like_title"
    if not re.search(r"[^\W\d_]{2}", title):
        return "no_words"
    if words is not None:
        toks = _WORD_RE.findall(title)
        known = sum(_is_word(w, words) for w in toks)
        if not toks or known * 2 < len(toks):
            return "not_english"
    return None


def clean_keywords(raw: list[str], creator: str | None = None) -> list[str]:
    cr = WS_RE.sub(" ", html.unescape(creator or "")).strip().casefold()
    out: list[str] = []
    for k in raw:
        k = WS_RE.sub(" ", unmojibake(html.unescape(html.unescape(k))).replace("_", " ")).strip().lower()
        if k in _DROP_KEYWORDS or k.startswith("hash(") or (len(cr) >= 4 and cr in k) or k in out:
            continue
        out.append(k)
    return out


# --------------------------------------------------------------------------- SVG metadata


def local_name(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


@dataclass
class Drawing:
    path: Path
    id: str
    category: str
    title_raw: str | None = None
    keywords: list[str] = field(default_factory=list)
    creator: str | None = None
    body_hash: str = ""


def _agent_title(el: ET.Element) -> str | None:
    for a in el.iter():
        if local_name(a.tag) == "title" and a is not el and (a.text or "").strip():
            return a.text.strip()  # type: ignore[union-attr]
    return None


def read_metadata(root: ET.Element, d: Drawing) -> None:
    work = next((e for e in root.iter() if local_name(e.tag) == "Work"), None)
    if work is not None:
        for child in work:
            name = local_name(child.tag)
            if name == "title" and d.title_raw is None:
                d.title_raw = (child.text or "").strip() or None
            elif name == "subject":
                lis = [li.text or "" for li in child.iter() if local_name(li.tag) == "li"]
                d.keywords = lis if lis else re.split(r"[,;]", child.text or "")
            elif name == "creator" and d.creator is None:
                d.creator = _agent_title(child) or ((child.text or "").strip() or None)
    if d.title_raw is None:  # an SVG <title> child of the root, when the work has none
        t = next((c for c in root if local_name(c.tag) == "title"), None)
        if t is not None and (t.text or "").strip():
            d.title_raw = t.text.strip()  # type: ignore[union-attr]


def scan_drawings(src: Path, skipped: dict[str, list[str]], bad_files: dict[str, str], prog: Any) -> list[Drawing]:
    """Every ``.svg`` under ``src`` (sorted, no hidden files or symlinks) that the rasteriser can draw, with its
    metadata and a hash of its body; the others are listed in ``skipped`` / ``bad_files`` with their reason."""
    paths: list[Path] = []
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths.extend(
            Path(folder) / f for f in sorted(files) if f.lower().endswith(".svg") and not f.startswith(".")
        )
    task = prog.add_task("reading SVG metadata", total=len(paths)) if prog is not None else None
    out: list[Drawing] = []
    for p in paths:
        if prog is not None:
            prog.advance(task)
        rel = p.relative_to(src).as_posix()
        rid = rel[: -len(".svg")]
        category = os.path.dirname(rel)
        if p.is_symlink():
            skipped.setdefault("symlink", []).append(rid)
            continue
        try:
            data = p.read_bytes()
        except OSError as e:
            skipped.setdefault("unreadable", []).append(rid)
            bad_files[rid] = f"unreadable ({e.strerror or e})"
            continue
        if b"<!ENTITY" in data:
            skipped.setdefault("svg_entities", []).append(rid)
            bad_files[rid] = "declares <!ENTITY>: the rasteriser (CairoSVG via defusedxml) refuses entities"
            continue
        if PERCENT_OPACITY_RE.search(data):
            skipped.setdefault("svg_unsupported", []).append(rid)
            bad_files[rid] = "opacity given in percent, which the rasteriser (CairoSVG) cannot parse"
            continue
        try:
            root = ET.fromstring(data)
        except ET.ParseError as e:
            skipped.setdefault("bad_svg", []).append(rid)
            bad_files[rid] = f"not well-formed XML ({e})"
            continue
        if local_name(root.tag) != "svg":
            skipped.setdefault("bad_svg", []).append(rid)
            bad_files[rid] = f"root element is <{local_name(root.tag)}>, not <svg>"
            continue
        w, h = root.get("width") or "", root.get("height") or ""
        if not root.get("viewBox") and not (w and h and "%" not in w + h):
            skipped.setdefault("svg_no_size", []).append(rid)
            bad_files[rid] = (
                "no viewBox and no absolute width/height: the rasteriser (CairoSVG) cannot size it"
            )
            continue
        d = Drawing(path=p, id=rid, category=category)
        read_metadata(root, d)
        d.body_hash = hashlib.sha256(METADATA_RE.sub(b"", data)).hexdigest()
        out.append(d)
    return out

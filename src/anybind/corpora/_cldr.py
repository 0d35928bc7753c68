"""CLDR emoji annotations: each emoji's name and keywords in every locale, with CLDR's inheritance.

Source: ``common/annotations/<locale>.xml`` of the Unicode CLDR (Debian
``unicode-cldr-core``: ``/usr/share/unicode/cldr/common``, CLDR 41, 146
locales besides ``root``).  An ``<annotation cp="😀" type="tts">`` is the
emoji's *name* in that locale ("grinning face", "Grinsendes Gesicht"); the
one without ``type`` lists *keywords* separated by ``|``.

Rules
-----

* **Drafts.**  Values marked ``draft="unconfirmed"`` or ``"provisional"``
  are not used (CLDR's own release threshold is ``contributed``); their
  number is reported.  ``↑↑↑`` (CLDR's "inherit" marker) and blank values
  count as absent.
* **Inheritance.**  A locale lacking a value takes its parent's: the parent
  is the one ``supplemental/supplementalData.xml`` names
  (``<parentLocale>``: ``en_GB`` -> ``en_001``, ``nn`` -> ``no``, ``sr_Latn``
  -> ``root``), else the locale less its last ``_`` part (``de_CH`` ->
  ``de``), else ``root`` (no value).
* **Captions** (:meth:`CldrAnnotations.captions`): the name in each locale
  as ``text_<locale>``, the locale normalised like Tux Paint's languages
  (lower case, ``-``/``@`` as ``_``: ``text_fr``, ``text_pt_pt``,
  ``text_sr_latn``, ``text_zh_hant_hk``), so one language has one field name
  across corpora and :func:`anybind.data.manifest.base_modality` maps every
  one of them to ``text``.  A locale whose parent is not ``root`` gets a
  field only where its name differs from its parent's (``text_de_ch`` only
  where Swiss German differs from German): the rest is the parent's caption
  again.  ``en`` is the parent of the record's ``text`` (the name in
  ``emoji-test.txt``): ``text_en`` appears only where CLDR's English name
  differs from it (never, for CLDR 41 and emoji 15.0).  Whitespace is
  collapsed; case and quotes are kept as CLDR writes them.
* **Keywords**: the English keywords (``en``, inherited like names), in
  CLDR's order without repeats, joined with ``", "`` as ``text_keywords``
  -- the field and format of the Open Clip Art corpus' keywords, so it is a
  caption like the others (``base_modality`` -> ``text``), not a label:
  labels are one class per record, keywords are a bag of words.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ._build import stable_message
from .tuxpaint_source import normalise_lang

__all__ = ["CLDR_PACKAGE", "DEFAULT_CLDR", "CldrAnnotations", "read_cldr"]

CLDR_PACKAGE = "unicode-cldr-core"
DEFAULT_CLDR = "/usr/share/unicode/cldr/common"
_DROPPED_DRAFTS = frozenset({"unconfirmed", "provisional"})
_INHERIT = "↑↑↑"
_WS_RE = re.compile(r"\s+")


@dataclass
class CldrAnnotations:
    """The names and keywords of some emoji in every CLDR locale read (see the module docstring)."""

    names: dict[str, dict[str, str]] = field(default_factory=dict)  # locale -> emoji -> name
    keywords: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # locale -> emoji -> keywords
    parents: dict[str, str] = field(default_factory=dict)  # from supplementalData.xml
    version: str = "unknown"
    drafts_dropped: int = 0
    bad_files: dict[str, str] = field(default_factory=dict)

    def parent(self, locale: str) -> str:
        if locale in self.parents:
            return self.parents[locale]
        return locale.rsplit("_", 1)[0] if "_" in locale else "root"

    def _resolved(self, table: dict, locale: str, emoji: str):
        seen = 0
        while locale != "root" and seen < 16:
            v = table.get(locale, {}).get(emoji)
            if v is not None:
                return v
            locale, seen = self.parent(locale), seen + 1
        return None

    def name(self, locale: str, emoji: str) -> str | None:
        """The name of ``emoji`` in ``locale``, inherited when the locale has none."""
        return self._resolved(self.names, locale, emoji)

    def captions(self, emoji: str, english: str) -> dict[str, str]:
        """``text_keywords`` and ``text_<locale>`` for one emoji; ``english`` is the record's own name."""
        out: dict[str, str] = {}
        kw = self._resolved(self.keywords, "en", emoji)
        if kw:
            out["text_keywords"] = ", ".join(kw)
        for loc in sorted(self.names):
            v = self.name(loc, emoji)
            if v is None:
                continue
            par = self.parent(loc)
            if loc == "en":
                if v == english:
                    continue
            elif par != "root" and self.name(par, emoji) == v:
                continue
            out[f"text_{normalise_lang(loc)}"] = v
        return out


    def describe(self, common: Path, records: list[dict], without: list[str]) -> dict[str, object]:
        """What ``corpus.json`` says about the CLDR captions of ``records``."""
        fields = Counter(k for r in records for k in r if k.startswith("text_") and k != "text_keywords")
        return {
            "dir": str(common),
            "version": self.version,
            "locales_read": len(self.names),
            "fields": len(fields),
            "captions": sum(fields.values()),
            "with_keywords": sum(1 for r in records if "text_keywords" in r),
            "drafts_dropped": self.drafts_dropped,
            "without_annotation": sorted(without),
            "bad_files": dict(sorted(self.bad_files.items())),
            "rule": "text_<locale> = CLDR tts name; a locale whose parent is not root only where it differs "
            "from its parent's; text_keywords = English keywords joined with ', '",
        }


def _clean(text: str | None) -> str | None:
    v = _WS_RE.sub(" ", text or "").strip()
    return None if not v or v == _INHERIT else v


def _parents(common: Path, cldr: CldrAnnotations, problems: Counter[str]) -> None:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import parse
    from xml.etree.ElementTree import ParseError

    path = common / "supplemental" / "supplementalData.xml"
    try:
        root = parse(path).getroot()
    except (OSError, ParseError, DefusedXmlException, ValueError) as e:  # parents fall back to truncation
        problems["cldr_file_unreadable"] += 1
        cldr.bad_files[path.name] = stable_message(f"{type(e).__name__}: {e}", common)
        return
    for pl in root.iter("parentLocale"):
        for loc in (pl.get("locales") or "").split():
            cldr.parents[loc] = pl.get("parent") or "root"


def _version(common: Path) -> str:
    try:
        m = re.search(r'cldrVersion CDATA #FIXED "([^"]+)"', (common / "dtd" / "ldml.dtd").read_text("utf-8"))
    except OSError:
        return "unknown"
    return m.group(1) if m else "unknown"


def read_cldr(common: str | Path, emoji: set[str], problems: Counter[str]) -> CldrAnnotations:
    """The annotations of ``emoji`` (characters) in every ``annotations/*.xml`` under ``common``.

    A file that does not parse is counted (``problems["cldr_file_unreadable"]``)
    and listed in ``bad_files``; no ``annotations`` folder is a :class:`DataError`.
    """
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import parse
    from xml.etree.ElementTree import ParseError

    common = Path(common)
    folder = common / "annotations"
    files = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: no CLDR annotations (*.xml) there: is {common} CLDR's common/ folder?")
    cldr = CldrAnnotations(version=_version(common))
    _parents(common, cldr, problems)
    for path in files:
        loc = path.stem
        if loc == "root":
            continue
        try:
            root = parse(path).getroot()
        except (OSError, ParseError, DefusedXmlException, ValueError) as e:
            problems["cldr_file_unreadable"] += 1
            cldr.bad_files[path.name] = stable_message(f"{type(e).__name__}: {e}", common)
            continue
        names: dict[str, str] = {}
        keywords: dict[str, list[str]] = {}
        for a in root.iter("annotation"):
            cp = a.get("cp")
            if cp not in emoji:
                continue
            if a.get("draft") in _DROPPED_DRAFTS:
                cldr.drafts_dropped += 1
                continue
            if a.get("type") == "tts":
                v = _clean(a.text)
                if v is not None:
                    names[cp] = v
            else:
                kws = [k for k in (_clean(x) for x in (a.text or "").split("|")) if k]
                if kws:
                    keywords[cp] = list(dict.fromkeys(kws))
        cldr.names[loc] = names
        cldr.keywords[loc] = keywords
    return cldr

"""Which manifest fields a fit binds: the base modalities by default; language variants are views of them.

A field ``<base>_<suffix>`` (``text_fr``, ``speech_de``, ``speech_name``) whose base field (``text``,
``speech``) is also in the manifest is a *variant* of that modality: the same items in another language (or
another take).  It is not a new modality, so a fit that is not told which fields to bind binds the base
modalities only, and says which variants it left out.  A variant's items embed through its base modality's
encoder (``space.embed("text", ["Un blaireau."])``), which is how they serve as evaluation queries (see
``anybind bench --task multilingual-retrieval``); naming one in ``modalities`` binds it as a modality of its
own.

A field no encoder can read (not a built-in modality, no encoder given for it) is left out with one warning,
instead of every record being rejected for it (a label-like one, ``"label": "cat"``, is told the form that works:
``"labels": {"label": "cat"}``).  A label key asked for that no record carries (:func:`require_label`) is an error
naming the keys present.  A field asked for by name that no record carries is an error
that names the nearest field (``imgae`` -> ``image``).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import DataError
from .manifest import RESERVED, Manifest, Record, base_modality, modality_kind

log = logging.getLogger(__name__)


def scan_fields(path: str | Path) -> Counter:
    """How many lines of a manifest carry each field (a quick read of the JSON keys; nothing is validated)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest does not exist")
    counts: Counter = Counter()
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:  # not JSON, not UTF-8: load_manifest reports the line
                    continue
                if isinstance(obj, dict):
                    counts.update(k for k, v in obj.items() if k not in RESERVED and v is not None)
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    return counts


def variant_base(name: str, fields: Iterable[str]) -> str | None:
    """The modality ``name`` is a variant of (``text_fr`` -> ``text`` if ``text`` is a field), or ``None``."""
    base = base_modality(name)
    return base if base != name and base in set(fields) else None


def split_variants(fields: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``(fields bound by default, {base: its variants})`` of a manifest's fields."""
    fields = sorted(set(fields))
    bound, variants = [], {}
    for f in fields:
        base = variant_base(f, fields)
        if base is None:
            bound.append(f)
        else:
            variants.setdefault(base, []).append(f)
    return bound, variants


def unreadable_fields(fields: Iterable[str], kinds: Mapping[str, str] | None = None) -> list[str]:
    """The fields no encoder can read: not a built-in modality and no kind (no encoder) given for them."""
    return sorted(f for f in set(fields) if modality_kind(f, kinds) is None)


def unreadable_warning(name: str, where: str, what: str = "bound") -> str:
    hint = _labels_hint(name) if _looks_like_labels(name) else _encoder_hint(name)
    return f"field {name!r} of {where} is not {what}: it is not a built-in modality; {hint}"


def _looks_like_labels(name: str) -> bool:
    """A top-level field meant as a label (``label``, ``lables``): its own field, not inside ``labels``."""
    return difflib.SequenceMatcher(None, name.lower(), "labels").ratio() >= 0.75


def _labels_hint(name: str) -> str:
    return f'labels go in one object, "labels": {{"{name}": ...}}'


def unlabelled_modalities(records: Sequence[Record], key: str, modalities: Iterable[str]) -> list[str]:
    """Those of ``modalities`` that some of ``records`` hold but none of those with the label ``key``: nothing for
    zero-shot to score there (left out, not reported as an accuracy of NaN over 0 items)."""
    return [m for m in modalities if any(r.has(m) for r in records)
            and not any(r.has(m) and key in (r.labels or {}) for r in records)]


def require_label(records: Sequence[Record], key: str, where: str, split: str | None = None,
                  path: str | Path | None = None, warn: bool = True, empty_ok: bool = True,
                  modalities: Iterable[str] = ()) -> int:
    """How many of ``records`` carry the label ``key``; none of them (and some given): a :class:`DataError` in one
    line naming ``where``, the key and the label keys present (and, when ``path``'s records hold ``key`` or a
    label-like name as a top-level field, the form that works); some without it: one warning counting them (unless
    not ``warn``), which also names those of ``modalities`` (the ones zero-shot scores) left with no labelled
    record (:func:`unlabelled_modalities`).  No records at all: refused the same way unless ``empty_ok`` (zero-shot
    scores none as n 0; a manifest read for its classes has none)."""
    have = sum(key in (r.labels or {}) for r in records)
    which = f"{split} " if split and split != "all" else ""
    if not have and (records or not empty_ok):
        keys = sorted({k for r in records for k in (r.labels or {})})
        msg = f"{where}: no {which}record has label {key!r} (labels present: {', '.join(keys) or 'none'})"
        top = scan_fields(path) if path is not None and Path(path).is_file() else {}
        misplaced = next((f for f in [key, *sorted(top)] if f in top and (f == key or _looks_like_labels(f))), None)
        if misplaced is not None:
            msg += f"; {misplaced!r} is a top-level field of {top[misplaced]} records: {_labels_hint(misplaced)}"
        raise DataError(msg)
    if warn and have < len(records):
        left = unlabelled_modalities(records, key, modalities)
        log.warning("%s: %d of the %d %srecords have no label %r; zero-shot scores the other %d%s", where,
                    len(records) - have, len(records), which, key, have,
                    f"; {', '.join(left)}: no labelled records (left out)" if left else "")
    return have


def _some(values: Sequence[str], n: int = 8) -> str:
    """Up to ``n`` of ``values``, and how many in all when there are more."""
    values = list(values)
    return ", ".join(values[:n]) + (f", ... ({len(values)} in all)" if len(values) > n else "") or "none"


def require_classes(records: Sequence[Record], key: str, classes: Sequence[str], where: str,
                    modality: str | None = None, split: str | None = None, warn: bool = True) -> int:
    """How many of the scored ``records`` (those with ``modality`` and the label ``key``) have a ``key`` value among
    ``classes``.  None of them (and some scored): a :class:`DataError` in one line naming ``where``, the classes, the
    values present and another label key whose values the classes are, if one is (a classifier scored on the wrong
    key); some outside: one warning counting them and naming the first (zero-shot counts them as wrong: no class
    can name them), unless not ``warn``."""
    scored = [r for r in records if (modality is None or r.has(modality)) and key in (r.labels or {})]
    known = {str(c) for c in classes}
    outside = [r for r in scored if str(r.labels[key]) not in known]
    what = " ".join(w for w in (split if split != "all" else None, modality, "record") if w)
    if scored and len(outside) == len(scored):
        hits = Counter(k for r in records for k, v in (r.labels or {}).items() if k != key and str(v) in known)
        msg = (f"{where}: no {what}'s label {key!r} is one of the {len(known)} classes (classes: {_some(classes)}; "
               f"values of {key!r} present: {_some(sorted({str(r.labels[key]) for r in scored}))})")
        if hits:
            msg += f"; the classes are values of label {min(hits, key=lambda k: (-hits[k], k))!r}"
        raise DataError(msg)
    if warn and outside:
        count = Counter(str(r.labels[key]) for r in outside)
        log.warning("%s: %d of the %d %ss scored have a label %r that is not one of the %d classes (%s; first: "
                    "record %r); counted as wrong", where, len(outside), len(scored), what, key, len(known),
                    _some([f"{v}: {c}" for v, c in count.most_common()]), outside[0].id)
    return len(scored) - len(outside)


def _encoder_hint(name: str) -> str:
    return (f"give it an encoder (anybind: -e {name}=PREFIX:NAME, see `anybind encoders`; "
            f"Python: encoders={{{name!r}: SPEC}})")


def check_fields(requested: Sequence[str], fields: Mapping[str, int], where: str,
                 kinds: Mapping[str, str] | None = None) -> None:
    """Refuse a requested field that no record carries (naming the nearest one) or that no encoder reads."""
    for name in requested:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            bound, variants = split_variants(fields)
            n_variants = sum(map(len, variants.values()))
            have = ", ".join(bound) + (f" and {n_variants} language variants" if variants else "")
            raise DataError(f"no field {name!r} in {where}{hint} (fields: {have or 'none'})")
        if modality_kind(name, kinds) is None:
            raise DataError(f"field {name!r} of {where} is not a built-in modality: {_encoder_hint(name)}")


def require_fields(path: str | Path, requested: Sequence[str], kinds: Mapping[str, str] | None = None
                   ) -> None:
    """:func:`check_fields` on a manifest file (its fields read by :func:`scan_fields`)."""
    check_fields(requested, scan_fields(path), str(path), kinds)


def _describe(variants: Mapping[str, list[str]]) -> str:
    parts = []
    for i, (base, vs) in enumerate(sorted(variants.items())):
        shown = ", ".join(vs[:3]) + (", ..." if len(vs) > 3 else "")
        parts.append(f"{len(vs)} {'variants ' if i == 0 else ''}of {base} ({shown})")
    return ", ".join(parts)


def fields_to_bind(
    manifests: Sequence[str | Path | Manifest],
    requested: Iterable[str] | None,
    kinds: Mapping[str, str] | None = None,
    named: Iterable[str] = (),
) -> list[str]:
    """The fields a fit on ``manifests`` binds: ``requested`` (checked), else every base modality and every
    field ``named`` (given an encoder of its own), variant or not.

    Logs which fields are bound and which were left as variants (or unread: no encoder for them).
    """
    fields: Counter = Counter()  # what a fit would read: a loaded manifest's fields, a file's
    written: Counter = Counter()  # what the files hold (a field whose every record is bad is still there)
    names = []
    kinds = dict(kinds or {})
    for m in manifests:
        if isinstance(m, Manifest):
            kinds = {**m.kinds, **kinds}  # the kinds it was loaded with
            fields.update(f for r in m.records for f in r.values)
            if m.path.is_file():
                written.update(scan_fields(m.path))
            names.append(str(m.path))
        else:
            fields.update(scan_fields(m))
            names.append(str(m))
    where = ", ".join(names)
    if requested is not None:
        requested = sorted(set(requested))
        check_fields(requested, fields + written, where, kinds)
        return requested
    bound, variants = split_variants(fields)
    named = set(named) & set(fields)
    bound = sorted(set(bound) | named)
    variants = {b: [v for v in vs if v not in named] for b, vs in variants.items()}
    variants = {b: vs for b, vs in variants.items() if vs}
    unread = unreadable_fields(bound, kinds)
    for f in unread:
        log.warning(unreadable_warning(f, where))
    bound = [f for f in bound if f not in unread]
    if variants:
        log.info("binding %s; not bound: %s -- a variant (another language) embeds through its base "
                 "modality's encoder, e.g. as an evaluation query; name it in --modalities (modalities=) to "
                 "bind it on its own",
                 ", ".join(bound) or "nothing", _describe(variants))
    else:
        log.info("binding %s", ", ".join(bound) or "nothing")
    return bound

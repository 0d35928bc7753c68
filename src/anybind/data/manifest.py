"""The JSONL manifest: one paired record per line.

Example line::

    {"id": "badger", "split": "train", "text": "A badger.", "text_fr": "Un blaireau.",
     "image": "img/badger.png", "audio": "snd/badger.ogg",
     "labels": {"category": "animals/mammals"}}

* ``id`` (required, unique) and ``split`` (``train``/``val``/``test``; when
  absent, a deterministic 70/10/20 split is derived from a hash of the id).
* Any subset of modality fields.  A field's *modality kind* comes from its
  base name (the part before the first ``_``): ``text*`` fields hold the text
  itself; ``image*``, ``audio*``, ``speech*``, ``timeseries*`` and ``video*``
  hold file paths relative to the manifest.  Other modality names (your own
  sensor, say) are declared by the caller through ``kinds={"imu": "key"}``
  (``"file"``, ``"text"`` or ``"key"`` -- a key for a ``vectors:`` encoder;
  ``true`` means "the record id").
* ``labels`` (a flat object) and ``meta`` (anything) are carried along.

The file is UTF-8, one record per ``\n``-terminated line (``\r\n`` too); a
byte-order mark at the start of the file, or of a line, is ignored.

An id must be reachable through its own URL ``/items/<id>``: it is refused when
empty, with leading or trailing whitespace, with a control character (``\n``,
``\r``, ``\t``, ...) or a lone surrogate, or with a ``.`` / ``..`` path segment
(see :func:`anybind.data.strings.id_problem`).  A text is empty when nothing is
left after removing whitespace and invisible format characters such as U+200B
(:func:`anybind.data.strings.is_blank`).

:func:`load_manifest` validates every record before anything is encoded:
a line that is not UTF-8, malformed JSON, missing/bad/duplicate id, bad split
name, unknown modality, empty text, missing/unreadable file, corrupt image or
audio.  Each bad record is reported with its line, id and reason, skipped and
counted; with ``strict=True`` the first report becomes a
:class:`~anybind.errors.DataError` listing them all.  One bad record never costs
the valid ones.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, unusable_file
from ..progress import progress_bar
from .strings import ID_RULE, id_problem, is_blank

if TYPE_CHECKING:
    from .checks import MediaChecks

SPLITS = ("train", "val", "test")
RESERVED = frozenset({"id", "split", "labels", "meta"})
BUILTIN_KINDS: dict[str, str] = {
    "text": "text",
    "image": "file",
    "audio": "file",
    "speech": "file",
    "timeseries": "file",
    "video": "file",
}
KINDS = ("text", "file", "key")


def base_modality(name: str) -> str:
    """``text_fr`` -> ``text``; ``speech_de`` -> ``speech``; ``image`` -> ``image``."""
    return name.split("_", 1)[0]


def hash_split(record_id: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    """Deterministic split from the id alone: stable when records are added or removed."""
    h = int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    if h < fractions[0] + fractions[1]:
        return "val"
    return "test"


@dataclass
class Record:
    """One valid record: its modality values are texts, absolute paths or keys."""

    id: str
    split: str
    values: dict[str, str]
    labels: dict[str, Any] = field(default_factory=dict)
    meta: Any = None
    line: int = 0

    def has(self, modality: str) -> bool:
        return modality in self.values


@dataclass
class BadRecord:
    line: int
    id: str | None
    reason: str

    def __str__(self) -> str:
        who = f"record {self.id!r}" if self.id is not None else "record"
        return f"line {self.line}: {who}: {self.reason}"


@dataclass
class Manifest:
    path: Path
    records: list[Record]
    bad: list[BadRecord]
    kinds: dict[str, str]
    #: media files decoded by this load, and those skipped because they passed before, unchanged
    media_checks: dict[str, int] = field(default_factory=lambda: {"decoded": 0, "unchanged": 0})

    @property
    def modalities(self) -> list[str]:
        """Every modality field present in at least one valid record, sorted."""
        return sorted({m for r in self.records for m in r.values})

    def split(self, name: str | None) -> list[Record]:
        if name is None or name == "all":
            return list(self.records)
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r} (use one of {', '.join(SPLITS)} or 'all')")
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            c = out.setdefault(r.split, {"records": 0})
            c["records"] += 1
            for m in r.values:
                c[m] = c.get(m, 0) + 1
        return out

    def report(self) -> str:
        """A human-readable list of the bad records, with a count per reason."""
        if not self.bad:
            return f"{self.path}: {len(self.records)} records, none bad"
        reasons = Counter(b.reason.split(":")[0].split(" (")[0] for b in self.bad)
        lines = [f"{self.path}: {len(self.records)} records kept, {len(self.bad)} bad records skipped:"]
        lines += [f"  {b}" for b in self.bad[:50]]
        if len(self.bad) > 50:
            lines.append(f"  ... and {len(self.bad) - 50} more")
        lines.append("  by reason: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common()))
        return "\n".join(lines)

    def fingerprint(self, modalities: Iterable[str] | None = None) -> str:
        """A hash of the records' ids, splits and modality values (what training saw)."""
        mods = set(modalities) if modalities is not None else None
        h = hashlib.sha256()
        for r in self.records:
            vals = {m: v for m, v in sorted(r.values.items()) if mods is None or m in mods}
            h.update(json.dumps([r.id, r.split, vals], sort_keys=True).encode())
        return h.hexdigest()[:16]


def modality_kind(name: str, kinds: Mapping[str, str] | None = None) -> str | None:
    if kinds and name in kinds:
        return kinds[name]
    if kinds and base_modality(name) in kinds:
        return kinds[base_modality(name)]
    return BUILTIN_KINDS.get(base_modality(name))


def _check_kind(name: str) -> str | None:
    """What decoding checks a file field (``None``: nothing to decode)."""
    base = base_modality(name)
    return {"image": "image", "audio": "audio", "speech": "audio", "timeseries": "timeseries", "video": "video"}.get(base)


def _check_media(kind: str, path: Path) -> None:
    from .media import load_audio, load_image

    if kind == "image":
        load_image(path, size=64)
    elif kind == "audio":
        load_audio(path)
    elif kind == "timeseries":
        from .series import load_series

        load_series(path)
    elif kind == "video":  # the header, the limits and the first frame (decoding all of it is the encoder's work)
        from .video import poster_frame

        poster_frame(path)


def load_manifest(
    path: str | Path,
    *,
    strict: bool = False,
    modalities: Iterable[str] | None = None,
    kinds: Mapping[str, str] | None = None,
    check_media: bool = True,
    check_cache: bool = True,
    progress: bool = False,
) -> Manifest:
    """Read and validate a JSONL manifest.

    Parameters
    ----------
    path: the manifest file; relative media paths resolve against its folder.
    strict: raise :class:`DataError` (listing every bad record) instead of skipping.
    modalities: only these modality fields are validated and kept (others are
        ignored, not rejected); ``None`` keeps every known modality.
    kinds: extra modality names and their kind (``"file"``, ``"text"``, ``"key"``).
    check_media: decode every image, audio and time series file (catches corrupt files
        before any encoding starts).
    check_cache: skip files that passed the same check before and have not changed since
        (same size and modification time; see :mod:`anybind.data.checks`); ``False`` decodes
        every file again.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest does not exist")
    for k, v in (kinds or {}).items():
        if v not in KINDS:
            raise DataError(f"modality {k!r}: kind must be one of {KINDS}, got {v!r}")
    wanted = set(modalities) if modalities is not None else None
    root = path.parent
    records: list[Record] = []
    bad: list[BadRecord] = []
    seen: dict[str, int] = {}
    tally = {"decoded": 0, "unchanged": 0}
    checks = None
    if check_media and check_cache:
        from .checks import MediaChecks, default_checks_path

        checks = MediaChecks(default_checks_path())
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    if lines and not lines[-1]:
        lines.pop()  # the final newline ends the last line; it does not start another

    it: Iterable[tuple[int, bytes]] = enumerate(lines, start=1)
    stack = ExitStack()  # the bar, stopped however loading ends
    bar = stack.enter_context(progress_bar(progress and len(lines) > 200, f"checking {path.name}", len(lines)))
    try:
        for lineno, data in it:
            bar.advance()
            raw, undecodable = _decode_line(data)
            if undecodable is not None:
                bad.append(BadRecord(lineno, None, undecodable))
                continue
            if not raw.strip():
                continue
            rec, err = _parse_record(raw, lineno, root, wanted, kinds, check_media, seen, checks, tally)
            if err is not None:
                bad.append(err)
            else:
                assert rec is not None
                seen[rec.id] = lineno
                records.append(rec)
    finally:
        stack.close()
        if checks is not None:
            checks.flush()  # what passed so far, even if loading stopped part-way
    man = Manifest(path=path, records=records, bad=bad, kinds=dict(kinds or {}), media_checks=tally)
    if strict and bad:
        raise DataError(man.report())
    return man


def _decode_line(data: bytes) -> tuple[str, str | None]:
    """One manifest line as text (a byte-order mark and a ``\r`` ending dropped), or why it is not UTF-8."""
    data = data.removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return "", f"not UTF-8 text (byte {e.start + 1} of the line, 0x{data[e.start]:02x}: {e.reason})"


def _parse_record(
    raw: str,
    lineno: int,
    root: Path,
    wanted: set[str] | None,
    kinds: Mapping[str, str] | None,
    check_media: bool,
    seen: dict[str, int],
    checks: "MediaChecks | None" = None,
    tally: dict[str, int] | None = None,
) -> tuple[Record | None, BadRecord | None]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return None, BadRecord(lineno, None, f"malformed JSON ({e.msg} at column {e.colno})")
    if not isinstance(obj, dict):
        return None, BadRecord(lineno, None, f"malformed record: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or is_blank(rid):
        return None, BadRecord(lineno, None, "missing id: every record needs a non-empty string 'id'")
    problem = id_problem(rid)
    if problem is not None:
        return None, BadRecord(lineno, rid, f"bad id: {problem}; {ID_RULE}")

    def bad(reason: str) -> tuple[None, BadRecord]:
        return None, BadRecord(lineno, rid, reason)

    if rid in seen:
        return bad(f"duplicate id: already used on line {seen[rid]}")
    split = obj.get("split")
    if split is None:
        split = hash_split(rid)
    elif split not in SPLITS:
        return bad(f"bad split name {split!r}: use one of {', '.join(SPLITS)}")
    labels = obj.get("labels", {})
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        return bad(f"bad labels: expected an object, got {type(labels).__name__}")
    values: dict[str, str] = {}
    for name, value in obj.items():
        if name in RESERVED:
            continue
        if wanted is not None and name not in wanted:
            continue  # a field not asked for is ignored, whatever it holds
        kind = modality_kind(name, kinds)
        if kind is None:
            return bad(
                f"unknown modality {name!r}: not one of {', '.join(sorted(BUILTIN_KINDS))}; give it an "
                f"encoder (anybind: -e {name}=PREFIX:NAME; Python: encoders={{{name!r}: SPEC}} or "
                f"kinds={{{name!r}: 'file'}})"
            )
        if value is None:
            continue  # an explicit null means "absent"
        if kind == "text":
            if not isinstance(value, str):
                return bad(f"{name}: expected a string, got {type(value).__name__}")
            if is_blank(value):
                detail = ": only whitespace and invisible characters" if value.strip() else ""
                return bad(f"empty text in {name!r}{detail}")
            values[name] = value
        elif kind == "key":
            if value is True:
                value = rid
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                return bad(f"{name}: expected a key (string) or true, got {value!r}")
            values[name] = str(value)
        else:
            if not isinstance(value, str) or not value.strip():
                return bad(f"{name}: expected a file path, got {value!r}")
            p = Path(value)
            p = p if p.is_absolute() else root / p
            if not p.exists():
                return bad(f"missing file for {name}: {value} (looked at {p})")
            if not p.is_file():
                return bad(f"{name}: {value} is not a regular file")
            try:
                with open(p, "rb") as f:
                    f.read(1)
            except OSError as e:
                return bad(f"unreadable file for {name}: {value} ({e.strerror or e})")
            kind = _check_kind(name) if check_media else None
            if kind is not None:
                st = p.stat()
                if checks is not None and checks.known(p, kind, st):
                    if tally is not None:
                        tally["unchanged"] += 1
                else:
                    if tally is not None:
                        tally["decoded"] += 1
                    try:
                        _check_media(kind, p)
                    except DataError as e:
                        return bad(unusable_file(name, e))
                    if checks is not None:
                        checks.remember(p, kind, st)
            values[name] = str(p)
    return Record(id=rid, split=split, values=values, labels=labels, meta=obj.get("meta"), line=lineno), None

"""The outputs of ``anybind audit``: the JSONL of every record's audit, a self-contained HTML page (the
report's look, :mod:`anybind.pagekit`: thumbnails and sound players inline), and a cleaned manifest
(``--fix drop``: the flagged records left out; ``--fix flag``: every record kept, flagged ones labelled
``audit=<kinds>``), written to a new file -- the original manifest is never touched."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit import KINDS, AuditResult
from .errors import DataError
from .pagekit import CSS, esc, num, table, thumbnail
from .version import __version__

if TYPE_CHECKING:
    from .data.manifest import Manifest

GENERATOR = "<meta name='generator' content='anybind audit'>"
JSONL_MARK = b'"anybind_audit"'
CLEANED_MARK = b"\0anybind cleaned manifest"  # a manifest holds no marker: replacing one needs overwrite
FIXES = ("drop", "flag")
MAX_AUDIO_BYTES = 400_000  # larger sounds are linked by name, not embedded
# the records table: text left-aligned, ids may break anywhere, the reasons get the room
PAGE_CSS = ("#records+table{width:100%;table-layout:fixed}#records+table td{vertical-align:top;text-align:left;overflow-wrap:anywhere}"
            "#records+table td:nth-child(5) audio{width:100%}"
            "#records+table th:nth-child(1){width:2.5em}#records+table th:nth-child(2){width:3.5em}"
            "#records+table th:nth-child(3){width:13em}#records+table th:nth-child(4){width:3.5em}"
            "#records+table th:nth-child(5){width:14em}#records+table th:nth-child(6){width:9em}")


def audit_lines(result: AuditResult) -> list[str]:
    """The JSONL: one line per record, highest score first."""
    return [json.dumps({"anybind_audit": 1, **r.to_dict()}, ensure_ascii=False) for r in result.records]


def _audio(path: str) -> str:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_AUDIO_BYTES:
            return esc(p.name)
        blob = p.read_bytes()
    except OSError:
        return esc(p.name)
    kind = {".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".flac": "audio/flac",
            ".mp3": "audio/mpeg"}.get(p.suffix.lower(), "audio/wav")
    return f"<audio controls preload='none' src='data:{kind};base64,{base64.b64encode(blob).decode('ascii')}'></audio>"


def _media(values: dict[str, Any], kinds: dict[str, str]) -> str:
    out = []
    for m, v in sorted(values.items()):
        kind = kinds.get(m, "file")
        if kind == "text":
            out.append(f"<div><b>{esc(m)}</b>: {esc(v)}</div>")
        elif kind == "image":
            out.append(thumbnail(v) or esc(Path(str(v)).name))
        elif kind == "audio":
            out.append(_audio(str(v)))
        else:
            out.append(f"<div><b>{esc(m)}</b>: {esc(Path(str(v)).name)}</div>")
    return "".join(out)


def audit_html(result: AuditResult, man: "Manifest", kinds: dict[str, str], top: int = 100) -> str:
    """The page: the leakage counts per split pair, then the ``top`` records with media and reasons."""
    by_id = {r.id: r for r in man.records}
    leak_mods = sorted({m for c in result.leakage.values() for m in c if m != "records"})
    rows = []
    for i, ra in enumerate(result.records[:top]):
        rec = by_id.get(ra.id)
        reasons = "".join(f"<div><b>{esc(f.kind)}</b> {num(f.score, 2)}: {esc(f.detail)}</div>" if f.fired else
                          f"<div class='muted'><b>{esc(f.kind)}</b> {num(f.score, 2)} (did not fire): {esc(f.detail)}</div>"
                          for f in sorted(ra.findings, key=lambda f: -f.score) if f.score > 0)
        labels = ", ".join(f"{esc(k)}={esc(v)}" for k, v in (rec.labels or {}).items()) if rec else ""
        rows.append([str(i + 1), num(ra.score), esc(ra.id), esc(ra.split),
                     _media(rec.values, kinds) if rec else "", labels, reasons])
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{GENERATOR}",
        f"<title>anybind audit: {esc(result.manifest)}</title><style>{CSS}{PAGE_CSS}</style></head><body>",
        f"<h1>anybind audit: {esc(result.manifest)}</h1>",
        f"<p class='muted'>{len(result.records)} records; label {esc(result.label or '-')}; "
        f"settings {esc(json.dumps(result.settings))}; written {esc(time.strftime('%Y-%m-%d %H:%M:%S'))} by anybind "
        f"{esc(__version__)}</p>",
        (f"<p><b>Unreadable</b>: {num(sum(result.unreadable.values()))} records with a file that could not be read, "
         "audited without it (" + esc(", ".join(f"{w} x{n}" for w, n in sorted(result.unreadable.items()))) + ").</p>"
         if result.unreadable else ""),
        "<p class='muted'>Checks: <b>unreadable</b> (a file that cannot be read now: corrupt, an SVG past its "
        "rendering budget, no renderer; left out of that modality's checks), "
        "<b>blank</b> (a near-uniform picture: no evidence, left out of the other "
        "checks), <b>mismatch</b> (the record's modalities disagree), <b>leak</b> (a duplicate "
        "in another split), <b>label</b> (its label disagrees with its neighbours' and the zero-shot prediction), "
        "<b>outlier</b> (far from every item of its modality). A record's score is its highest check.</p>",
        "<h2 id='leakage'>Leakage across splits</h2>",
        table(["split pair", "record pairs", *leak_mods],
              [[esc(sp), num(c["records"]), *[num(c.get(m, 0)) for m in leak_mods]]
               for sp, c in sorted(result.leakage.items())])
        if result.leakage else "<p>No duplicates across splits.</p>",
        f"<h2 id='records'>The {min(top, len(result.records))} records most worth a look</h2>",
        table(["#", "score", "id", "split", "items", "labels", "reasons"], rows),
        "</body></html>",
    ]
    return "".join(parts)


def cleaned_lines(manifest_path: str | Path, result: AuditResult, fix: str, threshold: float) -> tuple[list[str], int]:
    """The manifest's lines with the records scoring ``>= threshold`` (:attr:`~anybind.audit.RecordAudit.acted`: a
    loose class' label at its weighed score) dropped or labelled ``audit=<kinds>``; every other line is kept byte
    for byte.  Returns the lines and how many records were dropped / flagged."""
    if fix not in FIXES:
        raise DataError(f"unknown fix {fix!r}: use {' or '.join(FIXES)}")
    flagged = {r.id: ",".join(sorted({f.kind for f in r.findings if f.acted >= threshold}) or {"score"})
               for r in result.flagged(threshold)}
    out, n = [], 0
    with open(manifest_path, encoding="utf-8") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            rid = str(obj.get("id")) if isinstance(obj, dict) and "id" in obj else None
            if rid not in flagged:
                out.append(line if line.endswith("\n") else line + "\n")
                continue
            n += 1
            if fix == "flag":
                labels = obj.get("labels") if isinstance(obj.get("labels"), dict) else {}
                obj["labels"] = {**labels, "audit": flagged[rid]}
                out.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return out, n


def check_outputs(
    manifest_path: str | Path | None, *, jsonl: str | Path | None = None, html: str | Path | None = None,
    fix: str | None = None, fix_out: str | Path | None = None, overwrite: bool = False,
) -> None:
    """Refuse unsafe outputs before any work (``anybind audit`` calls this before embedding anything): a fix
    without ``fix_out``, the audited manifest itself or two outputs at one path, someone else's file (see
    :func:`anybind.io.check_output_file`; the JSONL and the page are replaced when this program wrote them,
    a cleaned manifest -- an ordinary manifest, no marker -- only with ``overwrite``)."""
    from .io import check_output_file

    if fix is not None and fix not in FIXES:
        raise DataError(f"unknown fix {fix!r}: use {' or '.join(FIXES)}")
    if fix is not None and fix_out is None:
        raise DataError("--fix needs --out FILE for the cleaned manifest (the original is never changed)")
    seen: dict[Path, str] = {}
    if manifest_path is not None:
        seen[Path(manifest_path).expanduser().resolve()] = "the audited manifest itself"
    for path, mark in ((jsonl, JSONL_MARK), (html, GENERATOR.encode()), (fix_out, CLEANED_MARK)):
        if path is None:
            continue
        where = Path(path).expanduser().resolve()
        if where in seen:
            raise DataError(f"{path}: is {seen[where]}; write each output to its own new file "
                            "(the audited manifest is never changed)")
        seen[where] = "another output of this audit"
        check_output_file(path, mark, overwrite)


def write_audit(
    result: AuditResult, man: "Manifest", kinds: dict[str, str], *, jsonl: str | Path | None = None,
    html: str | Path | None = None, fix: str | None = None, fix_out: str | Path | None = None,
    threshold: float = 0.75, overwrite: bool = False, top: int = 100,
) -> dict[str, Any]:
    """Write the requested outputs (checked first with :func:`check_outputs`); returns what was written and
    how many records the fix dropped or flagged."""
    from .io import atomic_write_bytes

    check_outputs(None if man is None else man.path, jsonl=jsonl, html=html, fix=fix, fix_out=fix_out,
                  overwrite=overwrite)
    done: dict[str, Any] = {}
    if jsonl is not None:
        atomic_write_bytes(Path(jsonl), ("\n".join(audit_lines(result)) + "\n").encode("utf-8"))
        done["jsonl"] = str(jsonl)
    if html is not None:
        atomic_write_bytes(Path(html), audit_html(result, man, kinds, top).encode("utf-8"))
        done["html"] = str(html)
    if fix is not None and fix_out is not None:
        lines, n = cleaned_lines(man.path, result, fix, threshold)
        atomic_write_bytes(Path(fix_out), "".join(lines).encode("utf-8"))
        done.update(fix=fix, fixed=n, out=str(fix_out))
    return done


__all__ = ["FIXES", "KINDS", "audit_html", "audit_lines", "check_outputs", "cleaned_lines", "write_audit"]

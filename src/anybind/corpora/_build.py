"""What every packaged-corpus builder shares: an atomic build folder, progress, and the files it writes.

A corpus folder holds ``manifest.jsonl`` (the format of
:mod:`anybind.data.manifest`), ``corpus.json`` (provenance, counts, what was
kept and dropped and why), ``LICENSE`` and ``SOURCE.md``, and usually
``media/``.  :func:`build_atomically` builds it in a temporary folder next to
``out_dir`` that replaces ``out_dir`` only once everything is written; an
existing ``out_dir`` is replaced only when it is empty or a previous build of
the same corpus (its ``corpus.json`` names it).  :func:`finish_corpus` writes
the manifest and ``corpus.json`` with the keys every corpus has (``name``,
``counts``, ``skipped``, ``skipped_ids``, ``problems``, ``manifest_sha256``)
plus the builder's own.  Nothing time-dependent is written, so the same
inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.manifest import SPLITS, Manifest, base_modality, load_manifest
from ..errors import DataError
from ..progress import make_progress

__all__ = [
    "CorpusSummary",
    "build_atomically",
    "corpus_counts",
    "finish_corpus",
    "is_eval_only",
    "read_corpus_meta",
    "write_license",
]

@dataclass
class CorpusSummary:
    """What a corpus build produced (the same numbers are in ``corpus.json``)."""

    name: str
    out_dir: Path
    manifest: Path
    records: int
    splits: dict[str, int]
    modalities: dict[str, int]
    skipped: dict[str, int]
    problems: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        sp = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        mods = ", ".join(f"{k} {v}" for k, v in self.modalities.items())
        sk = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{self.name}: {self.records} records ({sp}) in {self.manifest}\n"
            f"  with {mods}\n  skipped: {sk}\n  built in {self.seconds:.1f} s"
        )



_NOT_MODALITIES = frozenset({"id", "split", "labels", "meta"})


def previous_build(out_dir: Path, name: str) -> bool:
    """True when ``out_dir`` may be replaced: absent, empty, or an earlier build of corpus ``name``."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return True
    if not out_dir.is_dir() or out_dir.is_symlink():
        return False
    if not any(out_dir.iterdir()):
        return True
    try:
        meta = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("name") == name


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_atomically(
    name: str,
    out_dir: str | os.PathLike[str],
    fill: Callable[[Path, Path, Any], CorpusSummary],
    progress: bool = True,
) -> CorpusSummary:
    """Run ``fill(tmp, out_dir, prog)`` in a fresh folder that then replaces ``out_dir``.

    ``fill`` writes the corpus into ``tmp`` (paths in the manifest are relative
    to it, which is also ``out_dir`` once in place) and returns its summary.
    On any failure the temporary folder is removed and ``out_dir`` is untouched.
    """
    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    if not previous_build(out, name):
        raise DataError(
            f"{out} exists and is not a previous build of the {name} corpus "
            "(no corpus.json naming it): refusing to replace it; pick another out_dir or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is not
    prog = make_progress(progress)
    try:
        if prog is not None:
            prog.start()
        summary = fill(tmp, out, prog)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if prog is not None:
            prog.stop()
    summary.seconds = time.perf_counter() - t0
    return summary


def corpus_counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records per split, and per modality family (``text``, ``image``...; ``text_fr`` counts as text)."""
    fams: list[str] = []
    fields: Counter[str] = Counter()
    for r in records:
        for k in r:
            if k not in _NOT_MODALITIES:
                fields[k] += 1
                if base_modality(k) not in fams:
                    fams.append(base_modality(k))
    fams.sort()
    modalities = {m: 0 for m in fams}
    per_split = {s: {"records": 0, **{m: 0 for m in fams}} for s in SPLITS}
    for r in records:
        per_split[r["split"]]["records"] += 1
        for m in {base_modality(k) for k in r if k not in _NOT_MODALITIES}:
            modalities[m] += 1
            per_split[r["split"]][m] += 1
    return {
        "records": len(records),
        "splits": {s: per_split[s]["records"] for s in SPLITS},
        "modalities": modalities,
        "per_split": per_split,
        "fields": dict(sorted(fields.items())),
    }


def finish_corpus(
    tmp: Path,
    out_dir: Path,
    name: str,
    records: list[dict[str, Any]],
    meta: Mapping[str, Any],
    skipped: Mapping[str, list[str]],
    problems: Mapping[str, int] | None = None,
    max_ids: int | None = None,
) -> CorpusSummary:
    """Write ``manifest.jsonl`` and ``corpus.json`` into ``tmp``; return the summary.

    ``meta`` holds the builder's own keys (description, source, split rule...);
    ``skipped`` maps a reason to the ids dropped for it (every drop has one);
    ``max_ids`` caps the ids listed per reason in ``corpus.json`` (the counts
    are always complete).
    """
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = [k for k, v in Counter(ids).items() if v > 1]
        raise DataError(f"{name}: duplicate record ids {dup[:5]}")
    manifest = tmp / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    counts = corpus_counts(records)
    skipped_counts = {k: len(v) for k, v in sorted(skipped.items()) if v}
    probs = {k: v for k, v in sorted((problems or {}).items()) if v}

    def listed(v: list[str]) -> list[str]:
        v = sorted(v)
        return v if max_ids is None or len(v) <= max_ids else v[:max_ids] + [f"... {len(v) - max_ids} more"]

    out: dict[str, Any] = {"name": name}
    out.update(meta)
    out.update(
        {
            "manifest": "manifest.jsonl",
            "counts": counts,
            "kept": len(records),
            "dropped": sum(skipped_counts.values()),
            "skipped": skipped_counts,
            "skipped_ids": {k: listed(v) for k, v in sorted(skipped.items()) if v},
            "problems": probs,
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        }
    )
    (tmp / "corpus.json").write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return CorpusSummary(
        name=name,
        out_dir=out_dir,
        manifest=out_dir / "manifest.jsonl",
        records=len(records),
        splits=counts["splits"],
        modalities=counts["modalities"],
        skipped=skipped_counts,
        problems=probs,
    )


def write_license(
    tmp: Path,
    copyright_files: Mapping[str, Path],
    fallback: str,
    source_md: str,
    texts: Mapping[str, str] | None = None,
) -> None:
    """``LICENSE``: the packages' copyright files then ``texts`` (label -> text), or ``fallback``; ``SOURCE.md``."""
    parts = []
    for label, path in copyright_files.items():
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        parts.append(f"===== {label} ({path}) =====\n\n{text.rstrip()}\n")
    for label, text in (texts or {}).items():
        parts.append(f"===== {label} =====\n\n{text.rstrip()}\n")
    if parts:
        (tmp / "LICENSE").write_text("\n".join(parts), encoding="utf-8")
    else:
        (tmp / "LICENSE").write_text(fallback.rstrip() + "\n", encoding="utf-8")
    (tmp / "SOURCE.md").write_text(source_md.rstrip() + "\n", encoding="utf-8")


def stable_message(msg: str, *roots: Path) -> str:
    """An error message fit for ``corpus.json``: build folders and memory addresses removed."""
    for r in roots:
        msg = msg.replace(str(r) + os.sep, "")
    return re.sub(r" at 0x[0-9a-fA-F]+", "", msg)


def read_corpus_meta(manifest: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``corpus.json`` beside a manifest (built by :mod:`anybind.corpora`), or None."""
    p = Path(manifest)
    meta_path = (p if p.is_dir() else p.parent) / "corpus.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_eval_only(manifest: str | os.PathLike[str]) -> bool:
    """True for a corpus marked ``"eval_only": true`` (Fashion-MNIST): never train on it by default."""
    meta = read_corpus_meta(manifest)
    return bool(meta and meta.get("eval_only") is True)


def read_source_manifest(path: Path, modalities: list[str]) -> tuple[Manifest, dict[str, list[str]], Counter[str]]:
    """The manifest a derived corpus builds from (e.g. Tux Paint's), media unchecked, with its bad records
    already counted: ``(manifest, skipped, problems)`` to start the derived corpus' own accounts with."""
    man = load_manifest(path, modalities=modalities, check_media=False)
    skipped: dict[str, list[str]] = {}
    problems: Counter[str] = Counter()
    if man.bad:
        problems["tux_bad_records"] = len(man.bad)
        skipped["tux_bad_record"] = [b.id or f"line {b.line}" for b in man.bad]
    return man, skipped, problems


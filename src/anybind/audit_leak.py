"""The audit's checks judged outside the joint space (:mod:`anybind.audit`): cross-split duplicates (**leak**) and
near-uniform pictures (**blank**), both read from :mod:`anybind.duplicates`, and the :class:`Finding` every
check reports.

* **blank** -- an image whose ink fits in less than :data:`~anybind.duplicates.BLANK_EXTENT` of it (an SVG that
  renders empty, a white-on-white stamp, a tiny speck; :attr:`~anybind.duplicates.ImagePrints.blank`).  Such a picture
  carries no evidence: it is reported once, as blank, and left out of every other check of its modality (before
  issue 20's fix, blank renders were pHash copies of each other, 0 bits apart, and topped the mismatches).
  Score 1 for an empty render, 0.75 for a speck.
* **unreadable** -- a record one of whose files cannot be read now (corrupt, an SVG past its rendering budget
  ``max_svg_seconds`` or refused by a media limit before rendering, no renderer process started on a busy machine:
  :func:`~anybind.errors.unusable_file`'s one-line reason): reported, and left out of every check of that modality,
  so that one slow or broken picture never stops the audit of the others (:func:`embed_readable`,
  :func:`readable_prints`).  Score 1 for a file found unusable, :data:`NOT_READ_SCORE` for one that was only not
  read in time or is over a limit (it may be fine: not acted on by ``--fix`` at the default threshold).
* **leak** -- duplicates across splits: identical content, a copy, a recoloured variant, an edited copy (the
  same layout with a local change) or a look-alike per modality (:func:`duplicate_pairs`); a record pair's
  score is the share of the modalities both have that are duplicated, a variant, an edited copy or a look-alike
  counting half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .duplicates import ImagePrints, encoder_features, image_prints, near_pairs
from .errors import render_refused, render_timed_out, renderer_unavailable, unusable_file
from .metrics import Embedded, content_groups

if TYPE_CHECKING:
    from .data.manifest import Record
    from .space import Space


@dataclass
class Finding:
    """One reason to look at a record.  ``fired``: the check found something (a duplicate, an outlier, a blank
    picture; a mismatch or a label at a score of :data:`anybind.audit.FIRES` or more); a finding that did not fire
    is kept for its score and detail but not listed in the record's ``kinds``."""

    kind: str
    score: float
    detail: str
    other: str | None = None  # the other record (a duplicate)
    fired: bool = True
    #: the score as its check weighs it (a loose class' label finding: score x the class' weight), which decides
    #: whether it fires and what ``--fix`` acts on; None: the score itself
    weighed: float | None = None

    @property
    def acted(self) -> float:
        """The score ``--fix`` compares with its threshold: :attr:`weighed` where the check weighs it."""
        return float(self.score if self.weighed is None else self.weighed)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "score": round(float(self.score), 4), "detail": self.detail}
        if self.other is not None:
            d["other"] = self.other
        if not self.fired:
            d["fired"] = False
        if self.weighed is not None and self.weighed < self.score:
            d["weighed"] = round(float(self.weighed), 4)
        return d


#: the score of an unreadable finding for a file that was not read in time (an SVG over its rendering budget, no
#: renderer process) or refused by a media limit before rendering: a reason to look, not evidence the record is
#: wrong; a file found corrupt scores 1
NOT_READ_SCORE = 0.5


def unreadable_finding(modality: str, why: str) -> Finding:
    """The finding of a record whose ``modality`` file could not be read (``why``: the decoder's error or its
    :class:`~anybind.errors.Reason`, whose class tells a file not read or over a limit from a corrupt one)."""
    not_read = renderer_unavailable(why) or render_timed_out(why) or render_refused(why)
    return Finding("unreadable", NOT_READ_SCORE if not_read else 1.0,
                   f"{unusable_file(modality, why)}; left out of the {modality} checks")


def _add(found: dict[str, Finding], rid: str, f: Finding) -> None:
    if rid not in found or f.score > found[rid].score:
        found[rid] = f


def _keep(e: Embedded, keep: Sequence[int]) -> Embedded:
    return Embedded([e.ids[i] for i in keep], e.vectors[list(keep)], None if e.keys is None else [e.keys[i] for i in keep])


def embed_readable(space: "Space", records: Sequence["Record"], modalities: Sequence[str], cache=None,
                   progress: bool = False) -> tuple[dict[str, Embedded], dict[str, Finding]]:
    """Each modality's embeddings of the records that have it (as :func:`anybind.evaluate.embed_records`), an item
    that cannot be decoded left out of its modality and reported: ``(embeddings, {record id: unreadable finding})``."""
    embs: dict[str, Embedded] = {}
    found: dict[str, Finding] = {}
    for m in modalities:
        have = [r for r in records if r.has(m)]
        if not have:
            continue
        values = [r.values[m] for r in have]
        bad: dict[int, str] = {}
        X = space.embed(m, values, cache=cache, progress=progress, bad=bad)
        for i, why in bad.items():
            _add(found, have[i].id, unreadable_finding(m, why))
        keep = [i for i in range(len(have)) if i not in bad]
        enc = space.encoder(m)
        if keep:
            embs[m] = Embedded([have[i].id for i in keep], X[keep], [enc.content_key(values[i]) for i in keep])
    return embs, found


def readable_prints(space: "Space", records: Sequence["Record"], embs: dict[str, Embedded], progress: bool = False,
                    ) -> tuple[dict[str, ImagePrints], dict[str, Embedded], dict[str, Finding]]:
    """:func:`read_prints`, an image that cannot be decoded now (a slow SVG past ``max_svg_seconds``) left out of its
    modality and reported: ``(prints, embeddings without those images, {record id: unreadable finding})``."""
    values = {r.id: r.values for r in records}
    prints: dict[str, ImagePrints] = {}
    out = dict(embs)
    found: dict[str, Finding] = {}
    for m in image_modalities(space, embs):
        e = embs[m]
        bad: dict[int, str] = {}
        prints[m] = image_prints([values[i][m] for i in e.ids], progress=progress, bad=bad)
        for i, why in bad.items():
            _add(found, e.ids[i], unreadable_finding(m, why))
        if bad:
            out[m] = _keep(e, [i for i in range(len(e.ids)) if i not in bad])
    return prints, out, found


def image_modalities(space: "Space", embs: dict[str, Embedded]) -> list[str]:
    return [m for m in embs if space.encoder(m).modality == "image"]


def read_prints(space: "Space", records: Sequence["Record"], embs: dict[str, Embedded],
                progress: bool = False) -> dict[str, ImagePrints]:
    """:class:`~anybind.duplicates.ImagePrints` of each image modality's items, in ``embs`` order (an undecodable
    image is a :class:`~anybind.errors.DataError`; :func:`readable_prints` reports it and reads the others)."""
    values = {r.id: r.values for r in records}
    return {m: image_prints([values[i][m] for i in embs[m].ids], progress=progress)
            for m in image_modalities(space, embs)}


def blank_findings(embs: dict[str, Embedded], prints: dict[str, ImagePrints]
                   ) -> tuple[dict[str, float], dict[str, Finding]]:
    """Per record with a blank picture its score (1 for an empty render, 0.75 for a speck) and finding."""
    best: dict[str, float] = {}
    why: dict[str, Finding] = {}
    for m, pr in prints.items():
        for k in np.flatnonzero(pr.blank):
            rid = embs[m].ids[k]
            share, extent = (float(x) for x in pr.ink[k])
            s = 1.0 if share == 0 else 0.75
            what = "an empty render (no ink)" if share == 0 else \
                f"a speck (ink on {share:.2%} of it, within {extent:.2%} of its area)"
            if s > best.get(rid, -1.0):
                best[rid] = s
                why[rid] = Finding("blank", s, f"{m}: a blank or degenerate picture, {what}: no evidence, left out "
                                               f"of the other {m} checks")
    return best, why


def without_blanks(embs: dict[str, Embedded], prints: dict[str, ImagePrints]) -> dict[str, Embedded]:
    """``embs`` without the blank pictures (the items of the other modalities kept)."""
    out = dict(embs)
    for m, pr in prints.items():
        keep = np.flatnonzero(~pr.blank)
        if len(keep) < len(pr.blank):
            out[m] = _keep(embs[m], keep)
    return out


def duplicate_pairs(space: "Space", records: Sequence["Record"], embs: dict[str, Embedded],
                    splits: dict[str, str | None], near: float, cache=None, progress: bool = False,
                    prints: dict[str, ImagePrints] | None = None):
    """``(record, record) -> {modality: ("identical" | "copy" | "variant" | "look-alike", value)}`` for pairs in
    different splits, judged outside the joint space (:mod:`anybind.duplicates`): identical content keys, a
    pHash copy confirmed by the pixels (images; value: differing bits), a recoloured variant (images; value: the
    colour distance) or encoder features at cosine >= ``near`` (value: the cosine).  Blank pictures pair with
    nothing.  ``prints``: the images' :class:`~anybind.duplicates.ImagePrints` (read here when not given)."""
    values = {r.id: r.values for r in records}
    if prints is None:
        prints = read_prints(space, records, embs, progress)
    found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
    for m, e in embs.items():
        ids = list(e.ids)
        items = [values[i][m] for i in ids]
        sp = np.asarray([str(splits.get(i)) for i in ids])
        groups = content_groups(e.keys) if e.keys is not None else np.arange(len(ids))
        F = encoder_features(space, m, items, cache=cache)
        pr = prints.get(m)
        cross = lambda rows, cols: sp[rows, None] != sp[None, cols]  # noqa: E731
        pairs = near_pairs(F, cross, near) if pr is None else \
            near_pairs(F, cross, near, pr.hashes, colours=pr.colours, thumbs=pr.thumbs, sides=pr.sides, blank=pr.blank)
        for i, j, kind, v in pairs:
            key = tuple(sorted((ids[i], ids[j])))
            found.setdefault(key, {})[m] = ("identical", None) if groups[i] == groups[j] else (kind, v)
    return found


LEAK_WEIGHT = {"identical": 1.0, "copy": 1.0, "variant": 0.5, "edited": 0.5, "look-alike": 0.5}


def _what(m: str, kind: str, v: Any) -> str:
    if kind == "copy":
        return f"{m} copy " + ("(identical encoder features)" if v is None else f"(pHash {v} bits, pixels alike)")
    if kind == "variant":
        return f"{m} recoloured variant (pHash copy, colour distance {v:g})"
    if kind == "edited":
        return f"{m} edited copy (pHash copy, a block of its pixels differs by {v:g}: same layout, a local change)"
    return f"{m} {kind}" + ("" if v is None else f" (encoder cosine {v:.3f})")


def leak_scores(space: "Space", records: Sequence["Record"], embs: dict[str, Embedded],
                splits: dict[str, str | None], near: float, cache=None, progress: bool = False,
                prints: dict[str, ImagePrints] | None = None):
    """Per record its strongest cross-split duplicate (score, finding), and pair counts per split pair
    (``"<modality>"``: identical or copies; ``"<modality> variant"``, ``"<modality> edited"``,
    ``"<modality> look-alike"``)."""
    have = {m: set(e.ids) for m, e in embs.items()}
    best: dict[str, float] = {}
    why: dict[str, Finding] = {}
    counts: dict[str, dict[str, int]] = {}
    for (x, y), mods in duplicate_pairs(space, records, embs, splits, near, cache, progress, prints).items():
        both = [m for m in embs if x in have[m] and y in have[m]]
        score = sum(LEAK_WEIGHT[k] for k, _ in mods.values()) / max(len(both), 1)
        sp = "-".join(sorted((str(splits.get(x)), str(splits.get(y)))))
        c = counts.setdefault(sp, {"records": 0})
        c["records"] += 1
        for m, (kind, _) in mods.items():
            name = f"{m} {kind}" if kind in ("variant", "edited", "look-alike") else m
            c[name] = c.get(name, 0) + 1
        what = ", ".join(_what(m, *kv) for m, kv in sorted(mods.items()))
        for me, other in ((x, y), (y, x)):
            if score > best.get(me, -1.0):
                best[me] = score
                why[me] = Finding("leak", score, f"duplicate of {other} ({splits.get(other)}): {what}", other)
    return best, why, counts


__all__ = ["LEAK_WEIGHT", "NOT_READ_SCORE", "Finding", "blank_findings", "duplicate_pairs", "embed_readable",
           "leak_scores", "read_prints", "readable_prints", "unreadable_finding", "without_blanks"]

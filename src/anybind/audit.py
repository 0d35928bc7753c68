"""``anybind audit MANIFEST --space S``: which records of a paired corpus look wrong, with a score and a reason.

Four checks, each a score in [0, 1] per record (the record's audit score is the highest):

* **mismatch** -- its modalities disagree (a caption that does not describe its image, a wrong sound).
  Per modality pair, over every record having both: ``sqrt(low * (1 - P(match)))`` -- ``low``, the share
  of the records *of its own split* whose own pair scores higher than its own (ties half), and the
  calibrated ``P(match)`` (:mod:`anybind.calibration`; an uncalibrated space: the share of records whose
  partner outranks its own, both directions).  Within its split, because the space was fitted on train:
  train pairs score higher than held-out ones, so a pooled cosine ranks a wrong train pair below a right
  test pair; and ``P(match)``, because every split has a lowest pair: a train pair the space matches
  perfectly is no error.  Chosen on the planted errors of train + val (AUROC, swapped captions / sounds:
  pooled cosine 0.846 / 0.862, ``low`` alone 0.909 / 0.883, this 0.848 / 0.880; CSLS- and rank-based
  scores 0.70-0.80 on train) and on the clean emoji corpus, where ``low`` alone put train pairs at rank 1
  of 480 with ``P(match)`` 1.00 at the top (at 0.75, ``low`` alone flags 28 % of the bench's Tux Paint
  records, this 5 %).  The record's score is its worst pair; ``scores["mismatch:<modality>"]`` is the mean over the pairs having
  that modality (which item is the odd one out).  The reason names the calibrated ``P(match)`` (when the
  space is calibrated, :mod:`anybind.calibration`) and the own partner's rank among every record's.
* **unreadable** -- a file that cannot be read now (corrupt, an SVG past its rendering budget, no renderer process
  started): reported with its one-line reason and counted (:attr:`AuditResult.unreadable`), left out of every check of
  that modality, while the other records are audited (:mod:`anybind.audit_leak`).
* **blank** -- a near-uniform picture (an SVG that renders empty, a tiny speck): no evidence of anything, so
  reported once and left out of the other checks of its modality (:mod:`anybind.audit_leak`).
* **leak** -- duplicates across splits (train/test leakage), judged outside the joint space (which puts
  look-alikes as close as copies; :mod:`anybind.duplicates`): per modality, identical content (content
  keys), a **copy** (images: DCT pHash within :data:`~anybind.duplicates.COPY_BITS` bits and the pixels alike --
  two signs on one template are not --, or within :data:`~anybind.duplicates.LOOSE_BITS` bits when the pixels
  say copy; colours alike), a recoloured **variant** (images: a pHash copy in other colours), an **edited** copy
  (images: a pHash copy whose pixels differ in one place) or a **look-alike** (the frozen encoder's own features
  at cosine >= ``near``).  A record pair's score is the share of the modalities both have that are duplicated,
  a variant, an edited copy or a look-alike counting half.  Counted per split
  pair in :attr:`AuditResult.leakage` (:mod:`anybind.audit_leak`).
* **label** -- its label (``label`` key) disagrees with its ``k`` nearest neighbours' labels and with the
  zero-shot prediction (class names embedded by the text modality):
  ``0.5 (1 - agreeing / possible) + 0.5 (rank of its class - 1) / (classes - 1)``, averaged over its
  modalities; ``possible = min(k, items with its label - 1)`` (a label held by one item: none agree).  In a
  loose class (:func:`class_cohesion`: its items' neighbours agree with their label less than :data:`COHESIVE`
  of the way from chance to always, as in openclipart's folder "unsorted") the finding fires only when the score
  times the class' weight reaches :data:`FIRES`: the score itself, which ranks the records, is not weighed --
  weighing it cost the planted wrong labels of ``bench --task audit`` 0.12 AUROC (0.934 -> 0.811), since a
  label moved into a fine-grained, loose Tux Paint category then scored low.
* **outlier** -- far from everything of its modality: the percentile of its mean cosine distance to its
  ``k`` nearest neighbours, halved (an outlier is a reason to look, not evidence of an error); a
  reason is given from the 95th percentile on.

A record's ``kinds`` are the checks that *fired* for it (a duplicate, an outlier, a blank picture, a mismatch or
label score of :data:`FIRES` or more); ``RecordAudit.scores`` keeps every check's score.

Output: :func:`anybind.audit_page.write_audit` (JSONL, HTML page, a cleaned manifest with ``--fix``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audit_leak import Finding, blank_findings, embed_readable, leak_scores, readable_prints, without_blanks
from .calibration import load_for
from .data.fields import require_label
from .errors import DataError
from .evaluate import class_embeddings, class_name
from .index.exact import exact_topk
from .metrics import Embedded, content_groups
from .report import default_label

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .data.manifest import Manifest, Record
    from .space import Space

log = logging.getLogger(__name__)

KINDS = ("unreadable", "blank", "mismatch", "leak", "label", "outlier")
BLOCK = 2048  # rows of a score block
#: a mismatch or label finding fires (is listed in the record's ``kinds``) from this score on -- a mismatch when
#: the geometric mean of its share of its split scoring higher and its odds against a match reaches it (a pair
#: below half of its split's at most even odds a match does), a label when the mean of its neighbours' disagreement
#: and its zero-shot rank share does (a loose class' at its weighed score).  Leak, outlier and blank findings fire
#: whenever they are made
FIRES = 0.5


@dataclass
class RecordAudit:
    """One record's audit: its score (the highest check's), its findings, and every check's score of it (those
    that did not fire too)."""

    id: str
    split: str | None
    score: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        """The kinds of the findings that fired (a check that scored the record but found nothing is not one)."""
        return sorted({f.kind for f in self.findings if f.fired})

    @property
    def acted(self) -> float:
        """The score ``--fix`` acts on: the highest check's, a check that weighs its finding (a loose class' label)
        counting at its weighed score (:attr:`Finding.acted`), so that a finding that did not fire for being weighed
        down does not drop or flag the record either."""
        weighed = {f.kind: f.acted for f in self.findings if f.weighed is not None}
        return max((weighed.get(k, v) for k, v in self.scores.items()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        fs = sorted(self.findings, key=lambda f: -f.score)
        return {"id": self.id, "split": self.split, "score": round(float(self.score), 4), "kinds": self.kinds,
                "scores": {k: round(float(v), 4) for k, v in sorted(self.scores.items())},
                "reasons": [f.to_dict() for f in fs]}


@dataclass
class AuditResult:
    """Every record's audit (highest score first), per-check scores by record id, and the leakage counts."""

    records: list[RecordAudit]
    scores: dict[str, dict[str, float]]  # kind (and "mismatch:<modality>") -> record id -> score
    leakage: dict[str, dict[str, int]]  # "test-train" -> {"records": n pairs, "<modality>": n pairs}
    label: str | None
    manifest: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: records with a file that could not be read, per reason ("render timed out for image": n, ...)
    unreadable: dict[str, int] = field(default_factory=dict)

    def flagged(self, threshold: float) -> list[RecordAudit]:
        """The records ``--fix`` acts on at ``threshold`` (:attr:`RecordAudit.acted`)."""
        return [r for r in self.records if r.acted >= threshold]


def _pair_ranks(space: "Space", A: np.ndarray, a: str, B: np.ndarray, b: str, ga: np.ndarray, gb: np.ndarray):
    """Own-pair scores and, per row, how many other records' b-items outscore its own (content duplicates excluded)."""
    own = np.einsum("ij,ij->i", space.scorer.weigh(A, a, b), B)
    beaten = np.zeros(len(A), np.int64)
    for i0 in range(0, len(A), BLOCK):
        S = space.scorer.pair_scores(A[i0 : i0 + BLOCK], a, B, b)
        rows = np.arange(i0, min(i0 + BLOCK, len(A)))
        same = (ga[rows, None] == ga[None, :]) | (gb[rows, None] == gb[None, :])
        beaten[rows] = ((S > own[rows, None]) & ~same).sum(1)
    return own, beaten


def split_share_above(own: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Per item, the share of the other items of its split whose ``own`` score is higher (ties half; 0.5 alone)."""
    out = np.full(len(own), 0.5)
    for s in np.unique(splits):
        idx = np.flatnonzero(splits == s)
        if len(idx) < 2:
            continue
        o = own[idx]
        srt = np.sort(o)  # O(n log n): a split may hold millions of pairs
        higher = len(o) - np.searchsorted(srt, o, side="right")
        ties = np.searchsorted(srt, o, side="right") - np.searchsorted(srt, o, side="left") - 1
        out[idx] = (higher + 0.5 * ties) / (len(idx) - 1)
    return out


def mismatch_scores(space: "Space", embs: dict[str, Embedded], splits: dict[str, str | None] | None = None
                    ) -> tuple[dict[str, float], dict[str, Finding], dict[str, dict[str, float]]]:
    """Per record the mismatch score of its worst modality pair and its finding (see the module doc), and
    per modality the mean over its pairs."""
    cal = space.calibration
    best: dict[str, float] = {}
    why: dict[str, Finding] = {}
    per_mod: dict[str, dict[str, list[float]]] = {}
    for a, b in itertools.combinations(sorted(embs), 2):
        pos_b = {i: k for k, i in enumerate(embs[b].ids)}
        common = [(k, pos_b[i]) for k, i in enumerate(embs[a].ids) if i in pos_b]
        if len(common) < 3:
            continue
        ia, ib = (np.asarray(x) for x in zip(*common))
        A, B = embs[a].vectors[ia], embs[b].vectors[ib]
        ga, gb = (content_groups([e.keys[i] for i in idx]) for e, idx in ((embs[a], ia), (embs[b], ib)))
        own, beat_ab = _pair_ranks(space, A, a, B, b, ga, gb)
        _, beat_ba = _pair_ranks(space, B, b, A, a, gb, ga)
        n = len(ia)
        rids = [embs[a].ids[i] for i in ia]
        sp = np.asarray([str((splits or {}).get(r)) for r in rids])
        low = split_share_above(own, sp)
        p = cal.probability(a, b, own) if cal is not None and cal.get(a, b) is not None else None
        # low for its split *and* unlikely a match (uncalibrated: its partner ranks low among every record's)
        evidence = 1 - p if p is not None else (beat_ab + beat_ba) / (2.0 * max(n - 1, 1))
        score = np.sqrt(low * evidence)
        for k, rid in enumerate(rids):
            for m in (a, b):
                per_mod.setdefault(m, {}).setdefault(rid, []).append(float(score[k]))
            if score[k] > best.get(rid, -1.0):
                best[rid] = float(score[k])
                pm = "" if p is None else f"P(match) {p[k]:.2f}, "
                why[rid] = Finding("mismatch", float(score[k]),
                                   f"{a}-{b}: {pm}score {own[k]:.3f}, below {low[k]:.0%} of its split's; "
                                   f"its own {b} ranks {beat_ab[k] + 1} of {n}, its own {a} ranks {beat_ba[k] + 1} of {n}",
                                   fired=bool(score[k] >= FIRES))
    return best, why, {m: {r: float(np.mean(v)) for r, v in d.items()} for m, d in per_mod.items()}


#: a class whose items agree with their neighbours' labels at least this far from chance to always (on average:
#: ``(agree - chance) / (1 - chance)``) is taken at its word; in a looser one (a folder named "unsorted" or
#: "special", a handful of unrelated drawings) a label finding fires only at a score times lift / COHESIVE of
#: FIRES or more: its labels are the corpus' filing, and a disagreement in it is weak evidence of an error (issue
#: 20, openclipart)
COHESIVE = 0.5
COHESION_PRIOR = 2  # pseudo-items at COHESIVE: a class of three is not judged loose on three items


def class_cohesion(agree: np.ndarray, y: np.ndarray, n_classes: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class its lift over chance -- the mean of ``(agree - chance) / (1 - chance)`` over its items, ``agree``
    the share of an item's possible neighbours sharing its label and ``chance`` that share were the labels
    shuffled (``k`` neighbours of ``n - 1`` items, ``n_c - 1`` of them in its class) -- shrunk to
    :data:`COHESIVE` by :data:`COHESION_PRIOR` pseudo-items (an item alone in its class is no evidence: a class of
    one is at the prior), and the weight of its label findings, ``clip(lift / COHESIVE, 0, 1)``."""
    count = np.bincount(y, minlength=n_classes)
    n = len(y)
    possible = np.minimum(k, np.maximum(count - 1, 1))
    chance = np.minimum(1.0, k * np.maximum(count - 1, 0) / max(n - 1, 1) / possible)
    # a class whose neighbours could not but agree (chance 1: it is nearly everything) is taken at its word
    lift = np.where(chance[y] >= 1, 1.0, (agree - chance[y]) / np.maximum(1 - chance[y], 1e-9))
    # an item alone in its class has no neighbour that could share its label: no evidence of how loose it is
    told = count[y] > 1
    total = np.bincount(y, weights=np.where(told, lift, 0.0), minlength=n_classes)
    cohesion = (total + COHESION_PRIOR * COHESIVE) / (np.bincount(y[told], minlength=n_classes) + COHESION_PRIOR)
    return cohesion, np.clip(cohesion / COHESIVE, 0.0, 1.0)


def label_scores(space: "Space", records: Sequence["Record"], embs: dict[str, Embedded], label: str, *, k: int,
                 templates: Sequence[str], cache) -> tuple[dict[str, float], dict[str, Finding]]:
    """Per labelled record: disagreement with its neighbours' labels and the zero-shot prediction."""
    lab = {r.id: str(r.labels[label]) for r in records if label in (r.labels or {})}
    classes = sorted(set(lab.values()))
    if len(classes) < 2:
        return {}, {}
    cidx = {c: i for i, c in enumerate(classes)}
    C = class_embeddings(space, [class_name(c) for c in classes], templates, cache=cache) \
        if "text" in space.modalities else None
    parts: dict[str, list[tuple[float, str]]] = {}
    for m, e in embs.items():
        rows = [i for i, rid in enumerate(e.ids) if rid in lab]
        if len(rows) <= k + 1:
            continue
        X = e.vectors[rows]
        ids = [e.ids[i] for i in rows]
        y = np.asarray([cidx[lab[i]] for i in ids])
        _, nb = exact_topk(X, X, k + 1)
        agreeing = np.array([sum(int(y[j] == y[i]) for j in [j for j in row if j != i][:k]) for i, row in enumerate(nb)])
        # at most (items with its label - 1) neighbours can agree: a small class is not evidence of a wrong label
        possible = np.minimum(k, np.bincount(y, minlength=len(classes))[y] - 1)
        agree = np.where(possible > 0, agreeing / np.maximum(possible, 1), 0.0)
        zs_share, top = np.zeros(len(ids)), [None] * len(ids)
        if C is not None:
            S = space.scorer.pair_scores(X, m, C, "text")
            rank = (S > S[np.arange(len(ids)), y][:, None]).sum(1)
            zs_share = rank / max(len(classes) - 1, 1)
            top = [classes[t] for t in S.argmax(1)]
        cohesion, weight = class_cohesion(agree, y, len(classes), k)
        score = 0.5 * (1 - agree) + 0.5 * zs_share
        for i, rid in enumerate(ids):
            zs = "" if top[i] is None else f"; zero-shot ranks it {int(round(zs_share[i] * (len(classes) - 1))) + 1} " \
                                            f"of {len(classes)} (top: {top[i]!r})"
            loose = "" if weight[y[i]] >= 1 else f"; a loose class (its items' neighbours agree {cohesion[y[i]]:.0%} " \
                                                   f"of the way from chance to always): weighed {weight[y[i]]:.2f}"
            parts.setdefault(rid, []).append(
                (float(score[i]), float(score[i] * weight[y[i]]),
                 f"{m}: " + (f"{agreeing[i]}/{possible[i]} nearest agree" if possible[i] > 0
                             else "no other item has this label") + zs + loose))
    best, why = {}, {}
    for rid, ps in parts.items():
        best[rid] = float(np.mean([s for s, _, _ in ps]))
        weighed = float(np.mean([w for _, w, _ in ps]))
        why[rid] = Finding("label", best[rid], f"{label}={lab[rid]!r}: " + "; ".join(d for _, _, d in ps),
                           fired=weighed >= FIRES, weighed=weighed)
    return best, why


def outlier_scores(embs: dict[str, Embedded], k: int) -> tuple[dict[str, float], dict[str, Finding]]:
    """Per record the highest (halved) percentile of its kNN distance within a modality."""
    best: dict[str, float] = {}
    why: dict[str, Finding] = {}
    for m, e in embs.items():
        if len(e.ids) <= k + 1:
            continue
        S, _ = exact_topk(e.vectors, e.vectors, k + 1)
        dist = 1 - S[:, 1:].mean(1)  # the first is the item itself
        pct = (np.argsort(np.argsort(dist, kind="stable"), kind="stable") + 1) / len(dist)
        for i, rid in enumerate(e.ids):
            s = 0.5 * float(pct[i])
            if s > best.get(rid, -1.0):
                best[rid] = s
                if pct[i] >= 0.95:
                    why[rid] = Finding("outlier", s, f"{m}: mean cosine {1 - dist[i]:.3f} to its {k} nearest "
                                                     f"(farther than {pct[i]:.0%} of the {m} items)")
                else:
                    why.pop(rid, None)
    return best, why


def audit(
    space: "Space", manifest: "str | Path | Manifest", *, modalities: Iterable[str] | None = None,
    label: str | None = None, k: int = 10, near: float = 0.95, templates: Sequence[str] = ("a {}.",),
    cache: "FeatureCache | str | Path | None" = None, progress: bool = False,
) -> AuditResult:
    """Audit every record of ``manifest`` (all splits) with ``space`` (see the module doc)."""
    if not 0 < near <= 1:
        raise DataError(f"near must be in (0, 1], got {near}")
    man = load_for(space, manifest)
    recs = man.records
    if not recs:
        raise DataError(f"{man.path}: no records to audit")
    mods = [m for m in (modalities or space.modalities) if m in space.modalities]
    splits = {r.id: r.split for r in recs}
    label = label if label is not None else default_label(recs)
    if label is not None:  # a key no record carries: one line naming the keys present
        require_label(recs, label, str(man.path), path=man.path, warn=False)
    # a file that cannot be read (corrupt, a slow SVG past max_svg_seconds) is reported, never the end of the audit
    embs, unread = embed_readable(space, recs, mods, cache=cache, progress=progress)
    prints, embs, unread_prints = readable_prints(space, recs, embs, progress)
    for rid, f in unread_prints.items():
        if rid not in unread or f.score > unread[rid].score:
            unread[rid] = f
    for f in unread.values():
        log.warning("audit of %s: %s", man.path, f.detail)
    checks = {"unreadable": ({rid: f.score for rid, f in unread.items()}, unread),
              "blank": blank_findings(embs, prints)}
    seen = without_blanks(embs, prints)  # a blank picture is no evidence: reported once, as blank
    *mism, per_mod = mismatch_scores(space, seen, splits)
    checks["mismatch"] = tuple(mism)
    *leak, leakage = leak_scores(space, recs, embs, splits, near, cache, progress, prints)
    checks["leak"] = tuple(leak)
    if label is not None:
        checks["label"] = label_scores(space, recs, seen, label, k=k, templates=templates, cache=cache)
    checks["outlier"] = outlier_scores(seen, k)
    out = []
    for r in recs:
        ra = RecordAudit(r.id, r.split)
        for kind, (scores, why) in checks.items():
            if r.id in scores:
                ra.score = max(ra.score, scores[r.id])
                ra.scores[kind] = scores[r.id]
            if r.id in why:
                ra.findings.append(why[r.id])
        out.append(ra)
    out.sort(key=lambda x: -x.score)
    unreadable: dict[str, int] = {}
    for f in unread.values():
        why = f.detail.split(":", 1)[0]  # "render timed out for image", "corrupt file for audio", ...
        unreadable[why] = unreadable.get(why, 0) + 1
    log.info("audited %d records of %s: leakage %s; unreadable %s", len(recs), man.path, leakage or "none",
             unreadable or "none")
    scores = {kind: s for kind, (s, _) in checks.items()} | {f"mismatch:{m}": s for m, s in per_mod.items()}
    return AuditResult(out, scores, leakage, label, str(man.path),
                       {"k": k, "near": near, "modalities": mods, "calibrated": space.calibration is not None},
                       unreadable)

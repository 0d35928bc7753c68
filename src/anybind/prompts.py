"""Zero-shot prompt ensembles stored with a space, and chosen for it on held-out labelled data (issue 16).

A space carries its prompt templates in ``space.json`` (``info["templates"]``, a non-empty list of templates
with ``{}``): every zero-shot path (:func:`anybind.evaluate.zero_shot`, ``Index.classify``, the report, the
service's ``/classify``, ``anybind measure --zero-shot``) uses them when the caller gives none
(:func:`anybind.data.templates.templates_for`); a space without them uses ``"a {}."`` as before.  Templates do
not change any embedding, so they are outside the space identity (an index built on the space stays valid) and
need no new file format: every anybind that reads ``info["templates"]`` (since pre-aligned pairs were imported
with CLIP's ensemble) reads them the same way, and ``space.json`` is checked on load (a bad template is one
:class:`~anybind.errors.SpaceError` line naming the file).

:func:`choose_templates` picks an ensemble from candidates by greedy forward selection on labelled records that
are *not* an evaluation set (val splits of the training corpus, other labelled corpora): each step adds the
candidate that most raises the mean balanced accuracy (mean per-class recall, averaged over the selection sets),
and stops when none raises it.  :func:`selection_sets` builds those sets from manifests and refuses a test split.
:func:`set_templates` stores an ensemble and appends a ``templates`` entry to the space's lineage (the
templates, the candidates, the scores step by step, and a fingerprint of each selection set's records).
:func:`choose_and_set` (``Space.choose_templates``, ``anybind prompts --choose-on``) stores the choice only when it
beats the space's current templates on the same sets; otherwise the space keeps them and the lineage entry says so
(``chosen.kept``).

Templates are chosen and scored without the space's class descriptions (each class's own sentences, written by a
language model: :mod:`anybind.caption.describe`); :func:`set_descriptions` stores those (``info["descriptions"]``,
class name -> sentences) with a lineage entry, and every zero-shot path then averages a described class's
descriptions with its filled templates (:func:`anybind.evaluate.class_embeddings`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.templates import CLIP_TEMPLATES, check_descriptions, check_templates, templates_for
from .errors import DataError
from .evaluate import class_embeddings, class_name, nearest_class

if TYPE_CHECKING:
    from .data.manifest import Manifest, Record
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

#: what :func:`choose_templates` picks from unless given candidates: generic wordings (the bench's five
#: Fashion-MNIST prompts are its first five, CLIP's ImageNet ensemble follows), none written for one corpus
CANDIDATE_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a black and white photo of a {}.",
    "a drawing of a {}.",
    "a product photo of a {}, a piece of clothing.",
    *CLIP_TEMPLATES[1:],  # its first, "a photo of a {}.", opens this list
    "{}",
    "a picture of a {}.",
    "a clip art of a {}.",
    "an icon of a {}.",
    "a cartoon {}.",
    "a sketch of a {}.",
    "a close-up photo of a {}.",
    "a simple drawing of a {}, on a white background.",
)


@dataclass
class SelectionSet:
    """Labelled records the templates are chosen on: ``records`` with ``modality`` and ``labels[label]``;
    ``names`` turns a label value into the class name put in the templates (default: its last path part)."""

    name: str
    records: Sequence["Record"]
    label: str
    modality: str = "image"
    names: Callable[[str], str] = class_name
    split: str | None = None

    def usable(self) -> list["Record"]:
        return [r for r in self.records if r.has(self.modality) and self.label in r.labels]

    def fingerprint(self) -> str:
        """A hash of the records' ids and labels: which records chose (recorded in the lineage)."""
        h = hashlib.sha256()
        for r in sorted(self.usable(), key=lambda r: r.id):
            h.update(f"{r.id}\0{r.labels[self.label]}\0".encode())
        return h.hexdigest()[:16]


@dataclass
class TemplateChoice:
    """What :func:`choose_templates` chose and why (``steps``: the template added and the score after it)."""

    templates: list[str]
    score: float
    before: float  # the space's own templates (or "a {}.") on the same sets
    steps: list[tuple[str, float]]
    per_set: dict[str, dict[str, float]]  # set -> {"before": .., "after": ..}
    sets: list[dict[str, Any]]
    candidates: list[str]
    objective: str = "mean balanced accuracy"
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    current: list[str] = field(default_factory=list)  # the space's own templates (or "a {}."), scored as ``before``
    kept: bool = False  # set by :func:`choose_and_set`: the choice did not beat ``current``, which the space keeps

    @property
    def stored(self) -> list[str]:
        """The templates the space has after :func:`choose_and_set`: ``current`` when kept, else ``templates``."""
        return list(self.current) if self.kept else list(self.templates)

    def record(self) -> dict[str, Any]:
        """The lineage entry's content."""
        return {"chosen_on": self.sets, "candidates": self.candidates, "objective": self.objective,
                "score_before": round(self.before, 4), "score": round(self.score, 4), "kept": self.kept,
                "steps": [[t, round(s, 4)] for t, s in self.steps],
                "per_set": {k: {a: round(b, 4) for a, b in v.items()} for k, v in self.per_set.items()},
                "seconds": round(self.seconds, 1), **self.extra}


def set_templates(space: "SpaceCore", templates: Sequence[str], *, record: Mapping[str, Any] | None = None) -> "SpaceCore":
    """Store ``templates`` (checked: each with ``{}``, at least one) as ``space``'s zero-shot prompts, in place,
    and append a ``templates`` lineage entry (``record``: how they were chosen).  Returns ``space``."""
    chosen = check_templates(templates)
    previous = (space.info or {}).get("templates")
    space.info["templates"] = chosen
    _lineage(space, {"templates": chosen, "previous": previous, **dict(record or {})})
    log.info("the space's zero-shot prompts: %d template(s)", len(chosen))
    return space


def set_descriptions(space: "SpaceCore", descriptions: Mapping[str, Sequence[str]], *,
                     record: Mapping[str, Any] | None = None) -> "SpaceCore":
    """Store ``descriptions`` (class name -> sentences, checked; ``{}`` removes them) as ``space``'s class
    descriptions, in place, and append a ``descriptions`` lineage entry (``record``: how they were made).
    Returns ``space``."""
    desc = check_descriptions({k: list(v) for k, v in dict(descriptions).items()})
    previous = (space.info or {}).get("descriptions")
    if desc:
        space.info["descriptions"] = desc
    else:
        space.info.pop("descriptions", None)
    space.info.setdefault("lineage", []).append(
        {"event": "descriptions", "classes": sorted(desc), "previous_classes": sorted(previous or {}),
         **dict(record or {}), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log.info("the space's class descriptions: %d sentence(s) for %d class(es)", sum(map(len, desc.values())), len(desc))
    return space


def _lineage(space: "SpaceCore", entry: Mapping[str, Any]) -> None:
    space.info.setdefault("lineage", []).append(
        {"event": "templates", **entry, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def selection_sets(
    manifests: "Sequence[Manifest]",
    labels: str | Sequence[str],
    *,
    split: str = "val",
    modality: str = "image",
) -> list[SelectionSet]:
    """One :class:`SelectionSet` per manifest: its ``split`` records (never ``test``) labelled with ``labels``
    (one key for all, or one per manifest)."""
    if split == "test":
        raise DataError("prompt templates are never chosen on a test split: use val, or another labelled corpus")
    if split in (None, "all"):
        raise DataError(f"split {split!r} includes the test split: choose templates on val (or train) records")
    keys = [labels] * len(manifests) if isinstance(labels, str) else list(labels)
    if len(keys) != len(manifests):
        raise DataError(f"{len(keys)} label keys for {len(manifests)} manifests: give one key, or one per manifest")
    out = []
    for man, key in zip(manifests, keys):
        recs = man.split(split)
        s = SelectionSet(f"{man.path.parent.name or man.path.name}/{split}", recs, key, modality, split=split)
        if not s.usable():
            raise DataError(f"{man.path}: no {split} record has both {modality!r} and the label {key!r}")
        out.append(s)
    return out


@dataclass
class _Prepared:
    """One selection set ready to classify: its items' embeddings ``X``, their class indices ``y`` (into the
    sorted label values) and the class names the templates are filled with."""

    set: SelectionSet
    X: np.ndarray
    y: np.ndarray
    names: list[str]


def _prepare(space: "SpaceCore", sets: Sequence[SelectionSet], cache: Any) -> list[_Prepared]:
    out = []
    for s in sets:
        recs = s.usable()
        if not recs:
            raise DataError(f"selection set {s.name}: no record has both {s.modality!r} and the label {s.label!r}")
        y_raw = [str(r.labels[s.label]) for r in recs]
        classes = sorted(set(y_raw))
        if len(classes) < 2:
            raise DataError(f"selection set {s.name}: one class ({classes[0]!r}); choosing prompts needs two or more")
        cidx = {c: i for i, c in enumerate(classes)}
        X = space.embed(s.modality, [r.values[s.modality] for r in recs], cache=cache)
        out.append(_Prepared(s, X, np.array([cidx[v] for v in y_raw]), [s.names(c) for c in classes]))
    return out


def _balanced_accuracies(space: "SpaceCore", data: Sequence[_Prepared], classes: Sequence[np.ndarray],
                         text_modality: str) -> list[float]:
    """Each set's balanced accuracy (mean per-class recall; every class has items) when its items go to the
    nearest of its class embeddings ``classes[i]`` (n_classes, dim; unit rows), as
    :func:`~anybind.evaluate.zero_shot` classifies (:func:`~anybind.evaluate.nearest_class`)."""
    out = []
    for d, C in zip(data, classes):
        pred = nearest_class(space, d.X, d.set.modality, C, text_modality)
        out.append(float(np.mean([(pred[d.y == c] == c).mean() for c in range(len(d.names))])))
    return out


def _ensemble_scores(space: "SpaceCore", data: Sequence[_Prepared], templates: Sequence[str], text_modality: str,
                     cache: Any) -> list[float]:
    C = [class_embeddings(space, d.names, templates, text_modality, cache, descriptions={}) for d in data]
    return _balanced_accuracies(space, data, C, text_modality)


def template_scores(space: "SpaceCore", sets: Sequence[SelectionSet], templates: Sequence[str] | None = None, *,
                    text_modality: str = "text", cache: Any = None) -> dict[str, float]:
    """Each set's balanced accuracy (mean per-class recall) with the prompt ensemble ``templates`` (None: the
    space's own), as :func:`choose_templates` scores it."""
    from .cache import FeatureCache

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    tpl = templates_for(space, templates)
    return dict(zip((s.name for s in sets), _ensemble_scores(space, _prepare(space, sets, fc), tpl, text_modality, fc)))


def choose_templates(
    space: "SpaceCore",
    sets: Sequence[SelectionSet],
    candidates: Sequence[str] = CANDIDATE_TEMPLATES,
    *,
    max_templates: int = 8,
    text_modality: str = "text",
    cache: Any = None,
) -> TemplateChoice:
    """Greedy forward selection of a prompt ensemble from ``candidates`` on the labelled ``sets`` (see the module
    docstring).  Only the records of ``sets`` are read.  Deterministic: ties go to the earlier candidate."""
    from .cache import FeatureCache

    t0 = time.perf_counter()
    cands = check_templates(candidates)
    if len(set(cands)) != len(cands):
        raise DataError("the candidate templates repeat one: give each once")
    if not sets:
        raise DataError("no selection set given: templates are chosen on labelled held-out records")
    if len({s.name for s in sets}) != len(sets):
        raise DataError(f"selection sets share a name ({', '.join(s.name for s in sets)}): give each its own")
    if isinstance(max_templates, bool) or not isinstance(max_templates, int) or max_templates < 1:
        raise DataError(f"max_templates is {max_templates!r}, expected a whole number >= 1")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    data = _prepare(space, sets, fc)
    # per set, each candidate's class embeddings (n_cands, n_classes, dim): an ensemble's class embeddings are
    # its members' sum renormalised (evaluate.class_embeddings: the renormalised mean)
    P = [np.stack([class_embeddings(space, d.names, [t], text_modality, fc, descriptions={}) for t in cands])
         for d in data]

    def score(sums: list[np.ndarray]) -> list[float]:
        return _balanced_accuracies(
            space, data, [S / np.maximum(np.linalg.norm(S, axis=1, keepdims=True), 1e-12) for S in sums],
            text_modality)

    current = list(templates_for(space, None))
    before_each = _ensemble_scores(space, data, current, text_modality, fc)
    chosen: list[int] = []
    sums = [np.zeros_like(p[0]) for p in P]
    best, best_each, steps = -np.inf, before_each, []
    while len(chosen) < max_templates:
        trial = [(float(np.mean(e)), e, j) for j in range(len(cands)) if j not in chosen
                 for e in [score([S + p[j] for S, p in zip(sums, P)])]]
        if not trial:
            break
        top = max(trial, key=lambda x: x[0])  # max keeps the first of equal scores: the earlier candidate
        if top[0] <= best:
            break
        best, best_each, j = top[0], top[1], top[2]
        chosen.append(j)
        sums = [S + p[j] for S, p in zip(sums, P)]
        steps.append((cands[j], best))
        log.info("templates: + %r -> %.4f", cands[j], best)
    return TemplateChoice(
        templates=[cands[j] for j in chosen], score=best, before=float(np.mean(before_each)), steps=steps,
        per_set={d.set.name: {"before": b, "after": a} for d, b, a in zip(data, before_each, best_each)},
        sets=[{"name": d.set.name, "split": d.set.split, "label": d.set.label, "modality": d.set.modality,
               "records": len(d.y), "classes": len(d.names), "fingerprint": d.set.fingerprint()} for d in data],
        candidates=cands, seconds=time.perf_counter() - t0, current=current)


def choose_and_set(space: "SpaceCore", sets: Sequence[SelectionSet], candidates: Sequence[str] = CANDIDATE_TEMPLATES,
                   **kw: Any) -> TemplateChoice:
    """:func:`choose_templates`, then store the choice with the space (:func:`set_templates`) with its record;
    when the choice does not beat the space's current templates on the sets (``score <= before``, e.g. an imported
    CLIP pair's ensemble), the space keeps them (``choice.kept``) and the lineage records the choice as not taken."""
    choice = choose_templates(space, sets, candidates, **kw)
    if not choice.score > choice.before:  # also a NaN score: never replace what the space has with it
        choice.kept = True
        _lineage(space, {"templates": choice.current, "previous": (space.info or {}).get("templates"),
                         "chosen": choice.record()})
        log.info("templates: the choice (%.4f) does not beat the space's own %d template(s) (%.4f): kept",
                 choice.score, len(choice.current), choice.before)
        return choice
    set_templates(space, choice.templates, record={"chosen": choice.record()})
    return choice

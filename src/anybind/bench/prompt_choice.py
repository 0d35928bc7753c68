"""Prompt templates chosen per space on held-out labelled data, for the bench (issue 16): the val splits of
Tux Paint (its ``category`` folders) and emoji (its CLDR ``subgroup``), never Fashion-MNIST and never a test split.

:func:`choose_for` chooses on both sets (:func:`anybind.prompts.choose_templates`), stores the choice with the
space, and checks it on held-out data: templates chosen on one set alone, scored on the other, beside the
bench's five prompts on that other set (does the choice carry to data it did not see?)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import AnybindError

#: the corpora and label keys the bench chooses prompts on (val splits)
SELECTION_LABELS = {"tuxpaint": "category", "emoji": "subgroup"}
#: the values of a bench task's ``--opt prompts=``: none, or each space's own templates chosen here
PROMPTS_OPTIONS = ("", "chosen")


def check_prompts_option(task: str, prompts: str) -> None:
    """A task's ``--opt prompts=`` value, refused in one line (before any work) unless it is known."""
    if prompts not in PROMPTS_OPTIONS:
        raise AnybindError(f"{task}: prompts={prompts!r}; known: chosen (or leave it out)")


def selection_manifests(work: Path, console=None) -> dict[str, Any]:
    from ..corpora.emoji import build_emoji
    from ..data.manifest import load_manifest
    from .tuxpaint import build_once
    from .tuxpaint import prepare_tuxpaint

    paths = {"tuxpaint": prepare_tuxpaint(work, console), "emoji": build_once(work, "emoji", build_emoji)}
    return {c: load_manifest(p, modalities=["image"], progress=False) for c, p in paths.items()}


def choose_for(space, mans: dict[str, Any], reference, cache) -> dict[str, Any]:
    """Choose and store ``space``'s templates on the val sets of ``mans``; returns the record for the bench's
    JSON: the templates, the selection scores of ``reference`` (the five prompts) and of the choice, and the
    two-way held-out check."""
    from ..prompts import choose_and_set, choose_templates, selection_sets, template_scores

    sets = {c: selection_sets([m], SELECTION_LABELS[c], split="val")[0] for c, m in mans.items()}
    ref = template_scores(space, list(sets.values()), reference, cache=cache)
    check = {}
    for a, b in ((x, y) for x in sets for y in sets if x != y):
        one = choose_templates(space, [sets[a]], cache=cache)
        check[f"chosen on {a} -> {b}"] = {
            "reference": round(ref[sets[b].name], 4),
            "chosen": round(template_scores(space, [sets[b]], one.templates, cache=cache)[sets[b].name], 4),
            "templates": one.templates}
    choice = choose_and_set(space, list(sets.values()), cache=cache)
    got = "before" if choice.kept else "after"  # kept: the space's own templates beat the choice, and stay
    return {"templates": choice.stored, "kept": choice.kept,
            "selection_reference": round(float(sum(ref.values()) / len(ref)), 4),
            "selection_chosen": round(choice.before if choice.kept else choice.score, 4),
            "per_set": {k: {"reference": round(ref[k], 4), "chosen": round(v[got], 4)}
                        for k, v in choice.per_set.items()},
            "held_out_check": check}

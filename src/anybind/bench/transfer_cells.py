"""What the transfer matrix (issue 16) scores in one space, and how it sums the cells up: per-query hits of every
retrieval cell (with the ids of the records the queries came from) and of Fashion-MNIST zero-shot, the ``seeds``
option, and the summary notes (off-diagonal cells against the better baseline, on the seed mean and the worst
seed).  :mod:`anybind.bench.tasks_transfer` runs the matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DIRS = (("text", "image", "t->i"), ("image", "text", "i->t"))


def retrieval_hits_ids(space, man, split: str, cache) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per-query R@1 hits (0/1) of ``t->i`` and ``i->t`` on one corpus split (none: fewer than two pairs in it) and
    the record id of each query (the same records, in the same order, for both directions)."""
    from ..lifecycle import pair_hits_ids

    hits, ids = pair_hits_ids(space, man, "text", "image", split=split, cache=cache)
    return {name: hits[f"{q}->{g}"] for q, g, name in DIRS if f"{q}->{g}" in hits}, ids


def retrieval_hits(space, man, split: str, cache) -> dict[str, np.ndarray]:
    """:func:`retrieval_hits_ids` without the ids."""
    return retrieval_hits_ids(space, man, split, cache)[0]


def fm_hits(space, recs, cache, center: bool = False, train_prompts: bool = False, own: bool = False) -> np.ndarray:
    """Fashion-MNIST zero-shot correctness (0/1 per image, in the order of ``recs``: the transfer bench's paired
    bootstrap compares two spaces image by image);
    ``train_prompts``: the templates and class names chosen on Fashion-MNIST train images
    (:data:`~anybind.bench.tasks_corpora.FM_TEMPLATES_TRAIN`, ``FM_NAMES_TRAIN``) instead of the bench's five."""
    from ..evaluate import zero_shot
    from .tasks_corpora import FM_NAMES, FM_NAMES_TRAIN, FM_TEMPLATES, FM_TEMPLATES_TRAIN

    names, templates = (FM_NAMES_TRAIN, FM_TEMPLATES_TRAIN) if train_prompts else (FM_NAMES, FM_TEMPLATES)
    if own:  # the space's own templates (chosen on held-out data and stored with it), the bench's class names
        templates = None
    zs = zero_shot(space, recs, "image", "class", classes=list(FM_NAMES), names=lambda c: names[c],
                   templates=templates, cache=cache, center=center, per_item=True)
    return np.asarray(zs.get("correct", []), np.float64)


def seeds_option(seeds: str, seed: int, task: str = "transfer") -> list[int]:
    """``--opt seeds=0,1,2``: the seeds (transfer: each a train subsample and a fit), distinct whole numbers in
    [0, :data:`anybind.recipe.MAX_SEED`]; empty: ``[seed]`` (``--seed``).  ``task``: the bench task named in the
    one-line error."""
    from ..errors import AnybindError
    from ..recipe import MAX_SEED

    parts = [p.strip() for p in seeds.split(",") if p.strip()]
    if not parts:
        return [seed]
    if not all(p.isdecimal() and int(p) <= MAX_SEED for p in parts) or len(set(map(int, parts))) != len(parts):
        raise AnybindError(f"{task}: seeds={seeds!r}: distinct whole numbers in [0, {MAX_SEED}], comma-separated")
    return [int(p) for p in parts]


def seed_column(vals: Sequence[Any]) -> Any:
    """A row's val / epoch / alpha / l2sp cell from each seed's value: one seed, its value; several, the values
    "/"-separated, "-" for a seed without one; none with a value (a +center row): None (shown "-", as one seed's)."""
    if all(v is None for v in vals):
        return None
    if len(vals) == 1:
        return vals[0]
    return "/".join("-" if v is None else f"{v:.4g}" for v in vals)


def summary_notes(metrics: dict[str, Any], sets: dict[str, list[str]], systems: Sequence[str], corpora: Sequence[str],
                  center: bool, seeds: Sequence[int] = ()) -> list[str]:
    """Per system: mean difference to the better baseline over the off-diagonal cells (held-out corpora), val and
    test, counted on the cells' values (the mean over seeds when there are several); with several ``seeds``, also
    the worst seed's (the lowest mean difference; its baselines: the bridge and that seed's Procrustes)."""
    names = [s for s in systems] + ([s + " +center" for s in systems] if center else [])
    notes = []
    for split in ("val", "test"):
        parts = []
        for s in names:
            diffs, wins = _off_diagonal(metrics, sets, s, corpora, split, "")
            if not diffs:
                continue
            part = f"{s}: {np.mean(diffs):+.3f} ({wins}/{len(diffs)} cells >=)"
            if len(seeds) > 1:
                per = {k: _off_diagonal(metrics, sets, s, corpora, split, f"/seed{k}") for k in seeds}
                worst = min(seeds, key=lambda k: (np.mean(per[k][0]), per[k][1]))
                part += (f", worst seed {worst}: {np.mean(per[worst][0]):+.3f} ({per[worst][1]}/{len(per[worst][0])}"
                         " cells >=)")
            parts.append(part)
        if parts:
            on = f" (cells on the mean over seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
            notes.append(f"off-diagonal {split} R@1 minus the better baseline, mean over cells{on}: "
                         + "; ".join(parts))
    return notes


def _off_diagonal(metrics: dict[str, Any], sets: dict[str, list[str]], system: str, corpora: Sequence[str],
                  split: str, tail: str) -> tuple[list[float], int]:
    """``system``'s off-diagonal cells minus the better baseline (``tail``: ``""`` or ``"/seedK"``) and how many
    are >= 0."""
    diffs, wins = [], 0
    for tname, members in sets.items():
        for c in corpora:
            if c in members:
                continue
            for d in ("t->i", "i->t"):
                key = f"{split}/{c}/{d}"
                v = metrics.get(f"{tname}/{system}/{key}{tail}")
                if v is None:
                    continue
                best = max(metrics[f"-/label bridge (no pairs)/{key}"], metrics[f"{tname}/procrustes/{key}{tail}"])
                diffs.append(v - best)
                wins += v >= best
    return diffs, wins

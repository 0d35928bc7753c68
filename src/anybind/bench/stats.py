"""Bootstrap intervals shared by the bench tasks (a module of its own, so that tasks import it without importing
each other)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def bootstrap(hits: np.ndarray, others: Sequence[np.ndarray] = (), n: int = 1000, seed: int = 0,
              groups: Sequence | np.ndarray | None = None):
    """Mean of ``hits`` with a percentile 95 % interval; with ``others`` (same queries), also the paired
    interval of ``hits - max over others`` of the means (``(lo, hi)`` or None).

    ``groups`` (one label per query, e.g. its caption text): a cluster bootstrap, which resamples whole groups
    (queries that hit or miss together, such as the text->image queries of several images sharing one caption)
    instead of single queries; each resample's mean is over its queries (sum of hits / number of queries), so the
    point estimate stays the per-query mean.  Groups are numbered in order of first appearance, so all-distinct
    labels give exactly the per-query result; None: per query; a :class:`Clusters`: labels numbered already."""
    if n < 1:  # np.percentile of no resamples: an IndexError
        raise ValueError(f"bootstrap: n={n} resamples; need at least 1")
    hits = np.asarray(hits, np.float64)
    if not len(hits):
        return float("nan"), (float("nan"), float("nan")), None
    for i, o in enumerate(others):  # the same queries: a longer baseline would be cut silently
        if len(o) != len(hits):
            raise ValueError(f"bootstrap: others[{i}] has {len(o)} values for {len(hits)} queries")
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(hits), size=(n, len(hits)))

        def draw(x: np.ndarray) -> np.ndarray:
            return x[idx].mean(1)
    else:  # per resample: the hits summed over the drawn groups over their sizes
        c = groups if isinstance(groups, Clusters) else Clusters.of(groups)
        if len(c.index) != len(hits):
            raise ValueError(f"bootstrap: {len(c.index)} group labels for {len(hits)} queries")
        k = len(c.sizes)
        idx = rng.integers(0, k, size=(n, k))
        count = c.sizes[idx].sum(1)

        def draw(x: np.ndarray) -> np.ndarray:
            return np.bincount(c.index, weights=x, minlength=k)[idx].sum(1) / count
    means = draw(hits)
    ci = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    diff = None
    if others:
        d = means - np.max(np.stack([draw(np.asarray(o, np.float64)) for o in others]), 0)
        diff = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    return float(hits.mean()), ci, diff


def boot_option(task: str, boot: str) -> int:
    """A bench task's ``--opt boot=N``: the number of bootstrap resamples, a whole number >= 1 (every cell carries
    an interval); refused in one line naming the option, before any work."""
    from ..errors import AnybindError

    if not boot.strip().isdecimal() or int(boot) < 1:
        raise AnybindError(f"{task}: boot={boot!r}: a whole number of bootstrap resamples, at least 1")
    return int(boot)


def seed_mean(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """Each query's hit averaged over seeds (``per_seed``: one 0/1 array per seed, the same queries in the same
    order): what :func:`bootstrap` resamples for a cell measured with several seeds, so that a (seed, query) row is
    not counted as a query of its own.  The interval is over captions with these seeds held fixed: a spread of the
    seeds' cell means shared by all queries is not in it (compare the per-seed values)."""
    rows = [np.asarray(h, np.float64) for h in per_seed]
    if not rows:
        raise ValueError("seed_mean: no seed")
    for i, r in enumerate(rows[1:], 1):
        if len(r) != len(rows[0]):
            raise ValueError(f"seed_mean: seed {i} has {len(r)} values for {len(rows[0])} queries")
    return np.stack(rows).mean(0)


def group_index(groups: Sequence | np.ndarray) -> np.ndarray:
    """Group number per item, numbered in order of first appearance (labels compared as strings)."""
    number: dict[str, int] = {}  # not numpy's str arrays: they drop trailing NULs, merging two labels
    return np.asarray([number.setdefault(str(g), len(number)) for g in groups], np.int64)


@dataclass(frozen=True, eq=False)
class Clusters:
    """One cell's query clusters, numbered once (:func:`group_index`) for every :func:`bootstrap` of that cell.
    Compared and hashed by identity (``eq=False``): its fields are numpy arrays, whose ``==`` has no one truth
    value."""

    index: np.ndarray  # group number per query, in order of first appearance
    sizes: np.ndarray  # queries per group (float)

    @classmethod
    def of(cls, groups: Sequence | np.ndarray) -> "Clusters":
        g = group_index(groups)
        return cls(g, np.bincount(g).astype(np.float64))


def caption_groups(man, split: str, ids: Sequence[str]) -> list[str]:
    """The cluster of each retrieval query on ``split`` of ``man``: the caption text of the record each query came
    from, ``ids`` being the record ids :func:`anybind.lifecycle.pair_hits_ids` returns with the hits (in their
    order, the same for both directions), so the groups follow the queries actually scored.

    Queries whose records share one caption (KTuberling: every sprite of one word; Tux Paint stamps of one thing)
    hit or miss together: text->image, the same text finds the same images (the metric counts identical texts
    interchangeable); image->text, the images' one relevant caption is the same gallery item, and equal captions
    embed equally.  Grouping image queries by their caption too (rather than by a record group or by image) keeps
    one cluster structure for both directions, so a cell and its baselines resample the same clusters."""
    text = {r.id: str(r.values["text"]) for r in man.split(split) if r.has("text")}
    return [text[i] for i in ids]


def paired_vs_first(keys: Sequence[str], per_item: dict, seed: int = 0, n: int = 1000,
                    groups: dict | None = None) -> dict:
    """Each of ``keys[1:]`` minus ``keys[0]`` per column of ``per_item`` (``{key: {column: hit per item}}``, the
    same items in the same order; a hit is 0/1, or with several seeds its mean over them, :func:`seed_mean`):
    ``{key: {column: {"diff", "ci", "wins", "losses"}}}``, the mean difference, its paired 95 % bootstrap interval
    (one resample of items for both rows) and how many items that row scores higher / lower than the first: with
    one seed, the items only that row / only the first gets right; with several (the same seeds for both rows),
    the items it gets right on more / fewer of the seeds than the first (ties, however many seeds each is right on,
    in neither).  ``groups``: ``{column: one label per item}`` for the columns whose items come in groups that
    resample together (:func:`bootstrap`); other columns per item."""
    out: dict = {}
    for k in keys[1:]:
        out[k] = {}
        for c, h0 in per_item[keys[0]].items():
            d = np.asarray(per_item[k][c], np.float64) - np.asarray(h0, np.float64)
            mean, ci, _ = bootstrap(d, (), n, seed, (groups or {}).get(c))
            out[k][c] = {"diff": mean, "ci": list(ci), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    return out

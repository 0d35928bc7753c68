"""Bootstrap intervals shared by the bench tasks (a module of its own, so that tasks import it without importing
each other)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap(hits: np.ndarray, others: Sequence[np.ndarray] = (), n: int = 1000, seed: int = 0,
              groups: Sequence | np.ndarray | None = None):
    """Mean of ``hits`` with a percentile 95 % interval; with ``others`` (same queries), also the paired
    interval of ``hits - max over others`` of the means (``(lo, hi)`` or None).

    ``groups`` (one label per query, e.g. its caption text): a cluster bootstrap, which resamples whole groups
    (queries that hit or miss together, such as the text->image queries of several images sharing one caption)
    instead of single queries; each resample's mean is over its queries (sum of hits / number of queries), so the
    point estimate stays the per-query mean.  Groups are numbered in order of first appearance, so all-distinct
    labels give exactly the per-query result; None: per query."""
    hits = np.asarray(hits, np.float64)
    if not len(hits):
        return float("nan"), (float("nan"), float("nan")), None
    for i, o in enumerate(others):  # the same queries: a longer baseline would be cut silently
        if len(o) != len(hits):
            raise ValueError(f"bootstrap: others[{i}] has {len(o)} values for {len(hits)} queries")
    if groups is not None:
        return _cluster_bootstrap(hits, others, n, seed, groups)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(n, len(hits)))
    means = hits[idx].mean(1)
    ci = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    diff = None
    if others:
        best = np.max(np.stack([np.asarray(o, np.float64)[idx].mean(1) for o in others]), 0)
        d = means - best
        diff = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    return float(hits.mean()), ci, diff


def group_index(groups: Sequence | np.ndarray) -> np.ndarray:
    """Group number per item, numbered in order of first appearance (labels compared as strings)."""
    number: dict[str, int] = {}  # not numpy's str arrays: they drop trailing NULs, merging two labels
    return np.asarray([number.setdefault(str(g), len(number)) for g in groups], np.int64)


def _cluster_bootstrap(hits: np.ndarray, others: Sequence[np.ndarray], n: int, seed: int, groups):
    """:func:`bootstrap` resampling groups: per resample, the hits summed over the drawn groups over their sizes."""
    g = group_index(groups)
    if len(g) != len(hits):
        raise ValueError(f"bootstrap: {len(g)} group labels for {len(hits)} queries")
    k = int(g.max()) + 1
    sizes = np.bincount(g, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n, k))
    count = sizes[idx].sum(1)

    def means_of(x: np.ndarray) -> np.ndarray:
        return np.bincount(g, weights=np.asarray(x, np.float64), minlength=k)[idx].sum(1) / count

    means = means_of(hits)
    ci = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    diff = None
    if others:
        d = means - np.max(np.stack([means_of(o) for o in others]), 0)
        diff = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    return float(hits.mean()), ci, diff


def caption_groups(man, split: str) -> list[str]:
    """The cluster of each retrieval query on ``split`` of ``man``: its record's caption text, in the order of
    :func:`anybind.lifecycle.pair_hits`' queries (records with both text and image; the transfer bench's
    ``retrieval_hits``), the same for both directions.

    Queries whose records share one caption (KTuberling: every sprite of one word; Tux Paint stamps of one thing)
    hit or miss together: text->image, the same text finds the same images (the metric counts identical texts
    interchangeable); image->text, the images' one relevant caption is the same gallery item, and equal captions
    embed equally.  Grouping image queries by their caption too (rather than by a record group or by image) keeps
    one cluster structure for both directions, so a cell and its baselines resample the same clusters."""
    return [str(r.values["text"]) for r in man.split(split) if r.has("text") and r.has("image")]


def paired_vs_first(keys: Sequence[str], per_item: dict, seed: int = 0, n: int = 1000,
                    groups: dict | None = None) -> dict:
    """Each of ``keys[1:]`` minus ``keys[0]`` per column of ``per_item`` (``{key: {column: 0/1 per item}}``, the
    same items in the same order): ``{key: {column: {"diff", "ci", "wins", "losses"}}}``, the mean difference, its
    paired 95 % bootstrap interval (one resample of items for both rows) and how many items only that row / only
    the first gets right.  ``groups``: ``{column: one label per item}`` for the columns whose items come in groups
    that resample together (:func:`bootstrap`); other columns per item."""
    out: dict = {}
    for k in keys[1:]:
        out[k] = {}
        for c, h0 in per_item[keys[0]].items():
            d = np.asarray(per_item[k][c], np.float64) - np.asarray(h0, np.float64)
            mean, ci, _ = bootstrap(d, (), n, seed, (groups or {}).get(c))
            out[k][c] = {"diff": mean, "ci": list(ci), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    return out

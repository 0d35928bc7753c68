"""Measuring a space's life after its first fit: continual updates and merges (the ``continual`` and ``merge``
bench tasks are thin wrappers of these).

* :func:`continual_study`: bind on the first domain, then update on each next one with every method
  (naive fine-tuning, the default update (WiSE-FT with the parent), Mod-X; :mod:`anybind.update`; ``update={"distill": "auto"}``: Mod-X's weight chosen on
  the val pairs of the first domain and the new one; ``judge="held"``: only on a half of the first domain's val
  that the first fit never saw; ``modx_weights``: several Mod-X weights side by side),
  beside joint retraining on every domain seen (the upper bound) and the first space frozen (the lower bound);
  R@1 on the first domain's test split (old), the new domain's and every earlier domain's after each step;
  forgetting = the drop on the first domain.
* :func:`merge_study`: two spaces bound apart (A: ``a_mods``, B: ``b_mods``, sharing ``anchor``) merged
  (:mod:`anybind.merge`), beside the same modalities bound jointly: each pair's R@1 and the never-paired
  pair's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .data.manifest import Manifest, load_manifest


def pair_r1(space, manifest: Manifest, a: str, b: str, *, split: str = "test", cache=None) -> float:
    """Mean of a->b and b->a R@1 on ``split`` of ``manifest`` (records with both)."""
    from .evaluate import embed_records, retrieval_from_embeddings

    res = retrieval_from_embeddings(embed_records(space, manifest.split(split), [a, b], cache=cache))
    return (res[f"{a}->{b}/R@1"] + res[f"{b}->{a}/R@1"]) / 2


def pair_hits(space, manifest: Manifest, a: str, b: str, *, split: str = "test", cache=None) -> dict[str, Any]:
    """Per-query R@1 hits (0/1, float) of ``a->b`` and ``b->a`` on ``split`` of ``manifest`` (records with both, in
    their order; identical contents interchangeable, as :func:`pair_r1` scores them): each direction's mean is its
    R@1, for paired bootstrap intervals between spaces scored on the same records.  Empty when fewer than two
    records of ``split`` have both (:func:`anybind.metrics.paired_rows`)."""
    return pair_hits_ids(space, manifest, a, b, split=split, cache=cache)[0]


def pair_hits_ids(space, manifest: Manifest, a: str, b: str, *, split: str = "test",
                  cache=None) -> tuple[dict[str, Any], list[str]]:
    """:func:`pair_hits` and the record ids of its queries, in their order (one record per query, the same records
    for both directions; empty with the hits)."""
    import numpy as np

    from .evaluate import embed_records
    from .metrics import paired_rows, query_ranks

    embs = embed_records(space, manifest.split(split), [a, b], cache=cache)
    out, ids = {}, []
    for x, y, ix, iy in paired_rows(embs, [(a, b)]):
        ids = [embs[x].ids[i] for i in ix]
        for q, qi, g, gi in ((x, ix, y, iy), (y, iy, x, ix)):
            r = query_ranks(embs[q].vectors[qi] @ embs[g].vectors[gi].T, query_keys=[embs[q].keys[i] for i in qi],
                            gallery_keys=[embs[g].keys[i] for i in gi])
            out[f"{q}->{g}"] = (r == 1).astype(np.float64)
    return out, ids


def held_out_val(manifest: Manifest, seed: int = 0, fraction: float = 0.5) -> tuple[Manifest, Manifest]:
    """``manifest`` cut in two over its val split: (every record but the held-out val ones, only the held-out val
    ones).  A val record is held out when the SHA-256 of ``"<seed>#<id>"`` falls under ``fraction``: the same
    records on every machine and run, and one record's fate never depends on the others."""
    from .data.folds import unit_hash

    held = {r.id for r in manifest.split("val") if unit_hash(f"{seed}#{r.id}") < fraction}
    return (dataclasses.replace(manifest, records=[r for r in manifest.records if r.id not in held]),
            dataclasses.replace(manifest, records=[r for r in manifest.records if r.id in held]))


def continual_study(
    domains: Sequence[tuple[str, Manifest]],
    *,
    pair: tuple[str, str] = ("image", "text"),
    encoders: Mapping[str, str],
    fit: Mapping[str, Any] | None = None,
    update: Mapping[str, Any] | None = None,
    methods: Sequence[str] = ("naive", "wise", "modx"),
    modx_weights: Mapping[str, float | str] | None = None,
    joint: bool = True,
    judge: str = "val",
    cache=None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (step, system): ``old R@1`` (first domain), ``new R@1`` (this step's domain), ``forgetting``
    (the drop on the first domain), then ``R@1 <domain>`` for every domain (its test split), in the order given:
    each domain seen up to this step, ``None`` for the domains still to come, so what every update keeps of each
    earlier domain (forgetting) is visible column by column.  Domain names must differ (one column each).

    ``modx_weights``: {system name: distillation weight (a number or ``"auto"``)}: one Mod-X system per entry in
    place of ``"modx"``, updated side by side (e.g. ``{"modx 1.0": 1.0, "modx auto": "auto"}``); default: one
    system ``"modx"`` with ``update``'s weight.

    ``judge``: the first domain's val pairs that choose Mod-X's weight (``"auto"``): ``"val"``: all of them (the
    split the first fit also early-stopped on); ``"held"``: a half drawn by a seeded hash of the record id
    (:func:`held_out_val`), which the first fit and joint retraining never read (they select on the other half)."""
    from .errors import DataError
    from .fitting import fit_space
    from .update import update_space

    names = [n for n, _ in domains]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise DataError(f"continual domains must have different names (one R@1 column each), got "
                         f"{', '.join(map(repr, dup))} more than once in {', '.join(names)}")
    variants: dict[str, tuple[str, float | str | None]] = {}  # system name -> (method, its distillation weight)
    for m in methods:
        variants.update({n: (m, w) for n, w in modx_weights.items()} if m == "modx" and modx_weights
                        else {m: (m, None)})
    others = {m for m in methods if m != "modx"}  # a Mod-X system may keep the name "modx" (the bench's default)
    if clash := sorted(set(modx_weights or {}) & {*others, "frozen", "joint", "first space"}):
        raise DataError(f"a Mod-X system may not be named {', '.join(map(repr, clash))}: another system has that name")
    if judge not in ("val", "held"):
        raise DataError(f"continual judge must be 'val' or 'held' (the old domain's val pairs that choose Mod-X's "
                        f"weight), got {judge!r}")
    a, b = pair

    def per_domain(space, upto: int) -> dict[str, float | None]:
        """``R@1 <domain>`` of ``space`` on each domain's test split, ``None`` after step ``upto``."""
        return {f"R@1 {n}": pair_r1(space, m, a, b, cache=cache) if i <= upto else None
                for i, (n, m) in enumerate(domains)}

    fit_kw = {"progress": False, "recipe": "plain", "seed": seed, **(fit or {})}
    first_name, first = domains[0]
    old_val = first
    if judge == "held":  # the first fit selects on one half of val; the other half judges Mod-X's weight
        first, old_val = held_out_val(first, seed)
    space0 = fit_space(first, modalities=list(pair), encoders=dict(encoders), cache=cache, **fit_kw)
    cols0 = per_domain(space0, 0)
    old0 = cols0[f"R@1 {first_name}"]
    rows = [{"name": "first space", "step": 0, "domain": first_name, "old R@1": old0, "new R@1": old0,
             "forgetting": 0.0, **cols0}]
    current = {v: space0 for v in variants}
    for step, (name, man) in enumerate(domains[1:], start=1):
        systems: dict[str, Any] = {"frozen": space0}
        for v, (m, w) in variants.items():
            kw = {**(update or {}), **({"distill": w} if w is not None else {})}
            if m != "modx":  # Mod-X's weight is read by Mod-X only (another method refuses it)
                kw.pop("distill", None)
            elif kw.get("distill") == "auto":  # Mod-X's weight chosen on the val pairs of the first and this domain
                kw["old_val"] = old_val
            if kw.get("distill") != "auto":  # a fixed weight (naive, a fixed Mod-X variant): no choice to weigh
                kw.pop("distill_tradeoff", None)
            current[v] = update_space(current[v], man, method=m, cache=cache, seed=seed, **kw)
            systems[v] = current[v]
        if joint:
            systems["joint"] = fit_space([first, *(d for _, d in domains[1: step + 1])], modalities=list(pair),
                                         encoders=dict(encoders), cache=cache, **fit_kw)
        for sys_name, sp in systems.items():
            cols = per_domain(sp, step)
            old = cols[f"R@1 {first_name}"]
            rows.append({"name": sys_name, "step": step, "domain": name, "old R@1": old,
                         "new R@1": cols[f"R@1 {name}"], "forgetting": old0 - old, **cols})
            search = sp.info["lineage"][-1].get("distill_search") if sys_name in variants else None
            if search:  # Mod-X's weight chosen on val
                rows[-1]["distill"] = search["chosen"]
    return rows


def merge_study(
    manifest: Manifest | str | Path,
    *,
    anchor: str = "text",
    a_mods: tuple[str, str] = ("image", "text"),
    b_mods: tuple[str, str] = ("audio", "text"),
    encoders: Mapping[str, str],
    fit: Mapping[str, Any] | None = None,
    b_fit: Mapping[str, Any] | None = None,
    cache=None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows for A, B, merged (anchor items: the training split's) and joint: each pair's test R@1 (None where a
    space does not bind it); the never-paired pair is ``a_mods`` x ``b_mods`` less the anchor."""
    from .fitting import fit_space
    from .merge import merge_spaces

    man = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, progress=False)
    fit_kw = {"progress": False, "recipe": "plain", "seed": seed, **(fit or {})}
    space_a = fit_space(man, modalities=list(a_mods), encoders={m: encoders[m] for m in a_mods}, cache=cache, **fit_kw)
    space_b = fit_space(man, modalities=list(b_mods), encoders={m: encoders[m] for m in b_mods}, cache=cache,
                        **{**fit_kw, **(b_fit or {})})
    anchors = Manifest(man.path, [r for r in man.split("train") if r.has(anchor)], [], man.kinds)
    merged = merge_spaces(space_a, space_b, anchor=anchor, anchor_data=anchors, cache=cache)
    mods = sorted({*a_mods, *b_mods})
    joint = fit_space(man, modalities=mods, encoders={m: encoders[m] for m in mods}, cache=cache, **fit_kw)
    (x,), (y,) = (set(a_mods) - {anchor}), (set(b_mods) - {anchor})
    pairs = [tuple(a_mods), tuple(b_mods), (y, x)]
    rows = []
    for name, sp in (("A " + "<->".join(a_mods), space_a), ("B " + "<->".join(b_mods), space_b),
                     ("merged", merged), ("joint", joint)):
        row: dict[str, Any] = {"name": name}
        for p, q in pairs:
            row[f"{p}<->{q} R@1"] = pair_r1(sp, man, p, q, cache=cache) if {p, q} <= set(sp.modalities) else None
        rows.append(row)
    align = merged.info["lineage"][-1]
    rows[2]["anchor cosine"] = align.get("alignment", {}).get("cosine_after", 1.0)
    return rows

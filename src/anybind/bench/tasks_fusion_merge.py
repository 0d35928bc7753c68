"""Bench task ``fusion-merge`` (issue 19, MM-Lego): fusion heads trained apart, one per modality, merged
into one model over every modality (LegoMerge), then fine-tuned briefly on paired records (LegoFuse),
beside fusion trained jointly on every modality (the upper bound).

Tux Paint top-level category from image, text and sound, on the folds of ``fusion-missing``
(``--opt protocol=split|swap|kfold``, its fold spaces reused from ``work/fusion-fold-spaces``).  Per
seed and fold: a ``late`` head on each modality alone (trained on every training record holding it),
their merge (as it is, and with each head's temperature fitted on val), the merge fine-tuned on a fraction (``fuse_fraction``) and on all of the paired
training records (those holding two modalities or more; epochs up to ``fuse_epochs``, chosen on
val), and two joint models: ``late`` with modality dropout (the merge's own architecture) and the
robust attention fusion of ``fusion-missing``.  Each is scored on every subset of present
modalities, pooled over folds, mean ± sd over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from .tasks_fusion import ALL_AVAILABLE, MODS, subset_order, fmt, mean_std, paired_gap, prepare_folds, recipe_fitter

LATE = {"kind": "late", "dropout": 0.0, "reconstruct": False, "balance": None}
JOINT = {
    "joint late (dropout 0.3)": {"kind": "late", "dropout": 0.3, "reconstruct": False, "balance": None},
    "joint attention robust (ogm-ge)": {"kind": "attention", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
}


def _scores(model: Any, test: list[Any], cache) -> tuple[dict[str, float], dict[str, int]]:
    recs = [r for r in test if any(m in r.values for m in model.modalities)]
    res, n = model.evaluate(recs, cache=cache, counts=True)
    if len(model.modalities) > 1:
        avail, na = model.evaluate(recs, "none", cache=cache, counts=True)
        res[ALL_AVAILABLE], n[ALL_AVAILABLE] = avail["available"], na["available"]
    return res, n


def _head_scores(h: Any, test: list[Any], cache) -> tuple[dict[str, float], dict[str, int]]:
    """A one-modality head scored on the records of every subset holding its modality (given that modality
    only), so that each column compares every system on the same records."""
    import itertools

    (m,) = h.modalities
    res, n = {}, {}
    for k in range(1, len(MODS) + 1):
        for sub in itertools.combinations(MODS, k):
            recs = [r for r in test if all(x in r.values for x in sub)]
            if m in sub and recs:
                res["+".join(sub)], n["+".join(sub)] = h.evaluate(recs, cache=cache)[m], len(recs)
    return res, n


def _paired(man: Any, fraction: float, seed: int) -> list[Any]:
    """The training records holding two modalities or more; ``fraction`` of them drawn with ``seed``."""
    recs = [r for r in man.split("train") if sum(m in r.values for m in MODS) >= 2]
    if fraction >= 1:
        return recs
    keep = np.random.default_rng(seed).permutation(len(recs))[: max(1, round(fraction * len(recs)))]
    return [recs[i] for i in sorted(keep)]


@task(
    "fusion-merge",
    "Tux Paint top category: late heads trained on image, text and sound apart, merged into one model (LegoMerge), "
    "merged + LegoFuse fine-tune on paired records, beside fusion trained jointly: accuracy for every subset of "
    "present modalities (--opt protocol=split|swap|kfold seeds=N folds=K epochs=N fuse_epochs=N fuse_fraction=F "
    "space=DIR)",
)
def fusion_merge(work: Path, cache=None, seed: int = 0, console=None, space: str = "", epochs: str = "60",
                 protocol: str = "kfold", seeds: str = "3", folds: str = "5", fuse_epochs: str = "20",
                 fuse_fraction: str = "0.25", fuse_lr: str = "5e-4", systems: str = "all") -> TaskResult:
    """``systems=heads``: the one-modality heads only (their rows; the merge is theirs, exactly, on one modality)."""
    from ..fusion import FusionClassifier, lego_fuse, merge_fusion
    from ..space import Space
    from .tuxpaint import load_tux

    man = load_tux(work, MODS, console)
    ep, n_seeds, fe, frac, flr = int(epochs), int(seeds), int(fuse_epochs), float(fuse_fraction), float(fuse_lr)
    fold_list = prepare_folds(protocol, man, recipe_fitter(MODS, cache, seed), Space.load(space) if space else None,
                              int(folds), console, store=Path(work) / "fusion-fold-spaces", tag=f"-seed{seed}")
    fuse_names = {frac: f"merged + LegoFuse ({frac:.0%} of paired train)", 1.0: "merged + LegoFuse (all paired train)"}
    runs: dict[str, list[dict[str, float]]] = {}
    counts: dict[str, int] = {}
    exact: list[float] = []
    chosen: list[int] = []
    temps: list[list[float]] = []
    for s in range(seed, seed + n_seeds):
        tot: dict[str, dict[str, float]] = {}
        cnt: dict[str, dict[str, int]] = {}

        def add(name: str, res: dict[str, float], n: dict[str, int]) -> None:
            for k, v in res.items():
                if n.get(k):
                    tot.setdefault(name, {})[k] = tot.get(name, {}).get(k, 0.0) + v * n[k]
                    cnt.setdefault(name, {})[k] = cnt.get(name, {}).get(k, 0) + n[k]

        for sp, fm in fold_list:
            test = fm.split("test")
            heads = [FusionClassifier(sp, [m], epochs=ep, seed=s, **LATE).fit(fm, "top", cache=cache) for m in MODS]
            for h in heads:
                add(f"{h.modalities[0]} head alone", *_head_scores(h, test, cache))
            if systems == "heads":
                continue
            merged = merge_fusion(heads, seed=s)
            res, n = _scores(merged, test, cache)
            add("merged (LegoMerge, no fine-tune)", res, n)
            for h in heads:  # the merge given one head's modality is that head (up to float rounding)
                m = h.modalities[0]
                exact.append(abs(res[m] - h.evaluate([r for r in test if m in r.values], cache=cache)[m]))
            cal = merge_fusion(heads, calibrate=fm.split("val"), cache=cache, seed=s)
            temps.append([x["temperature"] for x in cal.merged_from_["sources"]])
            add("merged, heads' temperatures on val (no fine-tune)", *_scores(cal, test, cache))
            for f in sorted(fuse_names):
                fused = lego_fuse(merge_fusion(heads, seed=s), _paired(fm, f, s), epochs=fe, lr=flr, cache=cache,
                                  val=fm.split("val"))
                chosen.append(fused.merged_from_["fine_tune"]["best_epoch"])
                add(fuse_names[f], *_scores(fused, test, cache))
            for name, kw in JOINT.items():
                add(name, *_scores(FusionClassifier(sp, MODS, epochs=ep, seed=s, **kw).fit(fm, "top", cache=cache), test, cache))
        for name in tot:
            runs.setdefault(name, []).append({k: v / cnt[name][k] for k, v in tot[name].items()})
            for k, c in cnt[name].items():
                counts[k] = max(counts.get(k, 0), c)
        if console is not None:
            console.print(f"fusion-merge: seed {s} done", highlight=False)
    order = subset_order(counts)
    rows, stats = [], {}
    for name, rs in runs.items():
        mean, std = mean_std(rs)
        stats[name] = mean
        rows.append({"name": name, **{k: fmt(mean[k], std[k], len(rs)) if k in mean else "-" for k in order}})
    rows.append({"name": "n (records per subset)", **{k: str(counts[k]) for k in order}})
    heads_note = ("heads: kind late, no dropout, one per modality, each trained on every training record holding its "
                  "modality; a head's row scores it, given its modality only, on the records of each subset holding it")
    config = {"protocol": protocol, "seeds": list(range(seed, seed + n_seeds)), "folds": len(fold_list),
              "space": space or "fit with RECIPE", "epochs": ep, "label": "top", "n": counts, "systems": systems}
    if systems == "heads":
        return TaskResult(metrics={f"{n}/{k}/accuracy": v for n, st in stats.items() for k, v in st.items()},
                          config=config, notes=[heads_note], table=rows)
    merged_name, main = "merged (LegoMerge, no fine-tune)", fuse_names[frac]
    best_single = {k: max(stats[f"{m} head alone"][k] for m in k.split("+")) for k in order if "+" in k}
    notes = [
        f"protocol {protocol}, {len(fold_list)} fold(s), mean±sd over {n_seeds} seed(s); each subset scored on the "
        f"test records holding all of it, the others hidden; '{ALL_AVAILABLE}': every test record with what it has",
        f"{heads_note}; LegoFuse: up to {fe} epochs at lr {flr} on the training records holding two modalities or "
        f"more, epoch (0 = the merge as it is) chosen on val; chosen epochs {sorted(chosen)}",
        "temperatures on val (image, text, audio head; per seed and fold): " + "; ".join(
            ", ".join(f"{t:g}" for t in ts) for ts in temps),
        f"merge given one modality vs that modality's head: largest accuracy difference {max(exact):.4f} over "
        f"{len(exact)} (seed, fold, modality)",
        *(f"{nm} minus the best head alone on the same records: " + ", ".join(
            f"{k} {stats[nm][k] - v:+.3f}" for k, v in best_single.items())
          for nm in (merged_name, "merged, heads' temperatures on val (no fine-tune)")),
        f"{main} minus merged: " + ", ".join(
            f"{k}: {paired_gap(runs[main], runs[merged_name], k)}" for k in ("image+text", "image+text+audio", ALL_AVAILABLE)),
        "joint late minus merged + LegoFuse (all paired): " + ", ".join(
            f"{k}: {paired_gap(runs['joint late (dropout 0.3)'], runs[fuse_names[1.0]], k)}"
            for k in ("image+text", ALL_AVAILABLE)),
    ]
    return TaskResult(
        metrics={f"{k}/accuracy": v for k, v in stats[main].items()},
        baselines={n: {f"{k}/accuracy": v for k, v in st.items()} for n, st in stats.items() if n != main},
        config={**config, "fuse_epochs": fe, "fuse_fraction": frac, "fuse_lr": flr},
        notes=notes, table=rows,
    )

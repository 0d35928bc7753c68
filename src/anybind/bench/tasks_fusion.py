"""Bench tasks for :mod:`anybind.fusion` (issue 7): accuracy and regression under missing
modalities on Tux Paint, over several seeds and evaluation protocols.

Protocols (``--opt protocol=``):

* ``split``  the corpus' own train/val/test split; test only (25 test records hold all three
             modalities, so the image+text+audio column moves 4 points per record).
* ``swap``   the split, then again with val and test exchanged (epoch chosen on the other one):
             every val and test record scored once (36 hold all three).
* ``kfold``  ``folds`` caption-hash folds over the whole corpus (same caption, same fold); per fold
             a space is bound with the fixed bench recipe (RECIPE) on the other folds (1/8 of them as val), the
             fusion models trained on the same records, the fold scored: every record scored once
             (124 hold all three).  Slowest: one space per fold.

Each seed's scores are pooled over its folds (accuracy over every scored record); tables show
the mean +- standard deviation over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folds import grouped_folds, swap_val_test
from ..memo import MemoSpace
from . import TaskResult, task

MODS = ["image", "text", "audio"]
ALL_AVAILABLE = "all available"  # column: each record scored with every modality it has


def caption_folds(man: Any, k: int) -> list[Any]:
    """``k`` manifests over the same records, fold ``i`` as test, 1/8 of the rest as val, by the
    hash of the casefolded English caption (duplicate captions never straddle folds)."""
    from ..corpora.tuxpaint_source import split_key

    return grouped_folds(man, k, lambda r: split_key(str(r.values.get("text", r.id))))


def prepare_folds(protocol: str, man: Any, fit_space: Callable[[Any], Any], space: Any | None, folds: int,
                  console=None, store: Path | None = None, tag: str = "") -> list[tuple[Any, Any]]:
    """(space, manifest) per fold of ``protocol``; ``space`` (or ``fit_space(man)``) for split/swap.
    For kfold, each fold's space is kept under ``store`` named by the fold manifest's fingerprint
    (ids, splits, values) and ``tag``, and reused by later runs (fusion-missing, then
    fusion-regression, bind the same folds)."""
    if protocol in ("split", "swap"):
        sp = MemoSpace(space if space is not None else fit_space(man))
        return [(sp, man)] if protocol == "split" else [(sp, man), (sp, swap_val_test(man))]
    if protocol == "kfold":
        from ..space import Space

        out = []
        for i, fm in enumerate(caption_folds(man, folds)):
            where = Path(store) / f"{fm.fingerprint(MODS)}{tag}" if store is not None else None
            if where is not None and (where / "space.json").is_file():
                fold_space = Space.load(where)
            else:
                if console:
                    console.print(f"  fold {i + 1}/{folds}: binding a space on {sum(r.split != 'test' for r in fm.records)} records")
                fold_space = fit_space(fm)
                if where is not None:
                    fold_space.save(where)
            out.append((MemoSpace(fold_space), fm))
        return out
    raise ValueError(f"unknown protocol {protocol!r}: use split, swap or kfold")


def pooled_scores(folds: list[tuple[Any, Any]], make: Callable[[Any], Any], label: str, seed: int, cache=None,
                  metric: str | None = None) -> tuple[dict[str, Any], dict[str, int], list[Any]]:
    """Fit ``make(space)`` on each fold's train split (epoch on val), score its test split per
    subset; pool over folds weighted by records.  Returns (scores, counts, fitted models).  For
    R^2 the pooled value is 1 - pooled SSE / pooled SST of the fold means (each fold's R^2
    weighted by its SST)."""
    tot: dict[str, float] = {}
    cnt: dict[str, int] = {}
    models = []
    for space, man in folds:
        model = make(space)
        model.seed = seed
        model.fit(man, label, cache=cache)
        test = [r for r in man.split("test") if any(m in r.values for m in model.modalities)]
        res, n = model.evaluate(test, cache=cache, counts=True, metric="all")
        if len(model.modalities) > 1:  # each record with every modality it has (most Tux Paint records lack sound)
            avail, na = model.evaluate(test, "none", cache=cache, counts=True, metric="all")
            res[ALL_AVAILABLE], n[ALL_AVAILABLE] = avail["available"], na["available"]
        models.append(model)
        for sub, d in res.items():
            if not n[sub]:
                continue
            if "r2" in d:  # regression: pool squared errors (rmse^2 * n) and SST ((1 - r2) = SSE / SST)
                sse = d["rmse"] ** 2 * n[sub]
                sst = sse / (1 - d["r2"]) if d["r2"] != 1 else 0.0
                for k, v in (("sse", sse), ("sst", sst), ("ae", d["mae"] * n[sub])):
                    tot[f"{sub}\0{k}"] = tot.get(f"{sub}\0{k}", 0.0) + v
            else:
                tot[sub] = tot.get(sub, 0.0) + d["accuracy"] * n[sub]
            cnt[sub] = cnt.get(sub, 0) + n[sub]
    if any("\0" in k for k in tot):
        subs = {k.split("\0")[0] for k in tot}
        out = {s: {"r2": 1 - tot[f"{s}\0sse"] / tot[f"{s}\0sst"] if tot[f"{s}\0sst"] > 0 else float("nan"),
                   "mae": tot[f"{s}\0ae"] / cnt[s], "rmse": float(np.sqrt(tot[f"{s}\0sse"] / cnt[s]))} for s in subs}
        return ({s: v[metric or "r2"] for s, v in out.items()} if metric != "all" else out), cnt, models
    return {s: v / cnt[s] for s, v in tot.items()}, cnt, models


def mean_std(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = list(runs[0])
    return ({k: float(np.mean([r[k] for r in runs])) for k in keys}, {k: float(np.std([r[k] for r in runs])) for k in keys})


def fmt(mean: float, std: float, n_runs: int) -> str:
    return f"{mean:.3f}" if n_runs == 1 else f"{mean:.3f}±{std:.3f}"


def recipe_fitter(mods: list[str], cache, seed: int) -> Callable[[Any], Any]:
    from ..space import Space
    from .tuxpaint import RECIPE

    def fit(man):
        recipe = dict(RECIPE)
        enc = recipe.pop("encoders")
        recipe.setdefault("epochs", 200)
        return Space.fit(man, modalities=mods, encoders={m: enc[m] for m in mods}, cache=cache, seed=seed,
                         progress=False, **recipe, recipe="plain")

    return fit


def subset_order(keys) -> list[str]:
    return sorted(keys, key=lambda k: (k == ALL_AVAILABLE, k.count("+"), [MODS.index(x) if x in MODS else 9 for x in k.split("+")]))


def paired_gap(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> str:
    """``a - b`` on ``key``, paired by seed (same seeds, same folds): mean and a 95 % t interval."""
    from scipy import stats

    d = np.array([x[key] - y[key] for x, y in zip(a, b)])
    if len(d) < 2:
        return f"{d.mean():+.3f}"
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return f"{d.mean():+.3f} (95% CI {d.mean() - half:+.3f} .. {d.mean() + half:+.3f}, {len(d)} paired seeds)"


MISSING_CONFIGS: dict[str, dict[str, Any]] = {
    "concat plain": {"kind": "concat", "dropout": 0.0, "reconstruct": False, "balance": None},
    "gated plain": {"kind": "gated", "dropout": 0.0, "reconstruct": False, "balance": None},
    "attention plain": {"kind": "attention", "dropout": 0.0, "reconstruct": False, "balance": None},
    "concat drop+recon": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": None},
    "concat robust (ogm-ge)": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
    "concat robust (agm)": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": "agm"},
    "gated robust (ogm-ge)": {"kind": "gated", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
    "attention drop+recon": {"kind": "attention", "dropout": 0.3, "reconstruct": True, "balance": None},
    "attention robust (ogm-ge)": {"kind": "attention", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
}


@task(
    "fusion-missing",
    "Tux Paint top-level category from image+text+sound: accuracy for every subset of present modalities, "
    "concat vs gated vs attention fusion, plain vs dropout+reconstruction (+OGM-GE / AGM), beside single-modality "
    "models; mean±sd over seeds (--opt protocol=split|swap|kfold, seeds=N, folds=K, space=DIR for split/swap, "
    "epochs=N, configs='name;name' to run a subset)",
)
def fusion_missing(work: Path, cache=None, seed: int = 0, console=None, space: str = "", epochs: str = "60",
                   protocol: str = "kfold", seeds: str = "3", folds: str = "5", configs: str = "") -> TaskResult:
    from ..fusion import FusionClassifier
    from ..space import Space
    from .tuxpaint import load_tux

    man = load_tux(work, MODS, console)
    ep, n_seeds = int(epochs), int(seeds)
    chosen = {k: v for k, v in MISSING_CONFIGS.items() if not configs or k in configs.split(";")}
    fold_list = prepare_folds(protocol, man, recipe_fitter(MODS, cache, seed), Space.load(space) if space else None,
                              int(folds), console, store=Path(work) / "fusion-fold-spaces", tag=f"-seed{seed}")
    runs: dict[str, list[dict[str, float]]] = {}
    counts: dict[str, int] = {}
    for name, kw in chosen.items():
        for s in range(seed, seed + n_seeds):
            res, counts, _ = pooled_scores(fold_list, lambda sp, kw=kw: FusionClassifier(sp, MODS, epochs=ep, **kw),
                                           "top", s, cache)
            runs.setdefault(name, []).append(res)
            if console:
                console.print(f"  {name} seed {s}: " + " ".join(f"{k}={v:.3f}" for k, v in res.items()), highlight=False)
    for m in MODS:
        for s in range(seed, seed + n_seeds):
            res, c1, _ = pooled_scores(fold_list, lambda sp, m=m: FusionClassifier(
                sp, [m], kind="late", dropout=0.0, reconstruct=False, balance=None, epochs=ep), "top", s, cache)
            runs.setdefault("single-modality models", []).append(res)
    single_runs = runs.pop("single-modality models")
    # one run per seed holding every modality's own model
    single = [{m: single_runs[i * n_seeds + j][m] for i, m in enumerate(MODS)} for j in range(n_seeds)]
    runs["single-modality models"] = single
    order = subset_order(counts)
    rows, stats = [], {}
    for name, rs in runs.items():
        mean, std = mean_std(rs)
        stats[name] = (mean, std)
        rows.append({"name": name, **{k: fmt(mean[k], std[k], len(rs)) for k in order if k in mean}})
    rows.append({"name": "n (records per subset)", **{k: str(counts[k]) for k in order}})
    verdict = []
    for name in chosen:
        if "drop+recon" in name or "robust" in name:
            mean = stats[name][0]
            gaps = {m: mean[m] - stats["single-modality models"][0][m] for m in MODS}
            line = (f"{name}: given one modality, minus that modality's own model: "
                    + ", ".join(f"{m} {g:+.3f}" for m, g in gaps.items()))
            if "concat plain" in runs:
                line += "; minus plain concat, " + ", ".join(
                    f"{k}: {paired_gap(runs[name], runs['concat plain'], k)}" for k in ("image+text+audio", ALL_AVAILABLE))
            verdict.append(line)
    main = "attention robust (ogm-ge)" if "attention robust (ogm-ge)" in stats else next(iter(stats))
    return TaskResult(
        metrics={f"{k}/accuracy": v for k, v in stats[main][0].items()},
        baselines={n: {f"{k}/accuracy": v for k, v in st[0].items()} for n, st in stats.items() if n != main},
        config={"protocol": protocol, "seeds": list(range(seed, seed + n_seeds)), "folds": int(folds) if protocol == "kfold" else None,
                "space": space or "fit with RECIPE", "epochs": ep, "label": "top", "configs": chosen, "n": counts},
        notes=[f"protocol {protocol}: " + {"split": "test split only", "swap": "test (epoch on val) + val (epoch on test), pooled",
                                           "kfold": f"{folds} caption-hash folds, a space per fold, pooled"}[protocol],
               f"mean±sd over {n_seeds} seed(s); each subset scored on the records holding all of it, the others hidden; "
               f"'{ALL_AVAILABLE}': every test record with every modality it has ({counts.get(ALL_AVAILABLE, 0)} records)",
               "robust = modality dropout 0.3 + ActionMAE-style reconstruction + balancing", *verdict],
        table=rows,
    )


def _tux_numeric_targets(man: Any, manifest_path: Path) -> list[str]:
    """Add real numeric labels to every Tux Paint record (in memory):

    * ``n_languages``: how many of Tux Paint's locales translate the stamp's description
      (``text_*`` fields of the corpus manifest; older, commoner stamps have more);
    * ``caption_words``: length of the English description in words.
    """
    raw = {}
    with open(manifest_path) as f:
        for line in f:
            d = json.loads(line)
            raw[d["id"]] = d
    for r in man.records:
        r.labels["n_languages"] = sum(k.startswith("text_") for k in raw[r.id])
        r.labels["caption_words"] = len(str(r.values["text"]).split())
    return ["n_languages", "caption_words"]


@task(
    "fusion-regression",
    "Tux Paint real numeric targets (number of translations of a stamp's description; its length in words) "
    "from image+text+sound: R² and MAE for every subset of present modalities, plain vs robust fusion vs "
    "single-modality regressors vs the train-mean predictor; mean±sd over seeds "
    "(--opt protocol=split|swap|kfold, seeds=N, space=DIR, epochs=N, targets='a;b')",
)
def fusion_regression(work: Path, cache=None, seed: int = 0, console=None, space: str = "", epochs: str = "60",
                      protocol: str = "kfold", seeds: str = "3", folds: str = "5", targets: str = "") -> TaskResult:
    from ..fusion import FusionRegressor
    from ..space import Space
    from .tuxpaint import load_tux, prepare_tuxpaint

    man = load_tux(work, MODS, console)
    names = _tux_numeric_targets(man, prepare_tuxpaint(work))
    names = [t for t in names if not targets or t in targets.split(";")]
    ep, n_seeds = int(epochs), int(seeds)
    fold_list = prepare_folds(protocol, man, recipe_fitter(MODS, cache, seed), Space.load(space) if space else None,
                              int(folds), console, store=Path(work) / "fusion-fold-spaces", tag=f"-seed{seed}")
    configs = {
        "concat plain": {"kind": "concat", "dropout": 0.0, "reconstruct": False, "balance": None},
        "concat drop+recon": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": None},
        "concat robust (agm)": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": "agm"},
    }
    rows, metrics, baselines, counts = [], {}, {}, {}
    for tgt in names:
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, kw in configs.items():
            for s in range(seed, seed + n_seeds):
                res, counts, _ = pooled_scores(fold_list, lambda sp, kw=kw: FusionRegressor(sp, MODS, epochs=ep, **kw),
                                               tgt, s, cache, metric="all")
                runs.setdefault(name, []).append(res)
                if console:
                    console.print(f"  {tgt} {name} seed {s}: " + " ".join(f"{k}={v['r2']:.3f}" for k, v in res.items()),
                                  highlight=False)
        single = [{} for _ in range(n_seeds)]
        for m in MODS:
            for j, s in enumerate(range(seed, seed + n_seeds)):
                res, _, _ = pooled_scores(fold_list, lambda sp, m=m: FusionRegressor(
                    sp, [m], kind="late", dropout=0.0, reconstruct=False, balance=None, epochs=ep), tgt, s, cache, metric="all")
                single[j][m] = res[m]
        runs["single-modality models"] = single
        # the train-mean predictor on each fold's test records holding each subset
        order = subset_order(counts)
        for name, rs in runs.items():
            for metric in ("r2", "mae"):
                flat = [{k: v[metric] for k, v in r.items()} for r in rs]
                mean, std = mean_std(flat)
                rows.append({"name": f"{tgt} / {name} / {'R²' if metric == 'r2' else 'MAE'}",
                             **{k: fmt(mean[k], std[k], len(rs)) for k in order if k in mean}})
                target_metrics = {f"{tgt}/{k}/{metric}": v for k, v in mean.items()}
                if name == "concat robust (agm)":
                    metrics.update(target_metrics)
                else:
                    baselines.setdefault(name, {}).update(target_metrics)
        mae0 = _mean_predictor_mae(fold_list, tgt, order)
        rows.append({"name": f"{tgt} / train-mean predictor / MAE", **{k: f"{mae0[k]:.3f}" for k in order}})
        baselines.setdefault("train-mean predictor", {}).update({f"{tgt}/{k}/mae": v for k, v in mae0.items()})
    rows.append({"name": "n (records per subset)", **{k: str(counts[k]) for k in subset_order(counts)}})
    return TaskResult(
        metrics=metrics, baselines=baselines,
        config={"protocol": protocol, "seeds": list(range(seed, seed + n_seeds)), "targets": names, "epochs": ep,
                "space": space or "fit with RECIPE", "configs": configs, "n": counts},
        notes=["targets are real Tux Paint data: n_languages = number of text_* translations of the stamp's "
               "description in the corpus, caption_words = words in its English description",
               "R² pooled over folds as 1 - SSE/SST; the train-mean predictor has R² <= 0 by construction",
               f"mean±sd over {n_seeds} seed(s); each subset scored on the records holding all of it"],
        table=rows,
    )


def _mean_predictor_mae(folds: list[tuple[Any, Any]], target: str, subsets: list[str]) -> dict[str, float]:
    err: dict[str, float] = {}
    cnt: dict[str, int] = {}
    for _, man in folds:
        mean = float(np.mean([float(r.labels[target]) for r in man.split("train")]))
        for r in man.split("test"):
            for sub in subsets:
                held = any(m in r.values for m in MODS) if sub == ALL_AVAILABLE else all(m in r.values for m in sub.split("+"))
                if held:
                    err[sub] = err.get(sub, 0.0) + abs(float(r.labels[target]) - mean)
                    cnt[sub] = cnt.get(sub, 0) + 1
    return {s: err[s] / cnt[s] for s in subsets if cnt.get(s)}

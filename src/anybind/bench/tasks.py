"""Built-in benchmark tasks of the foundation: Tux Paint retrieval and the training-choice ablation."""

from __future__ import annotations

import time
from pathlib import Path

from ..evaluate import embed_records
from ..metrics import Embedded, retrieval_from_embeddings
from . import TaskResult, task
from .tuxpaint import (DEFAULT_MODALITIES, PLAIN_ENCODERS, RECIPE, compare_on_tuxpaint, fixed_recipe, load_tux,
                       plain_unless_free, score)


@task("tuxpaint-retrieval", "Tux Paint test split: image<->text, sound<->text, image<->sound retrieval vs chance and Procrustes")
def tuxpaint_retrieval(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    space, proc, man, res = compare_on_tuxpaint(work, cache=cache, seed=seed, console=console,
                                                **fixed_recipe(DEFAULT_MODALITIES))
    return TaskResult(
        metrics=res["anybind"],
        baselines={"procrustes": res["procrustes"], "chance": res["chance"]},
        config={"space": space.config, "encoders": space.encoders, "procrustes": proc.config,
                "records": len(man.records), "best_epoch": space.info["training"]["best_epoch"]},
    )


#: (name, encoders, fit kwargs) -- each lever added on top of the previous rows
ABLATION = [
    ("linear", PLAIN_ENCODERS, {"projector": "linear"}),
    ("mlp", PLAIN_ENCODERS, {"projector": "mlp"}),
    ("mlp+lock", PLAIN_ENCODERS, {"lock": "text"}),
    ("mlp+lock+ridge", PLAIN_ENCODERS, {"lock": "text", "init": "ridge"}),
    ("bridge+mlp", RECIPE["encoders"], {}),
    ("bridge+mlp+lock", RECIPE["encoders"], {"lock": "text"}),
    ("bridge+mlp+lock+ridge", RECIPE["encoders"], {"lock": "text", "init": "ridge"}),
    ("+bridge prior+wise, lr 1e-4 (recipe)", RECIPE["encoders"],
     {"lock": "text", "init": "ridge", "ridge_prior": "bridge", "wise": "auto", "lr": 1e-4}),
    ("procrustes", PLAIN_ENCODERS, {"method": "procrustes"}),
    ("procrustes+bridge", RECIPE["encoders"], {"method": "procrustes"}),
]
KEYS = ("text->image/R@1", "text->image/R@10", "image->text/R@1", "image->text/R@10")


@task("tuxpaint-ablation", "Training choices for Tux Paint image<->text (test split), each lever on top of the last, same seed")
def tuxpaint_ablation(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..space import Space
    from .tuxpaint import chance_metrics

    mods = ["image", "text"]
    man = load_tux(work, mods, console)
    rows: dict[str, dict[str, float]] = {}
    full_res: dict[str, dict[str, float]] = {}
    for name, encs, kw in ABLATION:
        t0 = time.perf_counter()
        sp = Space.fit(man, modalities=mods, encoders={m: encs[m] for m in mods}, cache=cache, seed=seed,
                       progress=False, **plain_unless_free(kw))
        res = full_res[name] = score(sp, man, mods, cache=cache)
        tr = sp.info.get("training", {})
        rows[name] = {k: res[k] for k in KEYS} | {
            "val": tr.get("best_val", float("nan")),
            "best_epoch": tr.get("best_epoch", 0),
            "fit_seconds": round(time.perf_counter() - t0, 2),
        }
    zs = score(Space.label_bridge(), man, mods, cache=cache)
    recipe_name = "+bridge prior+wise, lr 1e-4 (recipe)"
    full = full_res[recipe_name]
    metrics = {f"{k}": rows[recipe_name][k] for k in KEYS}
    metrics.update({f"{name}/{k}": v for name, r in rows.items() for k, v in r.items()})
    return TaskResult(
        metrics=metrics,
        baselines={
            "label-bridge (training-free)": {k: zs[k] for k in KEYS},
            "chance": {k: chance_metrics(full)[k] for k in KEYS},
        },
        config={"rows": [{"name": n, "encoders": {m: e[m] for m in mods}, "fit": kw} for n, e, kw in ABLATION],
                "n_test": int(full["text->image/n"])},
        table=[{"name": n, **r} for n, r in rows.items()]
        + [{"name": "label-bridge (training-free)", **{k: zs[k] for k in KEYS}},
           {"name": "chance", **{k: chance_metrics(full)[k] for k in KEYS}}],
        notes=["val = mean (R@1+R@5+R@10)/3 on the val split, what early stopping and ridge's alpha were chosen by"],
    )


#: the columns also reported with duplicates not grouped (each record's own partner the only correct answer)
ALONE = ("text->image/R@1", "image->text/R@1")


#: the Tux Paint splits the defaults task scores (``--opt split=``): test, or val to choose on
DEFAULTS_SPLITS = ("test", "val")


@task("defaults", "What a newcomer gets: Space.fit(manifest) with recipe auto vs plain vs Procrustes, Tux Paint image<->text "
      "(--opt split=test|val; image=SPEC[,SPEC...]: one defaults row per image encoder, the rest still chosen by recipe auto)")
def fit_defaults(work: Path, cache=None, seed: int = 0, console=None, split: str = "test", image: str = "") -> TaskResult:
    """``Space.fit(man, ["image", "text"])`` with nothing else chosen, next to the bare defaults and Procrustes."""
    from ..errors import AnybindError
    from ..space import Space
    from .tuxpaint import chance_metrics, image_encoders, short_spec

    if split not in DEFAULTS_SPLITS:
        raise AnybindError(f"defaults: split={split!r}; known: {', '.join(DEFAULTS_SPLITS)}")
    specs = image_encoders("defaults", image)
    mods = ["image", "text"]
    man = load_tux(work, mods, console)
    rows: dict[str, dict[str, float]] = {}
    auto_rows = ({f"Space.fit defaults, image={short_spec(s)}": {"encoders": {"image": s}} for s in specs} if specs
                 else {"Space.fit defaults (recipe auto)": {}})
    systems = {
        **auto_rows,
        "Space.fit recipe plain": {"recipe": "plain"},
        "procrustes (training-free)": {"method": "procrustes"},
    }
    chosen = {}
    for name, kw in systems.items():
        t0 = time.perf_counter()
        sp = Space.fit(man, modalities=mods, cache=cache, seed=seed, progress=False, **kw)
        fit_s = round(time.perf_counter() - t0, 2)
        embs = embed_records(sp, man.split(split), mods, cache=cache)
        res = retrieval_from_embeddings(embs)  # duplicate-aware: identical content (keys) is interchangeable
        alone = retrieval_from_embeddings({m: Embedded(e.ids, e.vectors, None) for m, e in embs.items()})
        rows[name] = ({k: res[k] for k in KEYS} | {f"{k} (no duplicates)": alone[k] for k in ALONE}
                      | {"fit_seconds": fit_s})
        chosen[name] = {"encoders": sp.encoders, "recipe": sp.info["lineage"][-1].get("recipe")}
    ch = chance_metrics(res)
    auto = rows[next(iter(auto_rows))]
    return TaskResult(
        metrics={k: auto[k] for k in KEYS} | {f"{n}/{k}": v for n, r in rows.items() for k, v in r.items()},
        baselines={"procrustes": {k: rows["procrustes (training-free)"][k] for k in KEYS},
                   "chance": {k: ch[k] for k in KEYS}},
        config={"systems": chosen, "split": split, "n_test": int(res["text->image/n"])},
        table=[{"name": n, **r} for n, r in rows.items()] + [{"name": "chance", **{k: ch[k] for k in KEYS}}],
        notes=[("one pair per query, strict ranking (ties count against the query), duplicate-aware: items of identical "
                "content (the encoders' content keys: two stamps captioned 'A flower.', byte-identical images) are "
                "interchangeable -- the project's retrieval metric (anybind.metrics.pair_recalls); '(no duplicates)': "
                "the same ranking with only each record's own partner correct; same seed, same run"),
               f"Tux Paint {split} split"
               + (f"; image=: one Space.fit defaults row per image encoder ({', '.join(specs)}), the recipe's other "
                  "choices made by recipe auto as usual; plain and Procrustes keep their own encoders" if specs else "")],
    )

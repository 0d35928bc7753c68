"""``multilingual-retrieval``: Tux Paint test images found from captions in languages the projector never saw.

The space is bound on the *English* captions only, with the multilingual text
encoder ``text:e5-small`` locked as the shared space (the fixed bench recipe, RECIPE,
its text tower swapped).  The queries are the stamps' own translated captions
(``text_fr``, ``text_de``, ...: written by Tux Paint's translators, not machine
translation), embedded by the same text encoder; the gallery is every test
image that has a caption in that language (185-187 of the 187).  Beside it, in the same run: the fixed bench recipe (RECIPE) with the English-only
``text:minilm`` (what a user gets without a multilingual encoder), the English
queries of both spaces (the ceiling), and chance.

Duplicate captions ("A flower." x6) are interchangeable: a query counts as
found when any image whose English caption has the same content is ranked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import TaskResult, task
from .tuxpaint import RECIPE, load_tux

#: translated caption fields queried (9 languages, 5 scripts/families)
LANGS = ("fr", "de", "es", "it", "pt", "nl", "pl", "ru", "ja")
E5 = "text:e5-small"


def language_recalls(space, records, langs, cache=None) -> dict[str, dict[str, float]]:
    """text_<lang> -> image R@1/5/10 on ``records`` (those with an image and an English caption)."""
    from ..evaluate import sim_recalls

    recs = [r for r in records if r.has("image") and r.has("text")]
    img = space.embed("image", [r.values["image"] for r in recs], cache=cache)
    enc_i, enc_t = space.encoder("image"), space.encoder("text")
    gal_keys = [enc_i.content_key(r.values["image"]) for r in recs]
    out = {}
    for lang in ("en", *langs):
        field = "text" if lang == "en" else f"text_{lang}"
        idx = [i for i, r in enumerate(recs) if r.has(field)]
        if not idx:
            continue
        q = space.embed("text", [recs[i].values[field] for i in idx], cache=cache)
        sim = q @ img[idx].T
        # group queries by the *English* caption, so a translation of "A flower." finds any flower
        qk = [enc_t.content_key(recs[i].values["text"]) for i in idx]
        out[lang] = sim_recalls(sim, query_keys=qk, gallery_keys=[gal_keys[i] for i in idx])
    return out


@task("multilingual-retrieval", "Tux Paint test images from captions in 9 languages, space bound on English captions only (e5-small vs MiniLM)")
def multilingual_retrieval(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..space import Space

    fields = ["image", "text", *(f"text_{lang}" for lang in LANGS)]
    man = load_tux(work, fields, console)
    kw = {k: v for k, v in RECIPE.items() if k != "encoders"}
    spaces = {
        "e5-small": Space.fit(man, modalities=["image", "text"], encoders={"image": RECIPE["encoders"]["image"], "text": E5},
                              cache=cache, seed=seed, **kw, recipe="plain"),
        "minilm": Space.fit(man, modalities=["image", "text"], encoders={"image": RECIPE["encoders"]["image"], "text": "text:minilm"},
                            cache=cache, seed=seed, **kw, recipe="plain"),
    }
    test = man.split("test")
    res = {name: language_recalls(sp, test, LANGS, cache) for name, sp in spaces.items()}
    metrics, base = {}, {"minilm": {}, "chance": {}}
    rows = []
    for lang, r in res["e5-small"].items():
        n = r["n"]
        chance = 1.0 / n
        for k in ("R@1", "R@10"):
            metrics[f"{lang}/{k}"] = r[k]
            base["minilm"][f"{lang}/{k}"] = res["minilm"][lang][k]
            base["chance"][f"{lang}/{k}"] = min(int(k[2:]), n) / n
        rows.append({"name": lang + (" (training language)" if lang == "en" else ""),
                     "e5 R@1": r["R@1"], "e5 R@10": r["R@10"],
                     "minilm R@1": res["minilm"][lang]["R@1"], "minilm R@10": res["minilm"][lang]["R@10"],
                     "chance R@1": chance})
    foreign = [lang for lang in res["e5-small"] if lang != "en"]
    metrics["foreign-mean/R@1"] = float(np.mean([res["e5-small"][lang]["R@1"] for lang in foreign]))
    base["minilm"]["foreign-mean/R@1"] = float(np.mean([res["minilm"][lang]["R@1"] for lang in foreign]))
    metrics["foreign/en-ratio"] = metrics["foreign-mean/R@1"] / max(metrics["en/R@1"], 1e-9)
    rows.append({"name": f"mean of {len(foreign)} foreign languages", "e5 R@1": metrics["foreign-mean/R@1"],
                 "minilm R@1": base["minilm"]["foreign-mean/R@1"]})
    return TaskResult(
        metrics=metrics,
        baselines=base,
        table=rows,
        config={"languages": list(LANGS), "train": "English captions of the train split only",
                "spaces": {k: v.config for k, v in spaces.items()}, "text_encoders": {"e5-small": E5, "minilm": "text:minilm"}},
        notes=["queries are Tux Paint's human translations of the test captions; neither projector saw any of these languages",
               "the text encoder is locked (its own space is the shared space), so only the image projector is trained"],
    )

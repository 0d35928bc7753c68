"""``anybind bench --task captioning``: Tux Paint test images -> captions through a small frozen LM."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import TaskResult, task
from .tuxpaint import RECIPE, load_tux


def _r1(space, captions: list[str], image_emb: np.ndarray, cache) -> float:
    """Text->image R@1 of generated captions among the test images (strict: a tie is a miss)."""
    C = space.embed("text", [c if c.strip() else "(empty)" for c in captions], cache=cache)
    S = C @ image_emb.T
    own = np.diag(S)
    return float(np.mean([(S[i] > own[i]).sum() == 0 and (S[i] == own[i]).sum() == 1 for i in range(len(S))]))


def _label_bridge_captions(paths: list[str], cache) -> list[str]:
    """"a picture of a {ImageNet class}": EfficientNet-Lite0's own top-1 class of each image."""
    from ..cache import FeatureCache
    from ..encoders.bridge import classifier_head, imagenet_class_names
    from ..encoders.registry import get_encoder

    base = get_encoder("image:efficientnet-lite0")
    feats = FeatureCache(cache).encode(base, paths, progress=False)
    W, b = classifier_head(base)
    names = imagenet_class_names()
    return [f"a picture of a {names[i]}." for i in (feats @ W.T + b).argmax(1)]


@task("captioning", "Tux Paint test images -> captions from a small frozen LM (SmolLM2-135M): BLEU-4, CIDEr-D and "
      "text->image R@1 of the captions, vs retrieval captioning and the label bridge; mapper training time, tokens/s")
def captioning(work: Path, cache=None, seed: int = 0, console=None, lm: str = "smollm2", epochs: str = "4",
               noise: str = "", noise_grid: str = "0,0.05,0.1", n_test: str = "0", method: str = "greedy",
               prefix_len: str = "8", batch_size: str = "32", max_tokens: str = "20", paired: str = "0") -> TaskResult:
    """Options (``--opt KEY=VALUE``): ``lm``, ``epochs``, ``noise`` (fixed) or ``noise_grid`` (chosen on val),
    ``n_test`` (0: the whole test split), ``method`` (greedy | beam | sample), ``prefix_len``, ``batch_size``,
    ``paired=1``: also a mapper trained on the paired image embeddings (the supervised comparison)."""
    from ..caption import bleu, cider_d, fit_captioner
    from ..space import Space

    mods = ["image", "text"]
    man = load_tux(work, mods, console)
    space = Space.fit(man, modalities=mods, encoders={m: RECIPE["encoders"][m] for m in mods}, cache=cache, seed=seed,
                      epochs=200, lock=RECIPE["lock"], init=RECIPE["init"], recipe="plain", progress=False)
    fit_kw = {"epochs": int(epochs), "prefix_len": int(prefix_len), "batch_size": int(batch_size), "seed": seed}
    if noise.strip():
        fit_kw["noise"] = float(noise)
    else:
        fit_kw["noise_grid"] = tuple(float(x) for x in noise_grid.split(",") if x.strip())
    t0 = time.perf_counter()
    cap = fit_captioner(space, man, lm, cache=cache, progress=True, **fit_kw)
    train_s = time.perf_counter() - t0
    test = sorted((r for r in man.split("test") if r.has("image") and r.has("text")), key=lambda r: r.id)
    if int(n_test) > 0:
        test = test[: int(n_test)]
    paths = [r.values["image"] for r in test]
    refs = [[r.values["text"]] for r in test]
    Xi = space.embed("image", paths, cache=cache)
    t1 = time.perf_counter()
    generated = cap.decode(Xi, method=method, max_tokens=int(max_tokens), seed=seed)
    gen_s = time.perf_counter() - t1
    n_tokens = sum(len(cap.lm.tokenizer(g, add_special_tokens=False)["input_ids"]) + 1 for g in generated)
    train_caps = sorted({r.values["text"] for r in man.split("train") if r.has("text")})
    Xt = space.embed("text", train_caps, cache=cache)
    retrieved = [train_caps[i] for i in (Xi @ Xt.T).argmax(1)]
    systems = {
        "anybind captioner (text-only, frozen LM)": generated,
        "retrieval (nearest train caption)": retrieved,
        "label bridge (a picture of a {ImageNet class})": _label_bridge_captions(paths, cache),
        "reference captions (upper bound of R@1)": [r[0] for r in refs],
    }
    if paired.strip() not in ("", "0"):
        kw = {k: v for k, v in fit_kw.items() if k not in ("noise", "noise_grid")}
        sup = fit_captioner(space, man, cap.lm, cache=cache, progress=True, paired=True, select_on="image", **kw)
        systems["mapper trained on paired image embeddings"] = sup.decode(Xi, method=method, max_tokens=int(max_tokens),
                                                                         seed=seed)
    rows = {}
    for name, caps in systems.items():
        rows[name] = {"BLEU-4": bleu(caps, refs), "CIDEr-D": cider_d(caps, refs), "text->image/R@1": _r1(space, caps, Xi, cache)}
    main = rows["anybind captioner (text-only, frozen LM)"]
    metrics = dict(main) | {"train_seconds": round(train_s, 1), "tokens_per_s": n_tokens / max(gen_s, 1e-9),
                            "noise_std": cap.noise_std, "n_test": len(test)}
    examples = [f"{r.id}: {g!r} (ref {ref[0]!r}, retrieval {rt!r})"
                for r, g, ref, rt in list(zip(test, generated, refs, retrieved))[:5]]
    return TaskResult(
        metrics=metrics,
        baselines={n: v for n, v in rows.items() if not n.startswith("anybind")},
        config={"lm": cap.lm.spec, "lm_identity": cap.lm.identity, "fit": fit_kw, "method": method,
                "noise_val_nll": cap.info["noise_val_nll"], "n_train": cap.info["n_train"], "encoders": space.encoders},
        table=[{"name": n, **v} for n, v in rows.items()],
        notes=[f"mapper training {train_s:.0f} s on this machine (noise {cap.noise_std:g} chosen on val image->caption "
               f"NLL: {cap.info['noise_val_nll']}); generation {n_tokens} tokens in {gen_s:.0f} s "
               f"({n_tokens / max(gen_s, 1e-9):.2f} tokens/s, {method}, tokens re-counted from the text + 1 stop)",
               "BLEU-4 and CIDEr-D as in coco-caption (anybind.caption.scores), one English reference per stamp",
               *examples],
    )

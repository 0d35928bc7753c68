"""``anybind bench --task captioning``: Tux Paint test images, sounds and spoken captions -> captions through a
small frozen LM.

One space binds image, text and (with ``audio`` in ``sources``) the stamps' sound effects on Tux Paint with the
bench recipe; ``speech`` (Whisper-tiny features) is added progressively through text from the spoken-captions
corpus (held-out voices at test, :mod:`anybind.corpora.speech`).  Captioners are trained text-only on the
train captions, one per retrieval k of the grid (:mod:`anybind.caption.retrieval`; k chosen on val); each source's
test items are captioned by the mapper alone (k=0), the retrieval-augmented captioner (the k chosen on val), the
frozen LM prompted with the retrieved captions alone (training-free), retrieval captioning (the nearest train
caption) and, for images, the label bridge; and the row users get by default ("default (chosen on val)"): per
source, the mode chosen on its val items (mapper / training-free prompt / nearest caption, by CIDEr-D,
:mod:`anybind.caption.choice`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import TaskResult, task
from .tuxpaint import RECIPE, load_tux


def _r1(space, captions: list[str], image_emb: np.ndarray, cache) -> float:
    """Text->source R@1 of generated captions among the source's test items (strict: a tie is a miss)."""
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


SOURCES = ("image", "audio", "speech")


def _space(work: Path, sources: list[str], cache, seed: int, console):
    """The bench space (image + text [+ audio] on Tux Paint, + speech through text) and the manifests."""
    from ..data.manifest import load_manifest
    from ..space import Space

    mods = ["image", "text"] + (["audio"] if "audio" in sources else [])
    man = load_tux(work, mods, console)
    space = Space.fit(man, modalities=mods, encoders={m: RECIPE["encoders"][m] for m in mods}, cache=cache, seed=seed,
                      epochs=200, lock=RECIPE["lock"], init=RECIPE["init"], recipe="plain", progress=False)
    speech = None
    if "speech" in sources:
        from .tasks_speech import SPEECH_SPEC, prepare_speech

        speech = load_manifest(prepare_speech(work, console), modalities=["speech", "text", "image"], progress=True)
        space = space.add_modality("speech", SPEECH_SPEC, speech, anchors=["text"], cache=cache, seed=seed)
    return space, man, speech


def _test_records(source: str, man, speech, n_test: int = 0) -> list:
    """One source's captioned test records, by id (the first ``n_test``; 0: all): speech from the spoken-captions
    corpus ``speech`` (its held-out test voices; one record per distinct clip, the first by id), the other sources
    from the Tux Paint manifest ``man``."""
    pool = speech if source == "speech" else man
    if pool is None:
        raise DataError(f"no {source} corpus: speech rows need the spoken-captions corpus (sources=...,speech)")
    test = sorted((r for r in pool.split("test") if r.has(source) and r.has("text")), key=lambda r: r.id)
    if source == "speech":  # one row per distinct clip: records sharing a caption and a voice share the clip
        seen: set = set()
        test = [r for r in test if not (r.values["speech"] in seen or seen.add(r.values["speech"]))]
    if n_test > 0:
        test = test[:n_test]
    if not test:
        raise DataError(f"{getattr(pool, 'path', '')}: no {source} test records with captions")
    return test


#: the retrieval captioning row: the captioner's nearest memory caption (``Captioner.decode(mode="nearest")``)
NEAREST = "retrieval (nearest train caption)"


def decoders(cap, by_k: dict, free_k: int) -> dict:
    """The bench's systems of the captioner: name -> ``fn(X, modality=..., **gen)``; the first is the captioner
    chosen on val; the last (:data:`NEAREST`) its nearest memory caption, by the library's own mode (the memory holds
    every distinct train caption; cut to ``max_tokens`` LM tokens, as ``Captioner.caption`` gives it)."""
    out = {f"anybind captioner, retrieval k={cap.retrieval_k} (projection {cap.projection}; k chosen on val)": cap.decode}
    if 0 in by_k and cap.retrieval_k != 0:
        out[f"anybind captioner, k=0: mapper alone (projection {by_k[0].projection})"] = by_k[0].decode
    for k, c in sorted(by_k.items()):
        if k not in (0, cap.retrieval_k):
            out[f"anybind captioner, retrieval k={k} (projection {c.projection})"] = c.decode
    if free_k > 0:
        out[f"training-free retrieval prompt (k={free_k}, frozen LM, no mapper)"] = \
            lambda X, **g: cap.decode(X, **g, retrieval_k=free_k, prefix=False, projection="none")
    out[NEAREST] = lambda X, **g: cap.decode(X, **g, mode="nearest")
    return out


def scores(space, captions: list[str], refs: list[list[str]], X: np.ndarray, cache) -> dict[str, float]:
    """BLEU-4, CIDEr-D and text->source R@1 of one system's captions (R@1 among the items ``X``)."""
    from ..caption import bleu, cider_d

    return {"BLEU-4": bleu(captions, refs), "CIDEr-D": cider_d(captions, refs),
            "text->source R@1": _r1(space, captions, X, cache)}


def _rows(space, lm_systems: dict, source: str, test: list, cache, gen: dict) -> tuple:
    """The systems' captions of one source's test items and their scores: ``(rows, generated, seconds, X)``;
    ``lm_systems`` (:func:`decoders`): the first one is timed."""
    items = [r.values[source] for r in test]
    refs = [[r.values["text"]] for r in test]
    X = space.embed(source, items, cache=cache)
    systems, gen_s = {}, 0.0
    for i, (name, fn) in enumerate(lm_systems.items()):
        t0 = time.perf_counter()
        systems[name] = fn(X, modality=source, **gen)
        gen_s = time.perf_counter() - t0 if i == 0 else gen_s
    if source == "image":
        systems["label bridge (a picture of a {ImageNet class})"] = _label_bridge_captions(items, cache)
    systems["reference captions (upper bound of R@1)"] = [r[0] for r in refs]
    rows = {name: {(f"text->{source}/R@1" if k.endswith("R@1") else k): v
                   for k, v in scores(space, c, refs, X, cache).items()} for name, c in systems.items()}
    return rows, systems, gen_s, X


def vs_nearest(systems: dict[str, list[str]], refs: list[list[str]], seed: int = 0) -> dict[str, tuple]:
    """Each system's paired bootstrap 95 % interval of mean CIDEr-D minus retrieval captioning's (:data:`NEAREST`) over
    the same items (1000 resamples of the items, :func:`~anybind.bench.stats.bootstrap`); the references and the
    nearest row itself are left out; ``{}`` without a nearest row."""
    from ..caption.scores import cider_d_items
    from .stats import bootstrap

    if NEAREST not in systems:
        return {}
    base = np.array(cider_d_items(systems[NEAREST], refs))
    return {name: bootstrap(np.array(cider_d_items(c, refs)), [base], seed=seed)[2] for name, c in systems.items()
            if name != NEAREST and not name.startswith("reference captions")}


def source_result(space, lm_systems: dict, source: str, test: list, cache, gen: dict, count_tokens=None) -> dict:
    """One source's part of the bench: its rows (``"{source}->caption: {system}"`` -> BLEU-4, CIDEr-D, text->source
    R@1), its metrics (the val-chosen captioner's scores, ``n_test``, the paired 95 % interval of its CIDEr-D minus
    the nearest caption's (``.../CIDEr-D minus nearest/lo`` and ``/hi``), and with ``count_tokens`` (text -> number of
    LM tokens) the generation's ``tokens_per_s``: the text's tokens + 1 stop each), its scores as ``_rows`` names
    them (``main``), the chosen captioner's captions, every system's captions (``systems``), its seconds, its token
    count, the test embeddings ``X`` and every system's interval against the nearest caption (``vs_nearest``,
    :func:`vs_nearest`)."""
    src_rows, systems, secs, X = _rows(space, lm_systems, source, test, cache, gen)
    main = next(iter(src_rows))
    generated = systems[main]
    tokens = sum(count_tokens(g) + 1 for g in generated) if count_tokens else 0
    metrics = {f"{source}->caption/{k if '/' not in k else 'R@1'}": v for k, v in src_rows[main].items()}
    metrics[f"{source}->caption/n_test"] = len(test)
    ci = vs_nearest(systems, [[r.values["text"]] for r in test])
    if main in ci:
        metrics[f"{source}->caption/CIDEr-D minus nearest/lo"], metrics[f"{source}->caption/CIDEr-D minus nearest/hi"] \
            = ci[main]
    if count_tokens:
        metrics[f"{source}->caption/tokens_per_s"] = tokens / max(secs, 1e-9)
    rows = {f"{source}->caption: {name}": {"BLEU-4": v["BLEU-4"], "CIDEr-D": v["CIDEr-D"],
                                           "text->source R@1": next(x for k, x in v.items() if k.endswith("R@1"))}
            for name, v in src_rows.items()}
    return {"rows": rows, "metrics": metrics, "main": src_rows[main], "generated": generated, "seconds": secs,
            "tokens": tokens, "X": X, "systems": systems, "vs_nearest": ci}


def default_row(cap, source: str, res: dict, lm_systems: dict, free_k: int, space, test: list, cache,
                gen: dict) -> tuple[str, dict[str, float], list[str]]:
    """The row of what ``Captioner.caption`` gives by default for ``source``: the mode chosen on val
    (:mod:`anybind.caption.choice`).  Its captions are those of the same system's row when the bench decoded them
    already (the val-chosen captioner, the training-free prompt at the captioner's ``prompt_k``, or the nearest
    caption), else decoded.  Returns the row's name, its scores and its captions."""
    mode = cap.mode_for(source)
    names = list(lm_systems)
    same = {"mapper": names[0], "prompt": next((n for n in names if n.startswith("training-free")), None)
            if free_k == cap.prompt_k else None, "nearest": NEAREST if NEAREST in names else None}.get(mode)
    caps = res["systems"][same] if same else cap.decode(res["X"], mode=mode, modality=source, **gen)
    refs = [[r.values["text"]] for r in test]
    val = cap.modes.get(source, {})
    how = (f"{mode}; val CIDEr-D on {val['n_val']} items: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                       val["val_cider_d"].items())) if val else \
        f"{mode}: no val choice for {source}"
    return f"{source}->caption: default (chosen on val: {how})", scores(space, caps, refs, res["X"], cache), caps


@task("captioning", "Tux Paint test images, sounds and spoken captions -> captions from a small frozen LM "
      "(SmolLM2-135M): BLEU-4, CIDEr-D and text->source R@1 of the captions, vs retrieval captioning and the label "
      "bridge; mapper training time, tokens/s")
def captioning(work: Path, cache=None, seed: int = 0, console=None, lm: str = "smollm2", epochs: str = "4",
               noise: str = "", noise_grid: str = "0,0.05,0.1", n_test: str = "0", method: str = "greedy",
               prefix_len: str = "8", batch_size: str = "32", max_tokens: str = "20", paired: str = "0",
               sources: str = "image,audio,speech", lr: str = "2e-3", hidden: str = "512", n_train: str = "0",
               projection: str = "auto", retrieval_k: str = "0,3", free_k: str = "", choose_n: str = "32") -> TaskResult:
    """Options (``--opt KEY=VALUE``): ``lm``, ``epochs``, ``noise`` (fixed) or ``noise_grid`` (chosen on val),
    ``n_test`` (0: each source's whole test split), ``method`` (greedy | beam | sample), ``prefix_len``,
    ``batch_size``, ``lr`` (one rate, or comma-separated rates chosen on val), ``hidden``, ``n_train`` (0: every
    train caption; else the mapper trains on a seeded sample, a lighter setting for a slow CPU; the retrieval memory
    keeps every train caption), ``projection`` (auto: chosen on val | none | memory), ``retrieval_k`` (the grid of
    retrieved captions in the prompt, chosen on val; 0: the mapper alone), ``free_k`` (the training-free row's k;
    default the k with the lowest training-free val NLL), ``choose_n`` (val items per source that choose its default
    mode: mapper / prompt / nearest caption, by CIDEr-D; 0: all), ``sources`` (comma-separated of image, audio, speech), ``paired=1``: also a mapper trained on the paired image embeddings."""

    from ..caption import fit_captioner, fit_captioner_by_k

    srcs = [x.strip() for x in sources.split(",") if x.strip()]
    if not srcs or set(srcs) - set(SOURCES) or srcs[0] != "image":
        raise ValueError(f"sources={sources!r}: a comma-separated list of {', '.join(SOURCES)}, image first")
    lrs = tuple(float(x) for x in lr.split(",") if x.strip())
    if not lrs:
        raise ValueError(f"lr={lr!r}: a learning rate, or comma-separated rates")
    space, man, speech = _space(work, srcs, cache, seed, console)
    fit_kw = {"epochs": int(epochs), "prefix_len": int(prefix_len), "batch_size": int(batch_size), "seed": seed,
              "lr": lrs[0] if len(lrs) == 1 else lrs, "hidden": int(hidden), "select_on": "image",
              "projection": None if projection == "auto" else projection, "max_train": int(n_train),
              "retrieval_k": tuple(int(x) for x in retrieval_k.split(",") if x.strip()),
              "choose_n": int(choose_n), "choose_max_tokens": int(max_tokens)}
    if noise.strip():
        fit_kw["noise"] = float(noise)
    else:
        fit_kw["noise_grid"] = tuple(float(x) for x in noise_grid.split(",") if x.strip())
    t0 = time.perf_counter()
    cap, by_k = fit_captioner_by_k(space, man, lm, cache=cache, progress=True, **fit_kw)
    train_s = time.perf_counter() - t0
    choose_s = cap.info.get("choose_seconds", 0.0)
    if speech is not None and "speech" in srcs:  # speech's val items are in the spoken-captions corpus
        from ..caption.choice import choose_modes

        t1 = time.perf_counter()
        choose_modes(cap, speech, ["speech"], n=int(choose_n), seed=seed, cache=cache, method=method,
                     max_tokens=int(max_tokens))
        choose_s += time.perf_counter() - t1
    fk = int(free_k) if free_k.strip() else cap.prompt_k
    lm_systems = decoders(cap, by_k, fk)
    gen = {"method": method, "max_tokens": int(max_tokens), "seed": seed}
    rows: dict[str, dict[str, float]] = {}
    metrics: dict[str, float] = {}

    def count(text: str) -> int:
        return len(cap.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    examples: list[str] = []
    intervals: list[str] = []
    n_tokens, gen_s = 0, 0.0
    for s in srcs:
        test = _test_records(s, man, speech, int(n_test))
        res = source_result(space, lm_systems, s, test, cache, gen, count)
        rows |= res["rows"]
        name, row, default_caps = default_row(cap, s, res, lm_systems, fk, space, test, cache, gen)
        rows[name] = row
        metrics[f"{s}->caption/default/CIDEr-D"] = row["CIDEr-D"]
        ci = res["vs_nearest"] | vs_nearest({name: default_caps, NEAREST: res["systems"][NEAREST]},
                                            [[r.values["text"]] for r in test], seed)
        metrics[f"{s}->caption/default/CIDEr-D minus nearest/lo"], \
            metrics[f"{s}->caption/default/CIDEr-D minus nearest/hi"] = ci[name]
        intervals.append(f"{s} ({len(test)} items): " + "; ".join(
            f"{n.split(' (', 1)[0] if n != name else 'default'} [{lo:+.3f}, {hi:+.3f}]" for n, (lo, hi) in ci.items()))
        metrics |= res["metrics"]
        if s == "image":
            n_tokens, gen_s = res["tokens"], res["seconds"]
            metrics |= res["main"]  # BLEU-4, CIDEr-D, text->image/R@1 of the captioner chosen on val
            if paired.strip() not in ("", "0"):
                kw = {k: v for k, v in fit_kw.items()
                      if k not in ("noise", "noise_grid", "projection", "retrieval_k", "choose_n")}
                sup = fit_captioner(space, man, cap.lm, cache=cache, progress=True, paired=True,
                                    projection="none", choose_n=None, **kw)
                caps_sup = sup.decode(res["X"], modality="image", **gen)
                refs = [[r.values["text"]] for r in test]
                rows["image->caption: mapper trained on paired image embeddings"] = scores(space, caps_sup, refs,
                                                                                            res["X"], cache)
        examples += [f"{s} {r.id}: {g!r} (ref {r.values['text']!r})" for r, g in list(zip(test, res["generated"]))[:3]]
    metrics |= {"train_seconds": round(train_s, 1), "tokens_per_s": n_tokens / max(gen_s, 1e-9),
                "noise_std": cap.noise_std, "n_test": metrics.get("image->caption/n_test", 0)}
    return TaskResult(
        metrics=metrics,
        baselines={n: v for n, v in rows.items() if "k chosen on val" not in n},
        config={"lm": cap.lm.spec, "lm_identity": cap.lm.identity, "fit": fit_kw, "method": method,
                "sources": srcs, "noise_val_nll": cap.info["noise_val_nll"], "lr": cap.info["lr"],
                "lr_val_nll": cap.info["lr_val_nll"], "retrieval_k": cap.retrieval_k,
                "retrieval_val_nll": cap.info["retrieval_val_nll"], "free_k": fk,
                "training_free_val_nll": cap.info["training_free_val_nll"],
                "default_modes": cap.modes, "choose_seconds": round(choose_s, 1),
                "projection": {"kind": cap.projection, "temperature": cap.memory_temperature,
                               "val_nll": cap.info["projection_val_nll"]},
                "n_train": cap.info["n_train"], "encoders": space.encoders},
        table=[{"name": n, **v} for n, v in rows.items()],
        notes=[f"mapper training {train_s:.0f} s on this machine for k in {sorted(by_k)} (chosen k "
               f"{cap.retrieval_k}, val NLL by k {cap.info['retrieval_val_nll']}, training-free "
               f"{cap.info['training_free_val_nll']}; noise {cap.noise_std:g}, lr {cap.info['lr']:g}, "
               f"projection {cap.projection} "
               f"at temperature {cap.memory_temperature:g}, chosen on val image->caption NLL: "
               f"{cap.info['noise_val_nll']}, {cap.info['projection_val_nll']}); image generation {n_tokens} tokens in "
               f"{gen_s:.0f} s ({n_tokens / max(gen_s, 1e-9):.2f} tokens/s, {method}, tokens re-counted from the text "
               "+ 1 stop)",
               "BLEU-4 and CIDEr-D as in coco-caption (anybind.caption.scores), one English reference per item",
               "default (chosen on val): per source the mode Captioner.caption uses by default, chosen on "
               f"{choose_n or 'all'} val items per source by CIDEr-D ({choose_s:.0f} s): "
               + "; ".join(f"{m} -> {c['mode']}" for m, c in cap.modes.items()),
               "CIDEr-D minus retrieval captioning's (the nearest train caption), paired bootstrap 95 % interval over "
               "the same test items (1000 resamples): " + " | ".join(intervals),
               *examples],
    )

"""Trusting the space's answers (issue 20): calibrated match probabilities and the audit of paired data.

Thin: the logic is :mod:`anybind.calibration`, :mod:`anybind.audit`, :mod:`anybind.audit_eval` and
:mod:`anybind.explain`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import TaskResult, task
from .tuxpaint import DEFAULT_MODALITIES, prepare_tuxpaint

TARGET = 0.9


@task("calibration", "Tux Paint test: ECE / Brier of P(match) before vs after calibration (val), precision and "
                     "recall at the threshold suggested for precision 0.9")
def calibration_task(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..calibration import fit_calibration, measure_calibration
    from ..space import Space

    man = prepare_tuxpaint(work, console)
    t0 = time.perf_counter()
    space = Space.fit(man, modalities=list(DEFAULT_MODALITIES), cache=cache, seed=seed, progress=False)
    fit_s = time.perf_counter() - t0  # the fit calibrates on the val split
    rows = {"platt": measure_calibration(space, man, split="test", cache=cache, target_precision=TARGET)}
    space.calibration = fit_calibration(space, man, method="isotonic", cache=cache)
    rows["isotonic"] = measure_calibration(space, man, split="test", cache=cache, target_precision=TARGET)
    keys = ("ece_raw", "ece", "brier_raw", "brier", "threshold", "precision", "recall", "n_pos", "n_neg")
    metrics = {f"{meth}/{pair}/{k}": r[k] for meth, rs in rows.items() for pair, r in rs.items() for k in keys if k in r}
    return TaskResult(
        metrics=metrics,
        baselines={"score read as probability": {f"{pair}/ece": r["ece_raw"] for pair, r in rows["platt"].items()}},
        config={"encoders": space.encoders, "target_precision": TARGET, "fit_seconds": round(fit_s, 1),
                "prior": 0.5, "calibrated_on": "val", "measured_on": "test"},
        table=[{"name": f"{meth} {pair.replace('|', '-')}", **{k: r.get(k) for k in keys}} for meth, rs in rows.items()
               for pair, r in sorted(rs.items())],
        notes=["P(match) at a prior of 0.5: positive and negative test pairs weighted equally in ECE, Brier, precision",
               "before = the raw score (cosine) clipped to [0, 1] read as a probability",
               "threshold = the lowest val score whose val precision reaches the target; precision/recall: on test"],
    )


@task("audit", "Tux Paint with 5% swapped captions, 5% swapped sounds, 5% wrong categories and 20 planted "
               "cross-split duplicates: audit AUROC / precision@k vs raw cosine and the label bridge; leakage recall")
def audit_task(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..audit import audit
    from ..audit_eval import detection, inject_errors, raw_cosine_scores, raw_label_scores
    from ..data.manifest import load_manifest
    from ..space import Space

    man = prepare_tuxpaint(work, console)
    bad = Path(man).parent / f"corrupted-{seed}.jsonl"  # beside the original: its media paths are relative to it
    truth = inject_errors(man, bad, swap={"text": 0.05, "audio": 0.05}, relabel=0.05, label="category",
                          duplicate=20, seed=seed)
    space = Space.fit(bad, modalities=list(DEFAULT_MODALITIES), cache=cache, seed=seed, progress=False)
    t0 = time.perf_counter()
    res = audit(space, bad, label="category", cache=cache)
    audit_s = time.perf_counter() - t0
    bridged = audit(Space.label_bridge(), bad, modalities=["image", "text"], label="category", cache=cache)
    recs = load_manifest(bad, modalities=list(DEFAULT_MODALITIES)).records
    with_ = {m: [r.id for r in recs if r.has(m) and r.has("image" if m != "image" else "text")] for m in ("text", "audio")}
    rows = {
        "swapped captions": {
            "audit": detection(res.scores["mismatch"], truth["swap:text"], with_["text"]),
            "audit, the caption's score": detection(res.scores["mismatch:text"], truth["swap:text"], with_["text"]),
            "raw cosine": detection(raw_cosine_scores(space, bad, "image", "text", cache), truth["swap:text"], with_["text"]),
            "label bridge audit": detection(bridged.scores["mismatch"], truth["swap:text"], with_["text"]),
        },
        "swapped sounds": {
            "audit": detection(res.scores["mismatch"], truth["swap:audio"], with_["audio"]),
            "audit, the sound's score": detection(res.scores["mismatch:audio"], truth["swap:audio"], with_["audio"]),
            "raw cosine": detection(raw_cosine_scores(space, bad, "audio", "text", cache), truth["swap:audio"],
                                    with_["audio"]),
        },
        "wrong categories": {
            "audit": detection(res.scores["label"], truth["label"], list(res.scores["label"])),
            "raw cosine": detection(raw_label_scores(space, bad, "image", "category", cache=cache), truth["label"],
                                    list(res.scores["label"])),
            "label bridge audit": detection(bridged.scores["label"], truth["label"], list(res.scores["label"])),
        },
    }
    found = {tuple(sorted((r.id, f.other))) for r in res.records for f in r.findings if f.kind == "leak"}
    planted = {tuple(sorted(p)) for p in truth["duplicate"]}
    leak_recall = len(planted & found) / len(planted)
    # the clean corpus: what the audit finds in Tux Paint itself
    clean = audit(space, man, label="category", cache=cache)
    metrics = {f"{err}/{sysname}/{k}": v for err, r in rows.items() for sysname, d in r.items() for k, v in d.items()}
    metrics.update({"duplicates/recall": leak_recall, "audit_seconds": round(audit_s, 1)})
    top = [f"{r.id} ({r.split}) {r.score:.2f}: " + max(r.findings, key=lambda f: f.score).detail
           for r in clean.records[:8] if r.findings]
    dups = sorted({f"{min(r.id, f.other)} ~ {max(r.id, f.other)}: " + f.detail.split(": ", 1)[1]
                   for r in clean.records for f in r.findings if f.kind == "leak"})
    return TaskResult(
        metrics=metrics,
        baselines={sysname: {f"{err}/auroc": d["auroc"] for err, r in rows.items() for s2, d in r.items() if s2 == sysname}
                   for sysname in ("raw cosine", "label bridge audit")},
        config={"planted": {k: len(v) for k, v in truth.items()}, "records": len(recs), "seed": seed,
                "clean_leakage": clean.leakage},
        table=[{"name": f"{err}: {sysname}", **d} for err, r in rows.items() for sysname, d in r.items()],
        notes=["the space is fitted on the corrupted corpus (what a curator has), then audits it",
               "audit = the record's score (its worst modality pair); the caption's / sound's score = the mean over "
               "the pairs having that modality (scores['mismatch:<modality>'])",
               f"planted cross-split duplicates found: {leak_recall:.3f}",
               f"clean Tux Paint: leakage per split pair {clean.leakage}", *[f"clean top: {t}" for t in top],
               *[f"clean duplicate: {d}" for d in dups]],
    )


def head_noun(caption: str) -> str | None:
    """The caption's head noun, approximately: the last word of its first clause that is no stopword."""
    from ..explain import STOPWORDS, WORD

    first = caption.split(",")[0].split(".")[0].split(" with ")[0].split(" and ")[0]
    words = [w for w in WORD.findall(first.lower()) if w not in STOPWORDS]
    return words[-1] if words else None


def vocabulary_space(space, words, folder: Path | None, *, source: str = "", cache=None):
    """``space`` with ``words`` as its stored vocabulary, as ``anybind explain --build-vocab`` leaves it: embedded
    once, saved with the space in ``folder`` and read back (the words' vectors then come from the folder, as
    ``anybind explain`` and ``POST /explain`` use them).  A space that already stores a vocabulary of these words
    keeps it.  Returns ``(space, vocabulary, how)``: how = "stored" (the space had it), "built and stored", or
    "built" (no ``folder``: kept in memory only).  The given space is not modified."""
    import copy

    from ..space import Space
    from ..vocabulary import embed_vocabulary, stored_vocabulary

    have = stored_vocabulary(space)
    if have is not None and list(have.words) == list(words):
        return space, have, "stored"
    space = copy.copy(space)  # the caller's space keeps its own vocabulary
    space.vocabulary = embed_vocabulary(space, words, "text", cache=cache, source=source)
    if folder is None:
        return space, stored_vocabulary(space), "built"
    space.save(folder)
    space = Space.load(folder)
    return space, stored_vocabulary(space), "built and stored"


@task("explanations", "Tux Paint test images: how often the category name or the caption's head noun is among "
                      "the top-5 vocabulary words (a vocabulary from the train texts and labels, stored with the "
                      "space), and how often the head noun has a caption's largest leave-one-word-out drop; vs the "
                      "label bridge")
def explanations_task(work: Path, cache=None, seed: int = 0, console=None, limit: int = 0,
                      space: str = "") -> TaskResult:
    """``limit``: the first N test images only (0: all); ``space``: a saved space (binding image and text) to
    measure instead of fitting one; its stored vocabulary is used when it holds the train words, else they are
    stored with a copy of it under the work folder."""
    from ..data.manifest import load_manifest
    from ..explain import nearest_words, vocabulary, word_drops
    from ..space import Space

    man = prepare_tuxpaint(work, console)
    recs = load_manifest(man, modalities=["image", "text"]).records
    words = vocabulary([r for r in recs if r.split == "train"])
    sp = (Space.load(space) if space else
          Space.fit(man, modalities=["image", "text"], cache=cache, seed=seed, progress=False))
    folder = Path(work) / "explanations" / f"space-{seed}"
    sp, voc, how = vocabulary_space(sp, words, folder, source=f"{man} (train split)", cache=cache)
    test = [r for r in recs if r.split == "test" and r.has("image") and r.has("text")]
    test = test[:int(limit)] if int(limit) else test
    images = [r.values["image"] for r in test]
    truth = [(str(r.labels.get("category", "")).rstrip("/").split("/")[-1].lower(), head_noun(r.values["text"]))
             for r in test]
    # the stored vectors answer as the words embedded now: the same top-5 (a check of the stored vocabulary)
    fresh = nearest_words(sp, "image", images, words, k=5, cache=cache)
    rows, same = {}, None
    for name, s2 in (("anybind", sp), ("label bridge", Space.label_bridge())):
        if s2 is sp:  # the stored vocabulary, as `anybind explain` / POST /explain read it
            near = nearest_words(sp, "image", images, voc.words, k=5, cache=cache, embedded_words=voc.vectors)
            same = float(np.mean([[w for w, _ in a] == [w for w, _ in b] for a, b in zip(near, fresh)]))
        else:  # a space of its own: its words embedded at run time
            near = nearest_words(s2, "image", images, words, k=5, cache=cache)
        got = [{w for w, _ in ws} for ws in near]
        rows[name] = {
            "category@5": float(np.mean([c in g for (c, _), g in zip(truth, got)])),
            "head_noun@5": float(np.mean([h in g for (_, h), g in zip(truth, got)])),
            "either@5": float(np.mean([c in g or h in g for (c, h), g in zip(truth, got)])),
        }
        top_drop = []
        for r, (_, h) in zip(test, truth):
            _, drops = word_drops(s2, "text", r.values["text"], "image", r.values["image"], cache=cache)
            top_drop.append(max(drops, key=lambda d: d.drop).word.lower() == h)
        rows[name]["head_noun_top_drop"] = float(np.mean(top_drop))
    in_vocab = float(np.mean([c in words or h in words for c, h in truth]))
    source = {"stored": f"stored with the space {space}", "built": "built once, in memory",
              "built and stored": f"built once and stored with the space ({folder}), read back from it"}[how]
    return TaskResult(
        metrics=rows["anybind"],
        baselines={"label bridge": rows["label bridge"], "chance (5 random words)": {
            "either@5": round(1 - (1 - 2 / max(len(words), 1)) ** 5, 4)}},
        config={"vocabulary": len(words), "vocabulary_source": source, "stored_top5_as_fresh": same,
                "test_images": len(test), "encoders": sp.encoders, "space": space or "fitted"},
        table=[{"name": n, **r} for n, r in rows.items()],
        notes=[f"vocabulary: {len(words)} words of the train captions and labels (stopwords out); "
               f"{in_vocab:.2f} of the test images have their category or head noun in it",
               f"anybind's vocabulary: {source}; its top-5 words are those of the words embedded afresh for "
               f"{same:.3f} of the test images; the label bridge embeds the words at run time",
               "head noun: the last non-stopword of the caption's first clause (approximate)"],
    )

"""Bench task of the speech modality: spoken captions on voices never heard in training.

* ``speech-retrieval``: image+text bound on Tux Paint with the fixed bench recipe (RECIPE);
  then ``speech`` (``speech:whisper-tiny``) added progressively from
  speech<->text pairs of the *train* voices only
  (:func:`anybind.progressive.add_modality`, anchors = text).  Measured on the
  test split of the spoken-captions corpus (:mod:`anybind.corpora.speech`:
  test captions spoken in two voices whose accent and variant never occur in
  train or val): spoken -> written caption and back, and spoken caption ->
  image, a pair never seen in training (emergent).  Beside it, in the same run:
  chance; the training-free closed-form ridge map (the progressive start,
  no InfoNCE); orthogonal Procrustes (training-free, anchor text, plain
  encoders); an ASR-free nearest-neighbour *caption transfer* (each test clip
  takes the caption of its nearest training clip in raw Whisper-feature
  space); the written caption itself (text -> image: what a perfect
  transcript would give); and, with ``asr=1``, a cascade through Whisper
  tiny.en's own decoder (transcript -> text embedding).  Transfer to real
  voices: the English human recordings of Tux Paint (``speech``, short spoken
  names of 65 stamps) against their captions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from .tuxpaint import PLAIN_ENCODERS, RECIPE, chance_metrics, prepare_tuxpaint

SPEECH_SPEC = "speech:whisper-tiny"
#: short column names: s = spoken caption, t = written caption, i = image
COLS = {
    "speech->text": "s>t", "text->speech": "t>s", "speech->image": "s>i", "image->speech": "i>s",
}
KS = (1, 5, 10)


def prepare_speech(work: Path, console=None, train_voices: int = 1) -> Path:
    """Build the spoken-captions corpus under ``work/speech`` (from ``work/tuxpaint``) once; return its manifest."""
    from ..corpora.speech import build_speech

    tux = prepare_tuxpaint(work, console)
    out = Path(work) / ("speech" if train_voices == 1 else f"speech-v{train_voices}")
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        summary = build_speech(out, tux.parent, train_voices=train_voices, install=True, progress=True)
        if console:
            console.print(str(summary), highlight=False)
    return manifest


def _row(name: str, res: dict[str, float], pairs=COLS) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    for d, c in pairs.items():
        for k in KS:
            row[f"{c}@{k}"] = res.get(f"{d}/R@{k}")
    return row


def _transcribe(paths: list[str], batch: int = 4) -> list[str]:
    """Whisper tiny.en transcripts (greedy, no timestamps) of 16 kHz clips, through the same front end (int8)."""
    import ctranslate2
    import tokenizers

    from ..encoders.speech import model_dir, prepare
    from ..data.media import load_audio

    tok = tokenizers.Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    prompt = tok.encode("<|startoftranscript|><|notimestamps|>", add_special_tokens=False).ids
    model = ctranslate2.models.Whisper(str(model_dir()), device="cpu", compute_type="int8", intra_threads=2)
    out = []
    for i in range(0, len(paths), batch):
        mels = np.stack([prepare(load_audio(p, 16000)[0]).mels[0] for p in paths[i : i + batch]])
        res = model.generate(ctranslate2.StorageView.from_array(mels), [prompt] * len(mels), max_length=64, beam_size=1)
        out += [tok.decode(r.sequences_ids[0]).strip() or "(silence)" for r in res]
    return out


@task("speech-retrieval", "Spoken Tux Paint captions on held-out espeak-ng voices: speech<->text and emergent speech->image, "
      "speech bound through text only")
def speech_retrieval(work: Path, cache=None, seed: int = 0, console=None, asr: str = "1", train_voices: str = "1") -> TaskResult:
    from ..cache import FeatureCache
    from ..data.manifest import load_manifest
    from ..encoders.registry import get_encoder
    from ..evaluate import embed_records, retrieval_from_embeddings
    from ..space import Space

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    tux_path = prepare_tuxpaint(work, console)
    sp_path = prepare_speech(work, console, int(train_voices))
    tux = load_manifest(tux_path, modalities=["image", "text", "speech"], progress=True)
    man = load_manifest(sp_path, modalities=["speech", "text", "image"], progress=True)
    test = man.split("test")
    train_recs = man.split("train")
    voices = {s: sorted({r.labels["voice"] for r in man.split(s)}) for s in ("train", "val", "test")}
    assert not set(voices["train"]) & set(voices["test"]), "test voices leaked into train"

    recipe_kw = {k: v for k, v in RECIPE.items() if k != "encoders"}
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    base = Space.fit(tux, modalities=["image", "text"], encoders={m: RECIPE["encoders"][m] for m in ("image", "text")},
                     cache=fc, seed=seed, progress=False, **recipe_kw, recipe="plain")
    times["base image+text"] = time.perf_counter() - t0
    # encode every clip once (the slow part: ~0.5-0.8 s per clip cold), so the timings below are training only
    t0 = time.perf_counter()
    enc = get_encoder(SPEECH_SPEC)
    fc.encode(enc, [r.values["speech"] for r in man.records] + [r.values["speech"] for r in tux.records if r.has("speech")],
              progress=True, description=f"encoding speech ({SPEECH_SPEC})")
    times["encode speech (cold part)"] = time.perf_counter() - t0
    n_encoded = fc.last_stats.encoded if fc.last_stats else 0

    systems: dict[str, Space] = {}
    t0 = time.perf_counter()
    systems["anybind: +speech via text (progressive)"] = base.add_modality(
        "speech", SPEECH_SPEC, man, anchors=["text"], cache=fc, seed=seed)
    times["progressive"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    systems["ridge map only (closed form)"] = base.add_modality(
        "speech", SPEECH_SPEC, man, anchors=["text"], cache=fc, seed=seed, projector="linear", epochs=0)
    times["ridge"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    systems["procrustes (training-free)"] = Space.fit(
        man, modalities=["speech", "text", "image"],
        encoders={"speech": SPEECH_SPEC, "text": PLAIN_ENCODERS["text"], "image": PLAIN_ENCODERS["image"]},
        cache=fc, method="procrustes", anchor="text", progress=False)
    times["procrustes"] = time.perf_counter() - t0

    pairs = [("speech", "text"), ("speech", "image"), ("text", "image")]
    results: dict[str, dict[str, float]] = {}
    for name, sp in systems.items():
        results[name] = retrieval_from_embeddings(embed_records(sp, test, ["speech", "text", "image"], cache=fc), pairs)

    # ASR-free, training-free: each test clip takes the caption of its nearest training clip (raw Whisper features)
    prog = systems["anybind: +speech via text (progressive)"]
    emb_base = embed_records(base, test, ["text", "image"], cache=fc)
    f_train = fc.encode(enc, [r.values["speech"] for r in train_recs], progress=False)
    f_test = fc.encode(enc, [r.values["speech"] for r in test], progress=False)
    mu = f_train.mean(0)

    def unit(x):
        x = x - mu
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nn_idx = (unit(f_test) @ unit(f_train).T).argmax(1)
    nn_caps = [train_recs[j].values["text"] for j in nn_idx]
    e_nn = base.embed("text", nn_caps, cache=fc)
    ids = [r.id for r in test]
    keys = [enc.content_key(r.values["speech"]) for r in test]
    emb_nn = {"speech": (ids, e_nn, keys), **emb_base}
    results["nearest training clip's caption (ASR-free)"] = retrieval_from_embeddings(emb_nn, pairs)
    nn_exact = float(np.mean([_norm(c) == _norm(r.values["text"]) for c, r in zip(nn_caps, test)]))

    asr_note = None
    if str(asr).lower() not in ("0", "false", "no", ""):
        t0 = time.perf_counter()
        hyps = _transcribe([r.values["speech"] for r in test])
        times["asr transcribe test"] = time.perf_counter() - t0
        e_asr = base.embed("text", hyps, cache=fc)
        results["ASR cascade: Whisper tiny.en transcript -> text (reference)"] = retrieval_from_embeddings(
            {"speech": (ids, e_asr, keys), **emb_base}, pairs)
        exact = float(np.mean([_norm(h) == _norm(r.values["text"]) for h, r in zip(hyps, test)]))
        asr_note = (f"ASR cascade: Whisper tiny.en's own decoder (int8, greedy) transcribes the test clips "
                    f"({exact:.2f} exactly right after casefolding/punctuation), MiniLM embeds the transcript; "
                    f"e.g. {test[0].values['text']!r} -> {hyps[0]!r}; a reference, not ASR-free")

    res_main = results["anybind: +speech via text (progressive)"]
    chance = chance_metrics(res_main)

    # transfer to real voices: Tux Paint's English human recordings (short spoken names), all 65 stamps
    human = [r for r in tux.records if r.has("speech")]
    held = [r for r in human if r.split != "train"]
    hres: dict[str, dict[str, float]] = {}
    for label, recs in (("all", human), ("val+test captions", held)):
        e = embed_records(prog, recs, ["speech", "text", "image"], cache=fc)
        hres[label] = retrieval_from_embeddings(e, [("speech", "text"), ("speech", "image")])

    table = [_row(n, r) for n, r in results.items()]
    ref = {"name": "written caption instead (text->image, base space)"}
    ref.update({f"s>i@{k}": res_main[f"text->image/R@{k}"] for k in KS})
    ref.update({f"i>s@{k}": res_main[f"image->text/R@{k}"] for k in KS})
    table.append(ref)
    table.append(_row("chance", chance))
    for label, r in hres.items():
        row = _row(f"human recordings, {label} (n={int(r['speech->text/n'])})", r,
                   {"speech->text": "s>t", "text->speech": "t>s", "speech->image": "s>i", "image->speech": "i>s"})
        table.append(row)

    metrics: dict[str, float] = {}
    for d in COLS:
        for k in (*(f"R@{k}" for k in KS), "MdR", "n"):
            metrics[f"{d}/{k}"] = res_main[f"{d}/{k}"]
    for label, r in hres.items():
        for k, v in r.items():
            metrics[f"human {label}/{k}"] = v
    metrics.update({f"seconds/{k}": round(v, 2) for k, v in times.items()})
    baselines = {n: {k: v for k, v in r.items() if k.split("/")[0] in COLS or k.startswith("text->image")}
                 for n, r in results.items() if not n.startswith("anybind")}
    baselines["chance"] = {k: v for k, v in chance.items() if k.split("/")[0] in COLS}
    lin = prog.info["lineage"][-1]
    notes = [
        "columns: R@K on the test split of the spoken-captions corpus (s = spoken caption, t = written caption, "
        "i = image); every test clip is in a voice never heard in training",
        f"voices: train {', '.join(voices['train'])}; val {', '.join(voices['val'])}; test {', '.join(voices['test'])}",
        f"test: {int(res_main['speech->text/n'])} spoken captions / images ({len({r.values['text'] for r in test})} "
        f"distinct captions; identical captions count as correct answers); training pairs: "
        f"{lin['pairs']['text']['train']} speech<->text (val {lin['pairs']['text']['val']}), "
        f"best epoch {lin['training']['best_epoch']}",
        "speech<->image never met in training: the speech projector learnt only from speech<->text pairs against "
        "the frozen image+text space (images and texts bit-identical to the base space's)",
        f"nearest-training-clip baseline: the neighbour's caption equals the true one for {nn_exact:.2f} of test clips "
        "(test captions never occur in train)",
        "human recordings: Tux Paint's English *_desc.ogg (short spoken names), never trained on; 'all' includes "
        "52 stamps whose captions were training pairs in espeak voices",
        f"speech encoding: {n_encoded} clips encoded cold in this run ({times['encode speech (cold part)']:.0f} s), "
        "the rest from the feature cache",
    ] + ([asr_note] if asr_note else [])
    return TaskResult(
        metrics=metrics,
        baselines=baselines,
        config={"speech_encoder": SPEECH_SPEC, "base": {"encoders": {m: RECIPE["encoders"][m] for m in ("image", "text")},
                                                        **recipe_kw},
                "voices": voices, "train_voices_per_caption": int(train_voices),
                "progressive": {"anchors": ["text"], "best_epoch": lin["training"]["best_epoch"],
                                "ridge_alpha": lin["training"].get("ridge_alpha")},
                "procrustes_dim": systems["procrustes (training-free)"].config.get("dim")},
        table=table,
        notes=notes,
    )


def _norm(s: str) -> str:
    return " ".join("".join(c for c in s.casefold() if c.isalnum() or c.isspace()).split())

"""Bench task of the video modality: Tux Paint stamps as short clips (:mod:`anybind.corpora.tuxpaint_video`).

* ``video-retrieval``: two spaces fitted with the same recipe on the train split of the tuxpaint-video corpus,
  one binding text to the clips (``video:frames(image:efficientnet-lite0+bridge)@fps=2,max=6``: the frames' mean
  of the demo's image encoder), one binding text to the still images of the same stamps
  (``image:efficientnet-lite0+bridge``).  Measured on the test split: video->text and text->video R@1/5/10
  beside image->text and text->image of the same stamps, and chance.  Throughput, on up to ``n_speed`` test
  clips, uncached, measured like ``bench --task encoders``' video kind (:func:`_speed`): the video encoder end to
  end (decode, sample, preprocess, forward, pool) against a bare path on the same clips and batches (a PyAV loop +
  the image model's own preprocessing and forward), ``speed_repeats`` interleaved rounds, the ratio of the best
  times (goal >= 0.9), the paired median and the CPU-time ratio, the features checked equal; then decoding
  alone and the image encoder's forward alone.  On a shared machine only the ratios mean anything: under
  contention a 2-thread torch forward runs many times slower than its share of the CPU (issue 17).

With ``--opt attn=1`` a third space binds text to the clips' frame sequences
(``video:frames(...)@...,pool=attn``): the video projector learns an attention pooling over the frames
(:mod:`anybind.projectors`), scored beside the frames' mean.  It is fitted first, so the frames' mean is computed
from the frame sequences it cached (:attr:`anybind.encoders.video.VideoFramesEncoder.source_encoder`): every
frame is decoded and encoded once.

With ``--opt clips=oneframe`` the clips are those of :mod:`anybind.bench.video_oneframe`: ``max`` still
frames at ``fps``, only one of which shows the captioned stamp (the others: distractor stamps of the same split),
where an attention pool has a frame to find; the image row is the one stamp's still (an upper bound).

Every space is also scored on the val split (the ``val:`` rows).  The attention-pooled space's weights are
summarised per split (:func:`attention_stats`: entropy over a clip's frames / log(frames), 1 = uniform; the mean
weight at each frame place, per motion).

Options (``--opt``): ``limit`` (stamps per split for a quick run; 0 = all), ``fps``, ``max`` (frame sampling),
``n_speed`` (clips timed), ``speed_repeats`` (rounds), ``attn`` (1: add the attention-pooled row), ``clips``
(``motion``: the corpus' clips; ``oneframe``: one frame of ``max`` matters), ``attn_lr`` / ``attn_epochs`` (the
attention scorer's rate and its attention-only epochs, :class:`anybind.train.TrainConfig`; default: its defaults;
``attn_lr=1e-4 attn_epochs=0`` is the training before issue 17's fix).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import DataError
from . import TaskResult, task
from .tuxpaint import RECIPE, chance_metrics, prepare_tuxpaint

KS = (1, 5, 10)


def prepare_tuxpaint_video(work: Path, console=None, limit: int = 0) -> Path:
    """Build the tuxpaint-video corpus under ``work/tuxpaint-video[-lN]`` (from ``work/tuxpaint``) once."""
    from ..corpora.tuxpaint_video import build_tuxpaint_video

    tux = prepare_tuxpaint(work, console)
    out = Path(work) / ("tuxpaint-video" if not limit else f"tuxpaint-video-l{limit}")
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        summary = build_tuxpaint_video(out, tux.parent, limit=limit or None, progress=True)
        if console:
            console.print(str(summary), highlight=False)
    return manifest


def _speed(paths: list[str], fps: float, max_frames: int, work: Path, repeats: int = 3) -> dict[str, float]:
    """The video encoder (``video:frames(image:efficientnet-lite0)``, uncached) against the bare path on the same
    clips, measured as ``bench --task encoders`` measures its video kind (:func:`anybind.bench.tasks_encoders.measure`:
    a PyAV loop + the image model's own preprocessing and forward, the same clips a batch and frames a forward batch,
    ``repeats`` interleaved rounds, best and paired wall times, process CPU times, features checked equal); then
    decoding alone (PyAV) and the image encoder's forward alone on the preprocessed frames, best of ``repeats``."""
    import os

    from ..data.video import read_frames
    from ..encoders.registry import get_encoder
    from .encoder_cases import case_video
    from .tasks_encoders import measure

    spec = f"video:frames(image:efficientnet-lite0)@fps={fps:g},max={max_frames}"
    enc = get_encoder(spec, cached=False)
    load0 = os.getloadavg()[0]
    case = case_video(Path(work) / "video-speed", len(paths), 0, "effnet", fps, max_frames, items=list(paths),
                      batch_size=int(enc.batch_size))
    row = measure(case, repeats)
    image = enc.image
    frames = [read_frames(p, fps, max_frames) for p in paths]
    flat = [image.load(f) for fs in frames for f in fs]
    bs = max(1, int(image.batch_size))
    t_dec, t_fwd = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            read_frames(p, fps, max_frames)
        t_dec.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, len(flat), bs):
            image.encode_loaded(flat[i : i + bs])
        t_fwd.append(time.perf_counter() - t0)
    return {
        "clips": len(paths), "frames": len(flat), "clips a batch": case.batch_size, "repeats": repeats,
        "encoder clips/s": row["anybind/s"], "bare clips/s": row["bare/s"], "ratio": row["ratio"],
        "paired": row["paired"], "cpu ratio": row["cpu ratio"], "max |diff|": row["max |diff|"],
        "equal": float(row["equal"] == "yes"), "decode clips/s": len(paths) / min(t_dec),
        "forward frames/s": len(flat) / min(t_fwd), "load before": load0, "load after": os.getloadavg()[0],
    }


def attention_stats(space: Any, records: list, cache: Any) -> dict[str, float]:
    """How a ``pool=attn`` space's video projector weighs the frames of ``records``' clips: the entropy of its
    weights over a clip's valid frames divided by log(frames) (1: the uniform mean), the mean weight at each frame
    place, the same per motion (``labels.motion``: pan, zoom, fade), and on one-frame clips
    (``labels.signal_frame``) the mean weight on the signal frame and how often it is the most weighted one."""
    import numpy as np
    import torch

    X = np.asarray(cache.encode(space.encoder("video"), [r.values["video"] for r in records], progress=False),
                   np.float32)
    pr = space.projectors["video"]
    with torch.no_grad():
        w = pr.attention(torch.from_numpy(X)).cpu().numpy()
    k = X.reshape(len(X), pr.cfg.frames, -1)[:, :, -1].sum(1)  # the valid frames' flags
    many = k > 1
    h = -(w * np.log(np.clip(w, 1e-12, 1.0))).sum(1)[many] / np.log(k[many])
    out = {"entropy / log frames": float(h.mean()) if len(h) else float("nan"), "frames": float(w.shape[1]),
           **{f"weight at frame {t}": float(w[:, t].mean()) for t in range(w.shape[1])}}
    motion = np.array([str(r.labels.get("motion", "")) for r in records])
    for mo in sorted(set(motion) - {""}):
        sel = motion[many] == mo
        out[f"{mo}: entropy / log frames"] = float(h[sel].mean())
        out.update({f"{mo}: weight at frame {t}": float(w[motion == mo, t].mean()) for t in range(w.shape[1])})
    if all("signal_frame" in r.labels for r in records):
        at = np.array([int(r.labels["signal_frame"]) for r in records])
        out.update({"weight on signal": float(w[np.arange(len(at)), at].mean()),
                    "argmax on signal": float((w.argmax(1) == at).mean())})
    return out


@task("video-retrieval", "Tux Paint clips (tuxpaint-video): video<->text R@k beside image<->text of the same stamps, "
      "and video encoder clips/s against decoding and the bare image forward")
def video_retrieval(work: Path, cache=None, seed: int = 0, console=None, limit: str = "0", fps: str = "2",
                    max: str = "6", n_speed: str = "16", attn: str = "0",  # noqa: A002 - the option's name
                    clips: str = "motion", speed_repeats: str = "3", attn_lr: str = "",
                    attn_epochs: str = "") -> TaskResult:
    from ..cache import FeatureCache
    from ..data.manifest import load_manifest
    from ..evaluate import embed_records
    from ..metrics import retrieval_from_embeddings
    from ..space import Space

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    path = prepare_tuxpaint_video(work, console, int(limit))
    if clips not in ("motion", "oneframe"):
        raise DataError(f"video-retrieval: clips={clips!r}; known: motion, oneframe")
    if clips == "oneframe":  # one frame of `max` shows the captioned stamp, at `fps` (so sampling reads each once)
        from .video_oneframe import build_oneframe_clips

        if float(fps) != int(float(fps)):
            raise DataError(f"video-retrieval: clips=oneframe needs a whole fps, got {fps}")
        path = build_oneframe_clips(path, path.parent.parent / f"{path.parent.name}-oneframe-f{int(max)}"
                                    f"-r{int(float(fps))}-s{seed}", frames=int(max), fps=int(float(fps)), seed=seed)
    man = load_manifest(path, modalities=["text", "image", "video"], progress=True)
    test = man.split("test")
    image_spec = RECIPE["encoders"]["image"]
    video_spec = f"video:frames({image_spec})@fps={float(fps):g},max={int(max)}"
    plain_video = f"video:frames(image:efficientnet-lite0)@fps={float(fps):g},max={int(max)}"
    recipe_kw = {k: v for k, v in RECIPE.items() if k != "encoders"}
    text_spec = RECIPE["encoders"]["text"]

    speed = _speed([r.values["video"] for r in test[: int(n_speed)]], float(fps), int(max), work, int(speed_repeats))
    times: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    val_results: dict[str, dict[str, float]] = {}
    attention: dict[str, dict[str, float]] = {}
    splits = {"test": test, "val": man.split("val")}
    systems = [("video", "video", video_spec), ("image", "image", image_spec)]
    if attn.strip() not in ("", "0"):  # first: the mean is then read from its cached frame sequences (encoded once)
        systems.insert(0, ("video-attn", "video", video_spec + ",pool=attn"))
    attn_kw = {**({"attn_lr": float(attn_lr)} if attn_lr.strip() else {}),
               **({"attn_epochs": int(attn_epochs)} if attn_epochs.strip() else {})}
    phase: dict[str, Any] = {}
    for key, m, spec in systems:
        t0 = time.perf_counter()
        space = Space.fit(man, modalities=["text", m], encoders={"text": text_spec, m: spec}, cache=fc, seed=seed,
                          progress=False, **recipe_kw, **(attn_kw if key == "video-attn" else {}), recipe="plain")
        if key == "video-attn":
            phase = space.info["training"]["robust"].get("attention_phase") or {}
            phase.update(best_epoch_after=space.info["training"]["best_epoch"],
                         wise_alpha=space.info["training"]["robust"].get("wise_alpha"))
        times[f"fit text+{key} (with encoding)"] = time.perf_counter() - t0
        for split, recs in splits.items():
            res = retrieval_from_embeddings(embed_records(space, recs, ["text", m], cache=fc), [(m, "text")])
            res = {k.replace(f"{m}->", f"{key}->").replace(f"->{m}/", f"->{key}/"): v for k, v in res.items()}
            (results if split == "test" else val_results)[key] = res
            if key == "video-attn":
                attention[split] = attention_stats(space, recs, fc)

    def row(name: str, res: dict[str, float], m: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        for k in KS:
            out[f"x>t@{k}"] = res.get(f"{m}->text/R@{k}")
        for k in KS:
            out[f"t>x@{k}"] = res.get(f"text->{m}/R@{k}")
        return out

    table = [row("video: frames' mean (config: video)", results["video"], "video"),
             *([row("video: attention pool learnt with the projector", results["video-attn"], "video-attn")]
               if "video-attn" in results else []),
             row("image: the same stamps' stills", results["image"], "image"),
             row("chance", chance_metrics(results["video"]), "video")]
    if val_results:  # the same spaces on the val split
        table += [row(f"val: {r['name']}", val_results[k], k)
                  for r, k in zip(table, ("video", *(("video-attn",) if "video-attn" in val_results else ()), "image"))]
    metrics: dict[str, float] = {}
    for m, res in results.items():
        for d in (f"{m}->text", f"text->{m}"):
            for k in (*(f"R@{k}" for k in KS), "MdR", "n"):
                if f"{d}/{k}" in res:
                    metrics[f"{d}/{k}"] = res[f"{d}/{k}"]
    for m, res in val_results.items():
        metrics.update({f"val/{k}": v for k, v in res.items() if k.rsplit("/", 1)[-1] in ("R@1", "R@5", "R@10", "n")})
    for split, a in attention.items():
        metrics.update({f"attention/{split}/{k}": v for k, v in a.items()})
    metrics.update({f"attention/phase/{k}": float(v) for k, v in phase.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    metrics.update({f"speed/{k}": round(float(v), 3) for k, v in speed.items()})
    metrics.update({f"seconds/{k}": round(v, 2) for k, v in times.items()})
    notes = [
        *([f"clips=oneframe: {int(max)} frames a clip at {int(float(fps))} fps, one shows the captioned stamp, the "
           "others distractor stamps of the same split; the image row is that stamp's still"]
          if clips == "oneframe" else []),
        *(f"pool=attn on {split}: entropy of the frame weights / log(frames) {a['entropy / log frames']:.3f} (1: "
          f"the uniform mean); mean weight by frame place "
          f"{', '.join(f'{v:.3f}' for k, v in a.items() if k.startswith('weight at frame'))}"
          + "".join(f"; {mo} {a[f'{mo}: entropy / log frames']:.3f} ("
                    + ", ".join(f"{a[f'{mo}: weight at frame {t}']:.3f}" for t in range(int(a['frames']))) + ")"
                    for mo in ("pan", "zoom", "fade") if f"{mo}: entropy / log frames" in a)
          + (f"; weight on the signal frame {a['weight on signal']:.3f} (uniform {1 / a['frames']:.3f}), argmax on "
             f"it for {a['argmax on signal']:.2f} of the clips (chance {1 / a['frames']:.2f})"
             if "weight on signal" in a else "")
          for split, a in attention.items()),
        *([f"pool=attn training: attention phase {phase.get('epochs_run', 0):.0f} epochs at lr "
           f"{phase.get('lr', float('nan')):g} (best epoch {phase.get('best_epoch', 0):.0f}, val "
           f"{phase.get('best_val') or float('nan'):.3f}; after the ridge refit {phase.get('val_after_ridge') or float('nan'):.3f}), "
           f"then fine-tuning best epoch {phase.get('best_epoch_after', 0)}, WiSE-FT alpha {phase.get('wise_alpha')}"]
          if phase.get("epochs_run") else []),
        f"test split: {len(test)} stamps ({int(metrics.get('video->text/n', 0))} clips scored); x = video or image",
        f"speed on {speed['clips']} test clips ({speed['frames']} frames, {plain_video}, {speed['clips a batch']} "
        f"clips a batch; {speed['repeats']} interleaved rounds, load average {speed['load before']:.1f} -> "
        f"{speed['load after']:.1f}): encoder {speed['encoder clips/s']:.2f} clips/s, bare (a PyAV loop + the image "
        f"model's own preprocessing and forward, as bench --task encoders) {speed['bare clips/s']:.2f}; ratio "
        f"{speed['ratio']:.2f} (best times; paired median {speed['paired']:.2f}, CPU time {speed['cpu ratio']:.2f}; "
        f"goal >= 0.9), features {'equal' if speed['equal'] else 'NOT equal'} (max |diff| {speed['max |diff|']:.1e}); "
        f"decoding alone {speed['decode clips/s']:.1f} clips/s, the image encoder's forward alone "
        f"{speed['forward frames/s']:.1f} frames/s",
    ]
    return TaskResult(metrics=metrics, baselines={"chance": chance_metrics(results["video"])},
                      config={"video": video_spec, "image": image_spec, "attn": "video-attn" in results, **attn_kw,
                              "text": text_spec, "limit": int(limit), "clips": clips,
                              "corpus": str(path), **{k: v for k, v in recipe_kw.items()}},
                      notes=notes, table=table)

"""Bench task of the video modality: Tux Paint stamps as short clips (:mod:`anybind.corpora.tuxpaint_video`).

* ``video-retrieval``: two spaces fitted with the same recipe on the train split of the tuxpaint-video corpus,
  one binding text to the clips (``video:frames(image:efficientnet-lite0+bridge)@fps=2,max=6``: the frames' mean
  of the demo's image encoder), one binding text to the still images of the same stamps
  (``image:efficientnet-lite0+bridge``).  Measured on the test split: video->text and text->video R@1/5/10
  beside image->text and text->image of the same stamps, and chance.  Throughput, on up to ``n_speed`` test
  clips, uncached: the video encoder end to end (decode, sample, preprocess, forward, pool) in clips/s,
  against decoding alone and the bare image model forward on the same preprocessed frames (``forward``), and
  the ratio of the encoder to decode + forward (the wrapper's own overhead: goal >= 0.9).

With ``--opt attn=1`` a third space binds text to the clips' frame sequences
(``video:frames(...)@...,pool=attn``): the video projector learns an attention pooling over the frames
(:mod:`anybind.projectors`), scored beside the frames' mean.

With ``--opt clips=oneframe`` the clips are those of :mod:`anybind.bench.video_oneframe`: ``max`` still
frames at ``fps``, only one of which shows the captioned stamp (the others: distractor stamps of the same split),
where an attention pool has a frame to find; the image row is the one stamp's still (an upper bound).

Options (``--opt``): ``limit`` (stamps per split for a quick run; 0 = all), ``fps``, ``max`` (frame sampling),
``n_speed`` (clips timed), ``attn`` (1: add the attention-pooled row), ``clips`` (``motion``: the corpus' clips;
``oneframe``: one frame of ``max`` matters).
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


def _speed(paths: list[str], video_spec: str) -> dict[str, float]:
    """clips/s of the video encoder, of decoding alone and of the bare image forward on the same frames."""
    from ..data.video import read_frames
    from ..encoders.registry import get_encoder

    enc = get_encoder(video_spec, cached=False)
    image = enc.image
    enc.encode(paths[:1])  # the model is built and warm before anything is timed
    t0 = time.perf_counter()
    enc.encode(paths)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = [read_frames(p, enc.fps, enc.max_frames) for p in paths]
    t_dec = time.perf_counter() - t0
    flat = [image.load(f) for fs in frames for f in fs]
    bs = max(1, int(image.batch_size))
    t0 = time.perf_counter()
    for i in range(0, len(flat), bs):
        image.encode_loaded(flat[i : i + bs])
    t_fwd = time.perf_counter() - t0
    n = len(paths)
    return {
        "clips": n, "frames": len(flat),
        "encoder clips/s": n / t_enc, "decode clips/s": n / t_dec, "forward clips/s": n / t_fwd,
        "forward frames/s": len(flat) / t_fwd,
        "encoder / (decode + forward)": (t_dec + t_fwd) / t_enc,
    }


@task("video-retrieval", "Tux Paint clips (tuxpaint-video): video<->text R@k beside image<->text of the same stamps, "
      "and video encoder clips/s against decoding and the bare image forward")
def video_retrieval(work: Path, cache=None, seed: int = 0, console=None, limit: str = "0", fps: str = "2",
                    max: str = "6", n_speed: str = "48", attn: str = "0",  # noqa: A002 - the option's name
                    clips: str = "motion") -> TaskResult:
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

    speed = _speed([r.values["video"] for r in test[: int(n_speed)]], plain_video)
    times: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    systems = [("video", "video", video_spec), ("image", "image", image_spec)]
    if attn.strip() not in ("", "0"):
        systems.append(("video-attn", "video", video_spec + ",pool=attn"))
    for key, m, spec in systems:
        t0 = time.perf_counter()
        space = Space.fit(man, modalities=["text", m], encoders={"text": text_spec, m: spec}, cache=fc, seed=seed,
                          progress=False, **recipe_kw, recipe="plain")
        times[f"fit text+{key} (with encoding)"] = time.perf_counter() - t0
        res = retrieval_from_embeddings(embed_records(space, test, ["text", m], cache=fc), [(m, "text")])
        results[key] = {k.replace(f"{m}->", f"{key}->").replace(f"->{m}/", f"->{key}/"): v for k, v in res.items()}

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
    metrics: dict[str, float] = {}
    for m, res in results.items():
        for d in (f"{m}->text", f"text->{m}"):
            for k in (*(f"R@{k}" for k in KS), "MdR", "n"):
                if f"{d}/{k}" in res:
                    metrics[f"{d}/{k}"] = res[f"{d}/{k}"]
    metrics.update({f"speed/{k}": round(float(v), 3) for k, v in speed.items()})
    metrics.update({f"seconds/{k}": round(v, 2) for k, v in times.items()})
    notes = [
        *([f"clips=oneframe: {int(max)} frames a clip at {int(float(fps))} fps, one shows the captioned stamp, the "
           "others distractor stamps of the same split; the image row is that stamp's still"]
          if clips == "oneframe" else []),
        f"test split: {len(test)} stamps ({int(metrics.get('video->text/n', 0))} clips scored); x = video or image",
        f"speed on {speed['clips']} test clips ({speed['frames']} frames, {plain_video}): encoder "
        f"{speed['encoder clips/s']:.2f} clips/s, decoding alone {speed['decode clips/s']:.2f}, bare image forward "
        f"{speed['forward frames/s']:.1f} frames/s; encoder / (decode + forward) = "
        f"{speed['encoder / (decode + forward)']:.2f}",
    ]
    return TaskResult(metrics=metrics, baselines={"chance": chance_metrics(results["video"])},
                      config={"video": video_spec, "image": image_spec, "attn": "video-attn" in results,
                              "text": text_spec, "limit": int(limit), "clips": clips,
                              "corpus": str(path), **{k: v for k, v in recipe_kw.items()}},
                      notes=notes, table=table)

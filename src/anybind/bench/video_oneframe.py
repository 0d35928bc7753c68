"""A clip set where only one frame matters, for the ``video-retrieval`` bench task (``--opt clips=oneframe``).

Issue 17 asks when the attention pool (``video:frames(...)@...,pool=attn``) beats the frames' mean.  In the
tuxpaint-video clips every frame shows the clip's stamp, so there is nothing to find.  Here each record of a
built tuxpaint-video corpus becomes a clip of ``frames`` still frames at ``fps`` frames per second: one frame
(its place drawn per record) shows the record's stamp, the others show *distractor* stamps -- other records of
the same split, drawn with a seeded generator.  The caption names the one stamp; the frames' mean blends it
with the distractors, an attention pool can learn to find it.

Frames are the stamp fitted into a ``size`` x ``size`` white square (the last frame of the ``fade`` motion of
:func:`anybind.corpora.tuxpaint_video.render_frames`), encoded like the corpus' clips
(:func:`~anybind.corpora.tuxpaint_video.write_clip`).  Records keep the corpus' ``id``, ``split``, ``text``
and ``image`` (the still of the one stamp); ``labels`` keep ``category``, lose ``motion`` (the frames are
stills) and gain ``signal_frame`` (where the stamp is).  The set
is built once per (corpus, frames, fps, size, seed) into its own folder (atomically) and reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError


def build_oneframe_clips(corpus_manifest: str | Path, out: str | Path, *, frames: int = 6, fps: int = 2,
                         size: int = 128, seed: int = 0) -> Path:
    """Write the one-frame-matters clips of a tuxpaint-video corpus into ``out``; returns its ``manifest.jsonl``
    (an existing set is reused when it was built from the same corpus with the same settings, else refused)."""
    from ..corpora.tuxpaint_video import render_frames, write_clip
    from ..data.media import load_image
    from ..io import atomic_write_dir

    out = Path(out)
    src = Path(corpus_manifest)
    want = {"source": str(src.resolve()), "frames": frames, "fps": fps, "size": size, "seed": seed}
    if (out / "manifest.jsonl").is_file():
        try:
            have = json.loads((out / "oneframe.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = {}
        differ = sorted(k for k in want if have.get(k) != want[k])
        if differ:
            raise DataError(f"{out}: a one-frame clip set built with other settings ({', '.join(f'{k}={have.get(k)!r}' for k in differ)}; "
                            f"asked {', '.join(f'{k}={want[k]!r}' for k in differ)}): remove it or give another folder")
        return out / "manifest.jsonl"
    if frames < 2 or not 1 <= fps <= 60:
        raise DataError(f"one-frame clips need frames >= 2 and fps in 1..60, got frames={frames}, fps={fps}")
    recs = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_split: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        by_split.setdefault(r["split"], []).append(i)
    for split, idx in by_split.items():
        if len(idx) < 2:
            raise DataError(f"{src}: split {split!r} has {len(idx)} record; one-frame clips draw their "
                            "distractors from the other records of the split")
    stills: dict[int, np.ndarray] = {}

    def still(i: int) -> np.ndarray:
        if i not in stills:
            img = load_image(src.parent / recs[i]["image"], size=2 * size)
            stills[i] = render_frames(img, "fade", size, 2)[-1]  # the full picture on white
        return stills[i]

    rng = np.random.default_rng(seed)

    def write(tmp: Path) -> None:
        lines = []
        for i, r in enumerate(recs):
            others = [j for j in by_split[r["split"]] if j != i]
            at = int(rng.integers(frames))
            picks = [int(j) for j in rng.choice(others, size=frames - 1, replace=len(others) < frames - 1)]
            order = picks[:at] + [i] + picks[at:]
            rel = Path("clips", r["id"] + ".mp4")
            write_clip([still(j) for j in order], tmp / rel, fps)
            lines.append(json.dumps({
                "id": r["id"], "split": r["split"], "text": r["text"], "video": rel.as_posix(),
                "image": str((src.parent / r["image"]).resolve()),
                "labels": {**{k: v for k, v in r.get("labels", {}).items() if k != "motion"}, "signal_frame": at},
            }) + "\n")
        (tmp / "oneframe.json").write_text(json.dumps({
            **want, "distractors": "other records of the same split, seeded"}, indent=1))
        (tmp / "manifest.jsonl").write_text("".join(lines), encoding="utf-8")

    atomic_write_dir(out, write)
    return out / "manifest.jsonl"

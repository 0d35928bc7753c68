"""Tux Paint stamps as short captioned video clips: the stamp pans, zooms or fades in, with its English caption.

Source: the Tux Paint corpus (:mod:`anybind.corpora.tuxpaint`, Debian ``tuxpaint-stamps-default``, GPL-2): its
English captions, images and splits.  Pass a built corpus (``tux=``, a folder or its ``manifest.jsonl``);
without one, a Tux Paint corpus is built from the stamps (``copy_media=False``) in a temporary folder.

Rules
-----

**Records.**  One per Tux Paint record with an English caption and an image; ``limit`` keeps the first N of each
split (in the Tux Paint manifest's order).  Fields: ``id`` = the Tux Paint id; ``split`` = its split (its test
stamps are test here too); ``text`` = the caption; ``video`` = ``media/video/<id>.mp4``; ``image`` = a copy of
the stamp (``media/images/<id><ext>``; ``copy_images=False``: a path into the Tux Paint corpus or the stamps),
so video->text and image->text can be measured on the same stamps; ``labels`` = ``{"category", "motion"}``;
``meta`` = ``{"seconds", "frames"}``.

**Clips.**  The stamp is decoded with :func:`anybind.data.media.load_image` (transparency on white, SVG
rasterised), fitted into a ``size`` x ``size`` white square, and animated over ``seconds`` at ``fps``:

* ``pan``: at 60 % of the side, sliding from the left edge to the right edge, vertically centred;
* ``zoom``: centred, growing from 30 % to 100 % of the side;
* ``fade``: full size, from white to the full picture over the first two thirds, then held.

Which motion a stamp gets is a function of its id (``sha256(id) mod 3``), so the three motions spread over
every category and split.  Frames are resized with Pillow (bicubic) and encoded as H.264 (``libx264``, yuv420p,
CRF 23, one thread) in MP4 with PyAV (``pip install 'anybind[video]'``).  A stamp whose image fails to decode
or whose clip fails to encode is skipped and counted (``bad_image`` / ``encode_failed``, with the message in
``corpus.json`` under ``errors``).

**Size.**  With the defaults (128 px, 8 fps, 3 s): 949 records, ~20 kB a clip.

The build goes to a temporary folder that replaces ``out_dir`` at the end (:mod:`._build`).  The same inputs
and the same FFmpeg/x264 (the ``av`` wheel) give byte-identical clips, ``manifest.jsonl`` and ``corpus.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import load_image
from ..data.video import import_av
from ..errors import DataError
from ._build import (
    CorpusSummary,
    build_atomically,
    finish_corpus,
    read_source_manifest,
    stable_message,
    write_license,
)
from .debian import debian_copyright_path, debian_package_version

__all__ = ["MOTIONS", "build_tuxpaint_video", "motion_for", "render_frames", "write_clip"]

NAME = "tuxpaint-video"
BUILDER_VERSION = "1"
TUX_PACKAGE = "tuxpaint-stamps-default"
DEFAULT_STAMPS_DIR = "/usr/share/tuxpaint/stamps"
MOTIONS = ("pan", "zoom", "fade")


def motion_for(record_id: str) -> str:
    """The motion of a stamp's clip: a function of its id."""
    return MOTIONS[int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:4], "big") % len(MOTIONS)]


def _fit(img: Any, side: int) -> Any:
    """The picture scaled to fit a ``side`` x ``side`` square (aspect kept), at least 1 pixel each way."""
    from PIL import Image

    s = side / max(img.width, img.height)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.BICUBIC)


def render_frames(img: Any, motion: str, size: int, n: int) -> list[np.ndarray]:
    """``n`` RGB uint8 frames of ``size`` x ``size``: the RGB picture ``img`` moving as ``motion`` says."""
    from PIL import Image

    if motion not in MOTIONS:
        raise DataError(f"unknown motion {motion!r} (known: {', '.join(MOTIONS)})")
    frames = []
    full = _fit(img, size)
    small = _fit(img, max(1, round(size * 0.6)))
    for i in range(n):
        u = i / max(1, n - 1)  # 0 .. 1 over the clip
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        if motion == "pan":
            x = round(u * (size - small.width))
            canvas.paste(small, (x, (size - small.height) // 2))
        elif motion == "zoom":
            pic = _fit(img, max(1, round(size * (0.3 + 0.7 * u))))
            canvas.paste(pic, ((size - pic.width) // 2, (size - pic.height) // 2))
        else:
            canvas.paste(full, ((size - full.width) // 2, (size - full.height) // 2))
            alpha = min(1.0, u * 1.5)
            canvas = Image.blend(Image.new("RGB", canvas.size, (255, 255, 255)), canvas, alpha)
        frames.append(np.asarray(canvas, dtype=np.uint8))
    return frames


def write_clip(frames: list[np.ndarray], dest: Path, fps: int) -> None:
    """Encode RGB frames as an H.264 MP4 (one encoder thread: the same bytes on every machine)."""
    av = import_av("writing the tuxpaint-video clips")
    h, w = frames[0].shape[:2]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dest), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "medium"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 1
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def build_tuxpaint_video(
    out_dir: str | os.PathLike[str],
    tux: str | os.PathLike[str] | None = None,
    *,
    stamps_dir: str | os.PathLike[str] = DEFAULT_STAMPS_DIR,
    limit: int | None = None,
    seconds: float = 3.0,
    fps: int = 8,
    size: int = 128,
    copy_images: bool = True,
    install: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Build the Tux Paint video corpus into ``out_dir`` (see the module docstring).

    ``tux``: a built Tux Paint corpus (folder or manifest); ``None`` builds one from ``stamps_dir`` in a
    temporary folder.  ``limit``: only the first N Tux Paint records of each split (a quick subset).
    ``seconds``, ``fps``, ``size``: each clip's length, frame rate and side in pixels (even, 16..1024).
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    if not 16 <= size <= 1024 or size % 2:
        raise DataError(f"size must be an even number of pixels in 16..1024, got {size}")
    if not 1 <= fps <= 60 or not 0 < seconds <= 60:
        raise DataError(f"fps must be in 1..60 and seconds in (0, 60], got fps={fps}, seconds={seconds}")
    import_av("anybind corpus tuxpaint-video")
    from .tuxpaint import tux_manifest as tux_corpus

    with tux_corpus(tux, stamps_dir, install, progress) as (tux_manifest, tux_source):
        opts = {"seconds": seconds, "fps": fps, "size": size, "frames": max(1, round(seconds * fps))}

        def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
            return _build_into(tmp, out, tux_manifest, tux_source, limit, opts, copy_images, prog)

        return build_atomically(NAME, out_dir, fill, progress)


def _build_into(tmp: Path, out_dir: Path, tux_manifest: Path, tux_source: str, limit: int | None,
                opts: dict[str, Any], copy_images: bool, prog: Any) -> CorpusSummary:
    man, skipped, problems = read_source_manifest(tux_manifest, ["text", "image"])
    per_split: Counter[str] = Counter()
    plan = []
    for r in man.records:
        if limit is not None and per_split[r.split] >= limit:
            continue
        per_split[r.split] += 1
        if "text" not in r.values:
            skipped.setdefault("no_caption", []).append(r.id)
        elif "image" not in r.values:
            skipped.setdefault("no_image", []).append(r.id)
        else:
            plan.append(r)
    task = prog.add_task("rendering tuxpaint clips", total=len(plan)) if prog is not None else None
    records: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    motions: Counter[str] = Counter()
    for r in plan:
        if prog is not None:
            prog.advance(task)
        src = Path(r.values["image"])
        motion = motion_for(r.id)
        try:
            img = load_image(src, size=2 * opts["size"])
        except DataError as e:
            skipped.setdefault("bad_image", []).append(r.id)
            errors[r.id] = stable_message(str(e), tmp, tux_manifest.parent)
            continue
        video_rel = Path("media", "video", r.id + ".mp4").as_posix()
        try:
            write_clip(render_frames(img, motion, opts["size"], opts["frames"]), tmp / video_rel, opts["fps"])
        except Exception as e:  # noqa: BLE001 - whatever FFmpeg reports: the stamp is skipped and counted
            skipped.setdefault("encode_failed", []).append(r.id)
            errors[r.id] = stable_message(f"{type(e).__name__}: {e}", tmp)
            (tmp / video_rel).unlink(missing_ok=True)
            continue
        if copy_images:
            img_rel = Path("media", "images", r.id + src.suffix.lower()).as_posix()
            (tmp / img_rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / img_rel)
        else:
            img_rel = Path(os.path.relpath(src.resolve(), out_dir)).as_posix()
        motions[motion] += 1
        records.append({
            "id": r.id,
            "split": r.split,
            "text": r.values["text"],
            "video": video_rel,
            "image": img_rel,
            "labels": {"category": str(r.labels.get("category", "")), "motion": motion},
            "meta": {"seconds": round(opts["frames"] / opts["fps"], 3), "frames": opts["frames"]},
        })
    tux_meta: Any = {}
    try:
        tux_meta = json.loads((tux_manifest.parent / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    av = import_av()
    meta = {
        "description": "Tux Paint stamps panning, zooming or fading in as short H.264 clips, with their "
        "English captions and the still image: video <-> text <-> image.",
        "source": {
            "tuxpaint": {
                "corpus": tux_source,
                "manifest_sha256": tux_meta.get("manifest_sha256", "unknown") if isinstance(tux_meta, dict) else "unknown",
                "package": TUX_PACKAGE,
                "version": debian_package_version(TUX_PACKAGE) if Path(DEFAULT_STAMPS_DIR).exists() else "unknown",
                "license": "GPL-2 (captions and images)",
            },
            "encoder": {"av": av.__version__, "codec": "libx264 crf 23, yuv420p, 1 thread, mp4"},
        },
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "clips": {**opts, "motions": dict(sorted(motions.items()))},
        "limit_per_split": limit,
        "images": "copied into media/images/" if copy_images else "paths into the Tux Paint corpus / stamps",
        "split": "the Tux Paint record's split (hash of the casefolded caption)",
        "errors": dict(sorted(errors.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(
        tmp,
        {TUX_PACKAGE: debian_copyright_path(TUX_PACKAGE)},
        fallback="Captions and images: Tux Paint stamps, GPL-2 (Debian tuxpaint-stamps-default). The clips "
        "are animations of those images.",
        source_md=(
            "# Tux Paint video clips\n\n"
            f"* Captions and images: the Tux Paint corpus ({tux_source}); Debian `{TUX_PACKAGE}`, GPL-2. "
            "The clips animate the GPL-2 images (a derived work, GPL-2 too).\n"
            f"* Encoded with PyAV {av.__version__} (FFmpeg, libx264).\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
    )
    return summary

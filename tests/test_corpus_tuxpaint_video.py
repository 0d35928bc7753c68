"""`anybind corpus tuxpaint-video`: Tux Paint stamps rendered as short captioned clips (pan, zoom, fade)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora.tuxpaint_source import split_key
from anybind.corpora.tuxpaint_video import MOTIONS, build_tuxpaint_video, motion_for, render_frames
from anybind.data.manifest import hash_split, load_manifest
from anybind.data.media import load_image
from anybind.data.video import read_frames
from anybind.encoders.registry import get_encoder
from anybind.errors import DataError

pytest.importorskip("av")
STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not STAMPS.is_dir():
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    out = tmp_path_factory.mktemp("tv") / "tv"
    build_tuxpaint_video(out, limit=2, progress=False)  # builds the Tux Paint corpus in a temporary folder
    return out


def test_a_limited_build_has_clips_captions_images_and_the_tux_splits(built):
    recs = [json.loads(line) for line in (built / "manifest.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and sorted(r["split"] for r in recs) == ["test"] * 2 + ["train"] * 2 + ["val"] * 2
    for r in recs:
        assert r["split"] == hash_split(split_key(r["text"]))  # the Tux Paint record's split
        assert r["labels"]["motion"] == motion_for(r["id"]) and r["meta"] == {"seconds": 3.0, "frames": 24}
        frames = read_frames(built / r["video"], 100, 100)
        assert len(frames) == 24 and frames[0].shape == (128, 128, 3)
        assert load_image(built / r["image"]).size[0] > 0
    meta = json.loads((built / "corpus.json").read_text())
    assert meta["name"] == "tuxpaint-video" and meta["counts"]["records"] == 6 and meta["limit_per_split"] == 2
    assert sum(meta["clips"]["motions"].values()) == 6
    assert (built / "LICENSE").read_text().strip() and "GPL-2" in (built / "SOURCE.md").read_text()
    m = load_manifest(built / "manifest.jsonl", check_cache=False)  # every video field decodes
    assert not m.bad and len(m.records) == 6


def test_the_build_is_deterministic_and_atomic(built, tmp_path):
    again = tmp_path / "again"
    build_tuxpaint_video(again, limit=2, progress=False)
    for name in ("manifest.jsonl", "corpus.json"):
        assert (again / name).read_bytes() == (built / name).read_bytes()
    clips = sorted(p.relative_to(built) for p in (built / "media" / "video").rglob("*.mp4"))
    assert len(clips) == 6 and all((again / c).read_bytes() == (built / c).read_bytes() for c in clips)
    build_tuxpaint_video(again, tux=built, limit=1, progress=False)  # a previous build is replaced (its own text + image
    # fields serve as the Tux Paint corpus here)
    assert len((again / "manifest.jsonl").read_text().splitlines()) == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a previous build of the tuxpaint-video corpus"):
        build_tuxpaint_video(foreign, tux=built, limit=1, progress=False)
    assert (foreign / "keep.txt").read_text() == "mine" and not list(tmp_path.glob(".foreign.building-*"))


def _box(frame: np.ndarray) -> tuple[int, int, int]:
    """Left edge, right edge and width of the non-white pixels."""
    cols = np.where((frame < 245).any(axis=(0, 2)))[0]
    return int(cols.min()), int(cols.max()), int(cols.max() - cols.min())


def test_motions_pan_right_zoom_in_and_fade_from_white():
    img = load_image(STAMPS / "animals" / "birds" / "drake.png")
    pan, zoom, fade = (render_frames(img, m, 96, 9) for m in MOTIONS)
    lefts = [_box(f)[0] for f in pan]
    assert lefts[0] == 0 and all(b > a for a, b in zip(lefts, lefts[1:])) and _box(pan[-1])[1] == 95
    widths = [_box(f)[2] for f in zoom]
    assert all(b > a for a, b in zip(widths, widths[1:]))
    ink = [255 - f.mean() for f in fade]
    assert ink[0] == 0 and all(b > a for a, b in zip(ink[:6], ink[1:6])) and ink[-1] == ink[-2]
    assert {motion_for(f"stamp{i}") for i in range(30)} == set(MOTIONS)
    with pytest.raises(DataError, match="unknown motion 'spin'"):
        render_frames(img, "spin", 96, 3)


def test_cli_builds_from_a_tux_corpus_and_counts_a_bad_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        {"id": "a/drake", "split": "train", "text": "A drake.", "image": str(STAMPS / "animals/birds/drake.png")},
        {"id": "a/broken", "split": "test", "text": "A broken stamp.", "image": "broken.png"},
        {"id": "a/nopic", "split": "val", "text": "No picture."},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["corpus", "tuxpaint-video", "--out", str(out), "--tux", str(tmp_path),
                                   "--seconds", "1", "--fps", "4", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "tuxpaint-video: 1 records" in res.output and "bad_image 1" in res.output and "no_image 1" in res.output
    meta = json.loads((out / "corpus.json").read_text())
    assert "a/broken" in meta["errors"] and "corrupt or unsupported image" in meta["errors"]["a/broken"]
    rec = json.loads((out / "manifest.jsonl").read_text())
    assert len(read_frames(out / rec["video"], 100, 100)) == 4
    res = CliRunner().invoke(app, ["corpus", "tuxpaint-video", "--out", str(tmp_path / "o2"), "--tux", str(tmp_path),
                                   "--size", "33"])
    assert res.exit_code != 0 and "size must be an even number" in res.output


def test_the_video_encoder_reads_the_corpus(built):
    enc = get_encoder("video:frames(callable:video_helpers:rgb_stats)@fps=2,max=4", cached=False)
    recs = [json.loads(line) for line in (built / "manifest.jsonl").read_text().splitlines()]
    X = enc.encode([built / r["video"] for r in recs])
    assert X.shape == (6, 6) and np.isfinite(X).all() and len({tuple(np.round(x, 4)) for x in X}) == 6


def test_one_frame_clips_show_the_captioned_stamp_in_one_frame_only(built, tmp_path):
    """The video-retrieval bench's clips=oneframe set: one frame of each clip is the record's stamp, the others
    are stamps of other records of the same split."""
    from anybind.bench.video_oneframe import build_oneframe_clips
    from anybind.corpora.tuxpaint_video import render_frames

    man = build_oneframe_clips(built / "manifest.jsonl", tmp_path / "one", frames=4, fps=2, seed=3)
    recs = [json.loads(line) for line in man.read_text().splitlines()]
    src = {r["id"]: r for r in (json.loads(x) for x in (built / "manifest.jsonl").read_text().splitlines())}
    assert [r["id"] for r in recs] == list(src) and {r["labels"]["signal_frame"] for r in recs} <= set(range(4))
    stills = {i: render_frames(load_image(built / r["image"], size=256), "fade", 128, 2)[-1].astype(float)
              for i, r in src.items()}
    for r in recs:
        assert r["text"] == src[r["id"]]["text"] and r["split"] == src[r["id"]]["split"]
        assert "motion" not in r["labels"] and r["labels"]["category"] == src[r["id"]]["labels"]["category"]
        frames = read_frames(man.parent / r["video"], 2, 100)
        assert len(frames) == 4
        for t, f in enumerate(frames):  # each frame is nearest to one still: the record's own at signal_frame only
            nearest = min(stills, key=lambda i: np.abs(stills[i] - f).mean())
            if t == r["labels"]["signal_frame"]:
                assert nearest == r["id"]
            else:
                assert nearest != r["id"] and src[nearest]["split"] == r["split"]
    again = build_oneframe_clips(built / "manifest.jsonl", tmp_path / "again", frames=4, fps=2, seed=3)
    assert again.read_bytes() == man.read_bytes()
    assert all((again.parent / r["video"]).read_bytes() == (man.parent / r["video"]).read_bytes() for r in recs)
    assert build_oneframe_clips(built / "manifest.jsonl", tmp_path / "one", frames=4, fps=2, seed=3) == man  # reused
    with pytest.raises(DataError, match=r"one: a one-frame clip set built with other settings \(frames=4, seed=3; "
                                        r"asked frames=9, seed=0\)"):
        build_oneframe_clips(built / "manifest.jsonl", tmp_path / "one", frames=9)
    single = tmp_path / "single.jsonl"
    single.write_text((built / "manifest.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=f"split '{recs[0]['split']}' has 1 record; one-frame clips draw their"):
        build_oneframe_clips(single, tmp_path / "s")

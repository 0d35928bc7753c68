"""Video encoders: video:frames(<image spec>)@fps=..,max=.. over clips written with PyAV (H.264, VP9, MPEG-4)."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybind.data.limits import MediaLimits, using_limits
from anybind.data.manifest import load_manifest
from anybind.data.video import looks_like_video, poster_frame, read_frames
from anybind.encoders.registry import get_encoder
from anybind.errors import DataError, EncoderError, LimitRefused, Reason, unusable_file
from video_helpers import make_audio_only, make_clip, make_zero_frame_clip, rgb_stats

pytest.importorskip("av")

STATS = "callable:video_helpers:rgb_stats"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {s: make_clip(d / f"clip.{s}") for s in ("mp4", "webm", "avi")}


def frame_index(frame: np.ndarray) -> int:
    """Which frame of a test clip this is (its red level is 10 * i + 20, give or take the codec's loss)."""
    return round((float(frame[..., 0].mean()) - 20) / 10)


@pytest.mark.parametrize("suffix", ["mp4", "webm", "avi"])
def test_features_are_the_mean_of_the_image_encoder_on_the_sampled_frames(clips, suffix):
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
    frames = read_frames(clips[suffix], 2, 3)
    assert [frame_index(f) for f in frames] == [0, 5, 10]  # 20 frames at 10 fps, sampled at 0, 0.5, 1.0 s
    X = enc.encode([clips[suffix], clips[suffix]])
    assert X.shape == (2, 6) and X.dtype == np.float32
    np.testing.assert_allclose(X[0], rgb_stats(frames).mean(0), atol=1e-5)
    np.testing.assert_allclose(X[1], X[0], atol=0)
    # the same clip as bytes (an upload) and as frames already decoded give the same features
    np.testing.assert_allclose(enc.encode([clips[suffix].read_bytes()]), X[:1], atol=1e-6)
    np.testing.assert_allclose(enc.encode([np.stack(frames)]), X[:1], atol=1e-6)


def test_a_real_image_encoder_on_frames_matches_its_own_forward(clips):
    enc = get_encoder("video:frames(image:efficientnet-lite0)@fps=4,max=5", cached=False)
    image = get_encoder("image:efficientnet-lite0")
    frames = read_frames(clips["mp4"], 4, 5)
    assert len(frames) == 5 and enc.dim == image.dim == 1280 and enc.runs_torch
    np.testing.assert_allclose(enc.encode([clips["mp4"]])[0], image.encode(frames).mean(0), atol=1e-5)
    assert image.identity in enc.identity


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tenths=st.integers(3, 120), max_frames=st.integers(1, 25))
def test_sampling_takes_the_first_frame_at_or_after_each_time_up_to_max(clips, tenths, max_frames):
    fps = tenths / 10
    clip = get_encoder(f"video:frames({STATS})@fps={fps},max={max_frames}", cached=False).load(clips["avi"])
    times = clip.times
    want = set()  # frame k is shown at k / 10 s; sample j wants the first frame at or after j / fps
    for j in range(10_000):
        k = math.ceil(round(j / fps * 10, 6))
        if k > 19:
            break
        want.add(k)
    assert len(times) == min(max_frames, len(want))
    assert [round(t * 10) for t in times] == sorted(want)[:max_frames]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_identity_holds_the_image_encoder_and_the_sampling(clips):
    ident = lambda spec: get_encoder(spec, cached=False).identity  # noqa: E731
    base = ident(f"video:frames({STATS})")
    assert base == ident(f"video:frames({STATS})@fps=1.0,max=32")  # the defaults, spelled out
    others = [ident(f"video:frames({STATS})@fps=2"), ident(f"video:frames({STATS})@max=8"),
              ident("video:frames(callable:helper_encoders:array_stats)")]
    assert len({base, *others}) == 4
    assert get_encoder(STATS).identity in base
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
    again = pickle.loads(pickle.dumps(enc))  # what a worker process receives
    assert again.identity == enc.identity
    np.testing.assert_allclose(again.encode([clips["webm"]]), enc.encode([clips["webm"]]), atol=0)


@pytest.mark.parametrize("spec, match", [
    ("video:frames(image:efficientnet-lite0", "unbalanced parentheses"),
    ("video:frames()", "no image encoder inside"),
    ("video:frames(image:efficientnet-lite0)@fps=0", "bad option 'fps=0'"),
    ("video:frames(image:efficientnet-lite0)@max=5000", "bad option 'max=5000'"),
    ("video:frames(image:efficientnet-lite0)@speed=2", "unknown option 'speed'"),
    ("video:frames(image:efficientnet-lite0)fps=2", "unexpected 'fps=2'"),
    ("video:frames(video:frames(image:efficientnet-lite0))", "must be an image encoder"),
    ("video:clip", "unknown video encoder 'clip'"),
    ("video:frames(image:nope)", "unknown image encoder 'nope'"),
])
def test_bad_specs_are_one_line_encoder_errors(spec, match):
    with pytest.raises(EncoderError, match=match) as e:
        get_encoder(spec, cached=False)
    assert "\n" not in str(e.value)


def _bad_files(d, clips):
    good = clips["mp4"].read_bytes()
    avi = clips["avi"].read_bytes()
    files = {
        "corrupt": (d / "corrupt.mp4", b"\x00" * 64 + b"not a video at all" * 20, "corrupt or unsupported video"),
        "truncated": (d / "truncated.mp4", good[: len(good) // 2], "corrupt or unsupported video"),
        "codec": (d / "codec.avi", avi.replace(b"FMP4", b"ZZZ9"), "unsupported video codec"),
        "empty": (d / "empty.mp4", b"", "corrupt or unsupported video"),
    }
    for p, data, _ in files.values():
        p.write_bytes(data)
    files["zero"] = (make_zero_frame_clip(d / "zero.avi"), None, "video has no frames")
    files["audio"] = (make_audio_only(d / "audio.mp4"), None, "no video stream")
    files["missing"] = (d / "missing.mp4", None, "file does not exist")
    files["folder"] = (d, None, "is a directory")
    return {k: (p, why) for k, (p, _, why) in files.items()}


def test_bad_videos_are_one_line_data_errors_naming_the_file(tmp_path, clips):
    enc = get_encoder(f"video:frames({STATS})", cached=False)
    for kind, (path, why) in _bad_files(tmp_path, clips).items():
        with pytest.raises(DataError, match=why) as e:
            enc.encode([path])
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg and "Traceback" not in msg, (kind, msg)


def test_limits_refuse_large_long_or_endless_videos_before_or_while_decoding(clips):
    """A video over a limit is refused by that limit (errors.LimitRefused), not a corrupt file: one line naming the
    file, the limit and how to raise it (they were plain DataErrors, reported as "corrupt file for video")."""
    enc = get_encoder(f"video:frames({STATS})@fps=100,max=100", cached=False)
    before = "refused before decoding"
    cases = [(MediaLimits(max_video_pixels=64 * 47), "video frames of 64x48 pixels", "max_video_pixels", before),
             (MediaLimits(max_video_seconds=1.5), "a video of 2.0 s; at most 1.5 s", "max_video_seconds", before),
             (MediaLimits(max_video_frames=7), "more than 7 frames decoded", "max_video_frames",
              "stopped while decoding")]
    for lim, why, limit, when in cases:
        with using_limits(lim), pytest.raises(LimitRefused, match=why) as e:
            enc.load(clips["avi"])
        msg = str(e.value)
        assert msg.startswith(f"{clips['avi']}: {why}") and "\n" not in msg, msg
        assert f"(the limit, {limit}); not decoded: {when} (to decode it, raise {limit}: " in msg, msg
        assert f"MediaLimits({limit}=...)" in msg and unusable_file("video", e.value).startswith(
            "decode refused by a limit for video: ")
    with using_limits(MediaLimits(max_video_frames=20)):  # exactly enough
        assert len(enc.load(clips["avi"]).frames) == 20


def test_a_video_over_a_limit_is_refused_not_corrupt_by_every_caller(tmp_path, clips):
    """The manifest check (its own reason and count), the feature cache and the audit (score 0.5: it may be fine)
    say "decode refused by a limit", never "corrupt", for a real clip over max_video_seconds; a corrupt one stays
    corrupt."""
    import json
    import shutil

    from anybind.audit_leak import NOT_READ_SCORE, unreadable_finding
    from anybind.cache import FeatureCache

    shutil.copy(clips["mp4"], tmp_path / "long.mp4")  # 2.0 s
    make_clip(tmp_path / "short.mp4", n=5)  # 0.5 s
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64 + b"not a video at all" * 20)
    rows = [{"id": i, "text": i, "video": f"{i}.mp4"} for i in ("short", "long", "bad")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with using_limits(MediaLimits(max_video_seconds=1.5)):
        m = load_manifest(tmp_path / "m.jsonl", check_cache=False)
        assert [r.id for r in m.records] == ["short"]
        reasons = {b.id: b.reason for b in m.bad}
        assert reasons["long"].startswith(f"decode refused by a limit for video: {tmp_path / 'long.mp4'}: a video of "
                                          "2.0 s; at most 1.5 s are decoded (the limit, max_video_seconds)")
        assert "corrupt" not in reasons["long"] and reasons["bad"].startswith("corrupt file for video: ")
        assert "by reason: decode refused by a limit for video x1" in m.report()
        bad: dict[int, str] = {}
        enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
        FeatureCache(tmp_path / "cache").encode(enc, [str(tmp_path / f"{i}.mp4") for i in ("short", "long", "bad")],
                                                progress=False, bad=bad)
    assert sorted(bad) == [1, 2]
    assert unusable_file("video", bad[1]).startswith("decode refused by a limit for video: ")
    assert unreadable_finding("video", bad[1]).score == NOT_READ_SCORE
    assert unreadable_finding("video", bad[2]).score == 1.0  # corrupt: found unusable


def test_feature_cache_encodes_the_good_clips_and_names_the_bad(tmp_path, clips):
    from anybind.cache import FeatureCache

    (tmp_path / "bad").mkdir()
    bad = _bad_files(tmp_path / "bad", clips)
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
    cache = FeatureCache(tmp_path / "cache")
    items = [str(clips["mp4"]), str(bad["corrupt"][0]), str(clips["webm"])]
    reasons: dict[int, str] = {}
    X = cache.encode(enc, items, progress=False, bad=reasons)
    assert list(reasons) == [1] and "corrupt or unsupported video" in reasons[1]
    np.testing.assert_allclose(X[[0, 2]], enc.encode([clips["mp4"], clips["webm"]]), atol=1e-6)
    assert np.isnan(X[1]).all()
    cache.encode(enc, [items[0]], progress=False)
    assert cache.last_stats.hits == 1


def test_a_bad_clip_through_the_cache_is_named_once_in_one_line(tmp_path, clips):
    """Without ``bad``, the cache raises for the first bad clip: the reason already starts with the file, which
    was written twice ("cannot decode /x/corrupt.mp4: /x/corrupt.mp4: corrupt or unsupported video")."""
    from anybind.cache import FeatureCache

    (tmp_path / "bad").mkdir()
    path = _bad_files(tmp_path / "bad", clips)["corrupt"][0]
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
    with pytest.raises(DataError, match="corrupt or unsupported video") as e:
        FeatureCache(tmp_path / "cache").encode(enc, [str(clips["mp4"]), str(path)], progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{enc.spec}: cannot decode {path}: ") and msg.count(str(path)) == 1, msg
    assert "\n" not in msg


def test_manifest_video_fields_are_files_checked_by_decoding(tmp_path, clips):
    import json
    import shutil

    shutil.copy(clips["webm"], tmp_path / "ok.webm")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    rows = [{"id": "a", "text": "a clip", "video": "ok.webm"}, {"id": "b", "text": "a broken clip", "video": "bad.mp4"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = load_manifest(tmp_path / "m.jsonl", check_cache=False)
    assert [r.id for r in m.records] == ["a"] and m.records[0].values["video"] == str(tmp_path / "ok.webm")
    assert len(m.bad) == 1 and "bad.mp4" in m.bad[0].reason and "video" in m.bad[0].reason


def test_poster_frame_and_sniffing(clips):
    assert poster_frame(clips["mp4"]).shape == (48, 64, 3)
    assert frame_index(poster_frame(clips["webm"])) == 0
    assert looks_like_video(clips["mp4"].read_bytes()[:64]) == "mp4"
    assert looks_like_video(clips["webm"].read_bytes()[:64]) == "webm"
    assert looks_like_video(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) is None


def test_bench_task_is_registered_and_times_the_encoder_against_the_bare_path_on_the_same_clips(clips, tmp_path):
    from anybind.bench import load_tasks
    from anybind.bench.tasks_video import _speed

    assert "video-retrieval" in load_tasks()
    s = _speed([str(clips["mp4"]), str(clips["webm"])], 2, 2, tmp_path, repeats=1)
    assert s["clips"] == 2 and s["frames"] == 4 and s["clips a batch"] == 4  # 2 frames a clip fill batches of 8
    assert s["equal"] == 1.0 and s["max |diff|"] < 1e-4  # the bare path's features are the encoder's
    assert all(s[k] > 0 for k in ("encoder clips/s", "bare clips/s", "ratio", "paired", "cpu ratio", "decode clips/s",
                                  "forward frames/s"))


def test_a_frame_over_a_limit_keeps_its_kind_in_the_clips_error(tmp_path):
    """A clip given as its frames' files, one over max_pixels: the clip's error names the frame and is still a
    LimitRefused ("decode refused by a limit"), not a plain DataError read as a corrupt file."""
    from PIL import Image

    frames = [tmp_path / f"f{i}.png" for i in range(2)]
    for i, p in enumerate(frames):
        Image.new("RGB", (40 + 40 * i, 30), (20 * i, 0, 0)).save(p)
    enc = get_encoder("video:frames(image:efficientnet-lite0)@fps=2,max=3", cached=False)  # decodes in load
    with using_limits(MediaLimits(max_pixels=2000)), pytest.raises(LimitRefused) as e:
        enc.load([str(p) for p in frames])
    assert str(e.value).startswith("<2 frames>: frame at 0.50 s: ") and "max_pixels" in str(e.value)
    assert unusable_file("video", Reason.of(e.value)).startswith("decode refused by a limit for video: ")

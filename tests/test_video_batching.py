"""video:frames batches the frames of several clips together into full image-encoder batches (issue 17)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from video_helpers import make_clip, make_zero_frame_clip, rgb_stats

from anybind.data.video import read_frames
from anybind.encoders.registry import get_encoder
from anybind.encoders.video import clips_per_batch
from anybind.errors import DataError

pytest.importorskip("av")

STATS = "callable:video_helpers:rgb_stats"


def calls_per_clip(c: int, m: int, b: int) -> float:
    return -(-c * m // b) / c


@given(m=st.integers(1, 1024), b=st.integers(1, 64))
def test_clips_per_batch_fills_the_image_batches_within_a_frame_bound(m, b):
    c = clips_per_batch(m, b)
    cap = 4 * max(m, b)
    assert 1 <= c and c * m <= cap
    # the fewest forward calls per clip of any choice within the bound, never more than the old 4 clips a call
    assert all(calls_per_clip(c, m, b) <= calls_per_clip(k, m, b) for k in range(1, cap // m + 1))
    assert calls_per_clip(c, m, b) <= calls_per_clip(4, m, b)


def test_clips_per_batch_examples():
    assert clips_per_batch(3, 8) == 8  # 24 frames: three full batches (4 clips gave 8 + 4)
    assert clips_per_batch(6, 8) == 4
    assert clips_per_batch(32, 8) == 1
    assert clips_per_batch(1, 8) == 8


@pytest.fixture(scope="module")
def lens(tmp_path_factory):
    """Clips giving 3, 2 and 1 frames at fps=2, max=3 (10 fps clips of 20, 6 and 3 frames)."""
    d = tmp_path_factory.mktemp("batching")
    return {k: make_clip(d / f"c{k}.mp4", n=n) for k, n in ((3, 20), (2, 6), (1, 3))}


def test_frames_of_several_clips_share_full_image_batches_and_features_do_not_change(lens, monkeypatch):
    enc = get_encoder("video:frames(image:efficientnet-lite0)@fps=2,max=3", cached=False)
    image = enc.image
    assert image.batch_size == 8 and enc.batch_size == 8
    order = [3, 2, 3, 1, 3, 3, 2, 3]  # 20 frames
    items = [str(lens[k]) for k in order]
    sizes = []
    forward = image.encode_loaded

    def spy(batch):
        sizes.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(image, "encode_loaded", spy)  # the image encoder is the shared (cached) instance
    X = enc.encode(items)
    assert sizes == [8, 8, 4]  # one call of 8 clips; with 4 clips a call: 8 + 1, 8 + 3
    monkeypatch.undo()
    assert X.shape == (8, 1280)
    ref = {k: image.encode(read_frames(p, 2, 3)).mean(0) for k, p in lens.items()}
    assert [len(read_frames(p, 2, 3)) for p in lens.values()] == [3, 2, 1]
    for row, k in zip(X, order):
        np.testing.assert_allclose(row, ref[k], atol=1e-5)


def test_sequence_features_and_batch_size_override(lens):
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3,pool=attn", cached=False)
    items = [str(lens[k]) for k in (1, 3, 2, 3, 1)]
    X = enc.encode(items)
    enc.batch_size = 1  # one clip a call: no frames shared across clips
    assert enc.batch_size == 1
    np.testing.assert_allclose(enc.encode(items), X, atol=1e-6)
    seq = X.reshape(5, 3, -1)
    for row, k in zip(seq, (1, 3, 2, 3, 1)):
        np.testing.assert_allclose(row[:k, :-1], rgb_stats(read_frames(lens[k], 2, 3)), atol=1e-5)
        assert row[:k, -1].tolist() == [1.0] * k and not row[k:].any()


def test_a_bad_clip_among_batched_clips_is_still_refused_by_name(lens, tmp_path):
    bad = make_zero_frame_clip(tmp_path / "empty.avi")
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=3", cached=False)
    with pytest.raises(DataError, match="empty.avi"):
        enc.encode([str(lens[3]), str(bad), str(lens[2])])

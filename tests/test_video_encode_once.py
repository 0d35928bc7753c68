"""A clip encoded for one pooling is not decoded or encoded again for the other: the feature cache serves a
``video:frames`` mean from the clip's cached frame sequence (``pool=attn``), to the bit (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
from video_helpers import make_clip

import anybind.encoders.video as video_mod
from anybind.cache import FeatureCache
from anybind.encoders.registry import get_encoder

pytest.importorskip("av")

STATS = "callable:video_helpers:rgb_stats"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips giving 3, 2 and 1 frames at fps=2, max=3 (10 fps clips of 20, 6 and 3 frames)."""
    d = tmp_path_factory.mktemp("once")
    return [str(make_clip(d / f"c{n}.mp4", n=n)) for n in (20, 6, 3, 20)]


def spy(monkeypatch, enc):
    """Count clip decodes (sample_frames) and image forward calls of ``enc``'s frames encoder."""
    calls = {"decode": 0, "forward": 0}
    sample, forward = video_mod.sample_frames, enc.image.encode_loaded

    def sample_spy(*a, **k):
        calls["decode"] += 1
        return sample(*a, **k)

    def forward_spy(batch):
        calls["forward"] += 1
        return forward(batch)

    monkeypatch.setattr(video_mod, "sample_frames", sample_spy)
    monkeypatch.setattr(enc.image, "encode_loaded", forward_spy)
    return calls


@pytest.mark.parametrize("image", [STATS, "image:efficientnet-lite0"])
def test_the_mean_comes_from_the_cached_frame_sequence_without_decoding_and_is_the_same(clips, tmp_path, image,
                                                                                        monkeypatch):
    seq_enc = get_encoder(f"video:frames({image})@fps=2,max=3,pool=attn")
    mean_enc = get_encoder(f"video:frames({image})@fps=2,max=3")
    assert mean_enc.image is seq_enc.image and mean_enc.source_encoder.identity == seq_enc.identity
    before = mean_enc.encode(clips)  # what pool=mean gives, encoded by itself (no cache)
    fc = FeatureCache(tmp_path / "cache")
    calls = spy(monkeypatch, seq_enc)
    S = fc.encode(seq_enc, clips, progress=False)
    assert calls["decode"] == 3 and calls["forward"] >= 1 and fc.last_stats.encoded == 3  # 3 distinct clips
    calls.update(decode=0, forward=0)
    M = fc.encode(mean_enc, clips, progress=False)
    assert calls == {"decode": 0, "forward": 0}  # no clip decoded, no frame through the model
    assert (fc.last_stats.derived, fc.last_stats.encoded, fc.last_stats.hits) == (3, 0, 0)
    np.testing.assert_array_equal(M, before)
    s = S.reshape(len(clips), 3, -1)
    assert s[:, :, -1].sum(1).tolist() == [3, 2, 1, 3]  # the means came from clips of 3, 2 and 1 valid frames
    # committed under the mean's own identity: a fresh cache serves it directly, and cache-only lookups see it
    fc2 = FeatureCache(tmp_path / "cache")
    np.testing.assert_array_equal(fc2.encode(mean_enc, clips, progress=False), before)
    assert (fc2.last_stats.hits, fc2.last_stats.derived, fc2.last_stats.encoded) == (3, 0, 0)
    keys = [mean_enc.content_key(c) for c in clips]
    X, missing = FeatureCache(tmp_path / "cache").cached(mean_enc, keys)
    assert missing == [] and np.array_equal(X, before)


def test_cache_only_lookup_derives_the_mean_and_a_clip_without_a_sequence_is_encoded(clips, tmp_path, monkeypatch):
    seq_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3,pool=attn")
    mean_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3")
    fc = FeatureCache(tmp_path / "cache")
    fc.encode(seq_enc, clips[:2], progress=False)  # sequences of the first two clips only
    keys = [mean_enc.content_key(c) for c in clips[:3]]
    X, missing = FeatureCache(tmp_path / "cache").cached(mean_enc, keys)
    assert missing == [2] and np.isnan(X[2]).all()
    np.testing.assert_array_equal(X[:2], mean_enc.encode(clips[:2]))
    calls = spy(monkeypatch, seq_enc)
    M = fc.encode(mean_enc, clips[:3], progress=False)
    assert calls["decode"] == 1 and (fc.last_stats.derived, fc.last_stats.encoded) == (2, 1)  # only the third
    monkeypatch.undo()
    np.testing.assert_array_equal(M, mean_enc.encode(clips[:3]))


def test_a_sequence_is_never_served_from_means(clips, tmp_path):
    seq_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3,pool=attn")
    mean_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3")
    assert seq_enc.source_encoder is None
    fc = FeatureCache(tmp_path / "cache")
    fc.encode(mean_enc, clips[:2], progress=False)
    fc.encode(seq_enc, clips[:2], progress=False)
    assert fc.last_stats.encoded == 2


def test_anybind_encode_reports_the_derived_means_as_cached(clips, tmp_path, monkeypatch):
    from anybind.scale.encode import encode_items

    seq_spec, mean_spec = (f"video:frames({STATS})@fps=2,max=3{p}" for p in (",pool=attn", ""))
    rep = encode_items(seq_spec, clips, tmp_path / "cache", progress=False)
    assert (rep.unique, rep.hits, rep.encoded) == (3, 0, 3)
    calls = spy(monkeypatch, get_encoder(seq_spec))
    rep = encode_items(mean_spec, clips, tmp_path / "cache", progress=False)
    assert (rep.unique, rep.hits, rep.encoded) == (3, 3, 0) and calls == {"decode": 0, "forward": 0}


def test_a_mean_another_writer_committed_meanwhile_is_what_the_deriving_run_serves(clips, tmp_path):
    """Derived rows follow the cache's one rule, "the first shard holding a key serves it": when another process
    committed the clip's mean while this run derived it, this run serves that shard's row, as every rerun will."""
    seq_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3,pool=attn")
    mean_enc = get_encoder(f"video:frames({STATS})@fps=2,max=3")
    root = tmp_path / "cache"
    FeatureCache(root).encode(seq_enc, clips[:1], progress=False)
    fc = FeatureCache(root)
    from anybind.encoders.device import cache_identity

    ident = cache_identity(mean_enc)
    assert fc.count(ident) == 0  # this run's index of the means: read before the other writer commits
    other = np.full((1, mean_enc.dim), 7.0, np.float32)  # the other writer's numbers (its own kernels)
    FeatureCache(root).write_shard(ident, [mean_enc.content_key(clips[0])], other)
    X = fc.encode(mean_enc, clips[:1], progress=False)
    rerun = FeatureCache(root).encode(mean_enc, clips[:1], progress=False)
    np.testing.assert_array_equal(rerun, other)
    np.testing.assert_array_equal(X, rerun)

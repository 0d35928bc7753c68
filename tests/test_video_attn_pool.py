"""``video:frames(...)@pool=attn``: the encoder keeps each clip's frame sequence (cached per frame) and the
video projector learns an attention pooling over the frames with the space (issue 17)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anybind.data.manifest import Record
from anybind.data.video import read_frames
from anybind.encoders.registry import get_encoder
from anybind.encoders.video import temporal_frames
from anybind.errors import DataError, EncoderError, SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space
from anybind.train import FeatureSet, TrainConfig, train_space
from video_helpers import fake_bridge, make_clip, rgb_stats

pytest.importorskip("av")

STATS = "callable:video_helpers:rgb_stats"
T, D = 8, 16  # frames a clip, features a frame (synthetic task)
ATTN = f"video:frames({STATS})@fps=1,max={T},pool=attn"
MEAN = f"video:frames({STATS})@fps=1,max={T}"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "c.mp4")  # 20 frames at 10 fps


def test_attn_features_are_the_frame_sequence_padded_and_flagged(clip):
    enc = get_encoder(f"video:frames({STATS})@fps=2,max=6,pool=attn", cached=False)
    assert enc.spec.endswith("pool=attn") and temporal_frames(enc.spec) == 6
    X = enc.encode([clip, clip.read_bytes()])
    assert X.shape == (2, 6 * 7) == (2, enc.dim)
    rows = X[0].reshape(6, 7)
    frames = read_frames(clip, 2, 6)  # 0, 0.5, 1.0, 1.5 s: 4 frames of the 2 s clip
    assert len(frames) == 4
    np.testing.assert_allclose(rows[:4, :6], rgb_stats(frames), atol=1e-6)
    assert rows[:4, 6].tolist() == [1.0] * 4 and not rows[4:].any()
    np.testing.assert_array_equal(X[1], X[0])
    mean = get_encoder(f"video:frames({STATS})@fps=2,max=6", cached=False)
    assert mean.dim == 6 and temporal_frames(mean.spec) == 0
    assert mean.identity != enc.identity and "pool=mean" in mean.identity  # mean's identity is unchanged
    with pytest.raises(EncoderError, match="bad option 'pool=max'.*pool: mean or attn"):
        get_encoder(f"video:frames({STATS})@pool=max", cached=False)


def _synthetic(seed: int, pooled: bool, n: int = 600):
    """Text sees a latent z; a clip's one signal frame (random place, marked) sees z, its 2-7 other frames are
    distractors of larger variance.  ``pooled``: the clips' frame means (what pool=mean caches)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8)).astype(np.float32)
    A, B = rng.standard_normal((8, 12)) / np.sqrt(8), rng.standard_normal((8, 12)) / np.sqrt(8)
    text = (z @ A + 0.1 * rng.standard_normal((n, 12))).astype(np.float32)
    seq = np.zeros((n, T, D + 1), np.float32)
    for i in range(n):
        k = int(rng.integers(3, T + 1))
        seq[i, :k, :12] = 1.5 * rng.standard_normal((k, 12))
        seq[i, :k, 12:D] = 0.3 * rng.standard_normal((k, D - 12))
        t = int(rng.integers(0, k))
        seq[i, t, :12], seq[i, t, 12:D] = z[i] @ B, 2.0
        seq[i, :k, D] = 1.0
    video = np.stack([s[s[:, D] > 0, :D].mean(0) for s in seq]) if pooled else seq.reshape(n, -1)
    splits = ["train"] * (n - 200) + ["val"] * 100 + ["test"] * 100
    recs = [Record(id=f"r{i}", split=s, values={"video": "x", "text": "x"}) for i, s in enumerate(splits)]
    specs = {"video": MEAN if pooled else ATTN, "text": "synthetic:text"}
    return FeatureSet(records=recs, specs=specs, identities=dict(specs), feats={"video": video, "text": text},
                      rows={m: np.arange(n) for m in specs}, corpus=np.zeros(n, np.int64))


CFG = dict(dim=32, projector="mlp", hidden=64, epochs=60, patience=15, batch_size=64, lr=3e-3, seed=0)


def _r1(space: Space, fs: FeatureSet) -> float:
    idx = fs.split_idx("test")
    q, g = space.project("video", fs.get("video", idx)), space.project("text", fs.get("text", idx))
    return float(np.mean(np.argmax(q @ g.T, axis=1) == np.arange(len(idx))))


@pytest.fixture(scope="module")
def trained():
    fs = _synthetic(0, pooled=False)
    return fs, train_space(fs, TrainConfig(**CFG), progress=False)


def test_attention_pool_beats_mean_pooling_when_one_frame_carries_the_signal(trained):
    fs, attn = trained
    assert attn.projectors["video"].cfg.frames == T and attn.projectors["text"].cfg.frames == 0
    mean = train_space(_synthetic(0, pooled=True), TrainConfig(**CFG), progress=False)
    r_attn, r_mean = _r1(attn, fs), _r1(mean, _synthetic(0, pooled=True))
    assert r_attn > r_mean + 0.1, (r_attn, r_mean)
    # the learnt weights find the marked frame: on test clips, most weight sits on it
    idx = fs.split_idx("test")
    x = torch.from_numpy(fs.get("video", idx))
    proj = attn.projectors["video"].eval()
    with torch.no_grad():
        w = proj.attention(x).numpy()
    seq = x.numpy().reshape(len(idx), T, D + 1)
    signal = np.argmax(seq[:, :, 12:D].mean(-1), axis=1)
    assert np.mean(np.argmax(w, axis=1) == signal) > 0.8
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (w[seq[:, :, D] == 0] == 0).all()  # padding frames get no weight


def test_training_is_deterministic(trained):
    fs, attn = trained
    again = train_space(fs, TrainConfig(**CFG), progress=False)
    for k, v in attn.projectors["video"].state_dict().items():
        assert torch.equal(v, again.projectors["video"].state_dict()[k]), k


def test_untrained_head_is_the_mean_and_ridge_start_is_exact():
    fs = _synthetic(1, pooled=False, n=260)
    x = fs.feats["video"][:50]
    p = Projector(ProjectorConfig(in_dim=x.shape[1], out_dim=8, kind="linear", frames=T)).fit_stats(x).eval()
    seq = x.reshape(50, T, D + 1)
    mean = np.stack([s[s[:, D] > 0, :D].mean(0) for s in seq])
    with torch.no_grad():
        got = p(torch.from_numpy(x))
        want = p.linear((torch.from_numpy(mean) - p.mean) / p.scale)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
        np.testing.assert_allclose(p.standardized(torch.from_numpy(x)).numpy(),
                                   ((torch.from_numpy(mean) - p.mean) / p.scale).numpy(), atol=1e-5)
    sp = train_space(fs, TrainConfig(**{**CFG, "epochs": 3, "lock": "text", "init": "ridge"}), progress=False)
    assert sp.projectors["video"].cfg.frames == T
    with pytest.raises(DataError, match="init=.procrustes. cannot start the frame-pooling projector of video; use"):
        train_space(fs, TrainConfig(**{**CFG, "epochs": 1, "init": "procrustes"}), progress=False)
    from anybind.align import fit_training_free

    for method in ("procrustes", "cca"):  # the training-free methods cannot learn the pooling either
        with pytest.raises(DataError, match=f"video: a pool=attn video spec has a learnt frame pooling; {method}"):
            fit_training_free(fs, method=method)


def test_a_zero_frame_clip_gives_no_nan_in_the_attention_gradient():
    x = torch.from_numpy(_synthetic(1, pooled=False, n=260).feats["video"][:8].copy())
    x.view(8, T, D + 1)[0, :, D] = 0.0  # the first clip has no valid frame at all
    p = Projector(ProjectorConfig(in_dim=x.shape[1], out_dim=8, kind="mlp", hidden=16, frames=T)).fit_stats(x.numpy())
    out = p(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(q.grad).all() for q in p.parameters() if q.grad is not None)


def test_save_and_load_keep_the_attention_head(trained, tmp_path):
    fs, attn = trained
    path = attn.save(tmp_path / "sp")
    meta = json.loads((path / "space.json").read_text())
    assert meta["format_version"] == 4 and meta["modalities"]["video"]["projector"]["frames"] == T
    assert "frames" not in meta["modalities"]["text"]["projector"]
    back = Space.load(path)
    idx = fs.split_idx("test")
    X = fs.get("video", idx)
    np.testing.assert_array_equal(back.project("video", X), attn.project("video", X))
    assert back.identity() == attn.identity()
    for version, frames, match in ((3, T, "frames needs format_version 4"), (4, 7, "frames=7 needs in_dim")):
        bad = json.loads(json.dumps(meta))
        bad["format_version"], bad["modalities"]["video"]["projector"]["frames"] = version, frames
        (path / "space.json").write_text(json.dumps(bad))
        with pytest.raises(SpaceError, match=match):
            Space.load(path)


def test_fit_on_clips_caches_frames_and_embeds_through_the_learnt_pool(tmp_path):
    from anybind.data.manifest import load_manifest

    rows = []
    for i in range(12):
        c = make_clip(tmp_path / f"c{i}.mp4", n=8 + i, rate=4)
        rows.append({"id": f"c{i}", "video": c.name, "text": f"clip {i} of {8 + i} frames",
                     "split": "val" if i % 4 == 0 else "train"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m2.jsonl").write_text("".join(json.dumps({**r, "video_seq": r["video"]}) + "\n" for r in rows))
    man = load_manifest(tmp_path / "m.jsonl", modalities=["video", "text"])
    spec = f"video:frames({STATS})@fps=1,max=4,pool=attn"
    sp = Space.fit(man, modalities=["video", "text"], cache=tmp_path / "cache", seed=0, progress=False,
                   encoders={"video": spec, "text": "callable:helper_encoders:hashed_text"}, epochs=3,
                   recipe="plain")
    assert sp.projectors["video"].cfg.frames == 4 and sp.projectors["video"].cfg.in_dim == 4 * 7
    E = sp.embed("video", [str(tmp_path / "c0.mp4"), str(tmp_path / "c11.mp4")], cache=tmp_path / "cache")
    assert E.shape == (2, sp.dim) and np.isfinite(E).all()
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    back = Space.load(sp.save(tmp_path / "sp"))
    np.testing.assert_allclose(back.embed("video", [str(tmp_path / "c0.mp4")], cache=tmp_path / "cache"), E[:1],
                               atol=1e-6)
    # bind --add: a frame-pooling modality bound to the text of a space that has it
    added = sp.add_modality("video_seq", spec, tmp_path / "m2.jsonl", anchors=["text"], cache=tmp_path / "cache",
                            epochs=2, progress=False)
    assert added.projectors["video_seq"].cfg.frames == 4
    again = Space.load(added.save(tmp_path / "sp2"))
    c3 = [str(tmp_path / "c3.mp4")]
    np.testing.assert_allclose(again.embed("video_seq", c3, cache=tmp_path / "cache"),
                               added.embed("video_seq", c3, cache=tmp_path / "cache"), atol=1e-6)
    # the streaming and Ray trainers learn the pool too: tests/test_scale.py, tests/test_scale_ray.py


def test_the_ridge_start_shrinks_towards_the_frames_label_bridge(monkeypatch):
    """A clip of a label-bridge image encoder carries the bridge block in each frame (or in their mean): the
    recipe's bridge prior reads it there, for a frame-pooling projector as for a mean-pooled one."""
    from anybind.robust import bridge_prior

    fake_bridge(monkeypatch)
    rng = np.random.default_rng(0)
    for pool, frames, width in (("mean", 0, 16), ("attn", 3, 3 * 17)):
        spec = f"video:frames(image:fake+bridge)@fps=1,max=3,pool={pool}"
        x = rng.normal(size=(20, 3, 17)).astype(np.float32)
        x[:, :, 16] = 1.0
        feats = x.reshape(20, -1) if frames else x[:, 0, :16].copy()
        assert feats.shape[1] == width
        p = Projector(ProjectorConfig(in_dim=width, out_dim=6, frames=frames)).fit_stats(feats)
        W = bridge_prior(spec, "text:fake", p)
        assert W is not None and tuple(W.shape) == (16, 6)
        np.testing.assert_allclose(W[10:].numpy(), np.diag(p.scale[10:].double().numpy()))
        assert not W[:10].any()
        assert bridge_prior(spec, "text:other", p) is None

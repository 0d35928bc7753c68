"""Video encoders: frames sampled from a clip, encoded by any image encoder, pooled.

Spec: ``video:frames(<image spec>)[@fps=1,max=32,pool=mean]``, e.g.
``video:frames(image:efficientnet-lite0)@fps=2,max=16`` or ``video:frames(callable:mypkg.mod:encode)``.  A clip
is decoded with PyAV (``pip install 'anybind[video]'``) and sampled by :func:`anybind.data.video.sample_frames`:
at ``fps`` frames per second (default 1) from its first frame, at most ``max`` frames (default 32); each frame
goes through the image encoder's own ``load`` (an RGB uint8 array, like a decoded image file) and
``encode_loaded``.  Pooling:

* ``pool=mean`` (the default): the clip's feature is the mean of its frames' features (``dim`` is the image
  encoder's);
* ``pool=attn``: the encoder (frozen, like every encoder) pools nothing.  Its feature is the clip's *frame
  sequence*: ``max`` rows of ``image dim + 1`` numbers, flattened (``dim = max * (image dim + 1)``); row ``t``
  holds frame ``t``'s features and a 1 in its last place, rows past the clip's last sampled frame are zeros.
  So the feature cache keeps every frame's features, and the modality's projector
  (:class:`anybind.projectors.Projector` with ``frames = max``, built so by training when it sees such a spec,
  see :func:`temporal_frames`) learns an attention pooling over the frames together with the space: the
  learnt temporal head of frozen-frame-encoder video models, trained with the projector.  It starts as the
  mean over the valid frames, so training moves away from mean pooling only where the validation score says so.

Batching: the frames of all the clips of one call go to the image encoder together, in batches of its own
batch size; the clips a call takes (:attr:`VideoFramesEncoder.batch_size`, :func:`clips_per_batch`) are chosen
so that those batches are full (8 clips of 3 frames for batches of 8).  A clip's features do not depend on the
batching.

Encoded once for both poolings: the feature cache serves a ``pool=mean`` clip from the clip's cached frame
sequence when it holds one (:attr:`VideoFramesEncoder.source_encoder`, the same numbers to the bit), so comparing
the two poolings decodes and encodes each clip once (encode the ``pool=attn`` sequences first).

Items: a video file path, the file's bytes, or frames already sampled (a ``(T, H, W, 3)`` uint8 array or a
list of images; the first ``max`` are used).  The identity holds the image encoder's identity, the sampling
options and :data:`~anybind.data.video.SAMPLING_VERSION`, so the feature cache and a saved space refuse
features of other frames or another image model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import short_repr
from ..data.video import SAMPLING_VERSION, sample_frames, video_name
from ..errors import DataError, EncoderError, unusable_kind
from .base import Encoder

DEFAULT_FPS = 1.0
DEFAULT_MAX = 32
#: the most frames one clip may be sampled to (a clip's frames are held in memory, preprocessed)
MAX_FRAMES = 1024
POOLS = ("mean", "attn")


@dataclass
class LoadedClip:
    """A clip's sampled frames, each as the image encoder's ``load`` returned it (picklable)."""

    frames: list
    times: list


def parse_frames_spec(name: str) -> tuple[str, float, int, str]:
    """``frames(<image spec>)@fps=1,max=32,pool=mean`` -> ``(image spec, fps, max, pool)``; EncoderError saying
    what is wrong."""
    how = ("a video encoder spec is video:frames(<image spec>)[@fps=1,max=32,pool=mean|attn], "
           "e.g. video:frames(image:efficientnet-lite0); or video:hf/<model> (a transformers video model)")
    if not name.startswith("frames("):
        raise EncoderError(f"unknown video encoder {name!r}: {how}")
    depth, end = 0, -1
    for i in range(len("frames"), len(name)):
        depth += name[i] == "("
        depth -= name[i] == ")"
        if depth == 0:
            end = i
            break
    if end < 0:
        raise EncoderError(f"video encoder {name!r}: unbalanced parentheses; {how}")
    image_spec, rest = name[len("frames(") : end].strip(), name[end + 1 :]
    if not image_spec:
        raise EncoderError(f"video encoder {name!r}: no image encoder inside frames(...); {how}")
    fps, max_frames, pool = DEFAULT_FPS, DEFAULT_MAX, "mean"
    if rest:
        if not rest.startswith("@") or len(rest) == 1:
            raise EncoderError(f"video encoder {name!r}: unexpected {rest!r} after frames(...); {how}")
        for opt in rest[1:].split(","):
            key, eq, val = opt.partition("=")
            key = key.strip()
            try:
                if not eq:
                    raise ValueError
                if key == "fps":
                    fps = float(val)
                    if not 0 < fps <= 1000:
                        raise ValueError
                elif key == "max":
                    max_frames = int(val)
                    if not 1 <= max_frames <= MAX_FRAMES:
                        raise ValueError
                elif key == "pool":
                    pool = val.strip()
                    if pool not in POOLS:
                        raise ValueError
                else:
                    raise EncoderError(f"video encoder {name!r}: unknown option {key!r} (known: fps, max, pool)")
            except ValueError:
                raise EncoderError(f"video encoder {name!r}: bad option {opt!r} (fps: a number in (0, 1000]; "
                                   f"max: an integer in 1..{MAX_FRAMES}; pool: mean or attn)") from None
    return image_spec, fps, max_frames, pool


def temporal_frames(spec: str) -> int:
    """The frames of a frame-sequence feature (``video:frames(...)@...,pool=attn``: its ``max``), else 0.

    What training reads to build that modality's projector with an attention pooling over the frames; any
    other spec (and one that does not parse) is an ordinary vector feature."""
    if not isinstance(spec, str) or not spec.startswith("video:frames("):
        return 0
    try:
        _, _, max_frames, pool = parse_frames_spec(spec[len("video:") :].strip())
    except EncoderError:
        return 0
    return max_frames if pool == "attn" else 0


def clips_per_batch(max_frames: int, image_batch: int) -> int:
    """How many clips one :meth:`VideoFramesEncoder.encode_loaded` call takes by default.

    The call sends its clips' frames together to the image encoder in batches of ``image_batch``; the number
    chosen makes those batches full (the fewest forward calls per clip, then the fewest clips), e.g. 8 clips of
    3 frames for batches of 8 (three full batches, where 4 clips gave 8 + 4), 4 of 6, 1 of 32.  At most
    ``4 * max(max_frames, image_batch)`` frames a call, so the preprocessed frames held stay bounded.  A forward
    call costs a fixed part on top of its frames, and on a contended CPU that part dominates.
    """
    m, b = max(1, int(max_frames)), max(1, int(image_batch))
    cap = max(1, 4 * max(m, b) // m)
    return min(range(1, cap + 1), key=lambda c: (-(-c * m // b) / c, c))


class VideoFramesEncoder(Encoder):
    """Mean of an image encoder's features over a clip's sampled frames."""

    modality = "video"
    input_kind = "file"

    def __init__(self, image_spec: str, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX,
                 spec: str | None = None, pool: str = "mean"):
        from .registry import get_encoder

        if image_spec.startswith("video:"):
            raise EncoderError(f"video:frames({image_spec}): the frames' encoder must be an image encoder")
        if pool not in POOLS:
            raise EncoderError(f"video:frames({image_spec}): pool={pool!r}; known: {', '.join(POOLS)}")
        self.image_spec, self.fps, self.max_frames, self.pool = image_spec, float(fps), int(max_frames), pool
        attn = ",pool=attn" if pool == "attn" else ""
        self.spec = spec or f"video:frames({image_spec})@fps={self.fps:g},max={self.max_frames}{attn}"
        try:
            import av  # noqa: F401
        except ImportError as e:
            raise EncoderError(f"video encoder {self.spec!r} needs PyAV ({e}): pip install 'anybind[video]'") from None
        self.image = get_encoder(image_spec)
        self.runs_torch = bool(getattr(self.image, "runs_torch", False))

    @property
    def batch_size(self) -> int:  # clips a call: see clips_per_batch (settable, like any encoder's)
        if getattr(self, "_batch_size", None):
            return int(self._batch_size)
        return clips_per_batch(self.max_frames, int(getattr(self.image, "batch_size", 32) or 32))

    @batch_size.setter
    def batch_size(self, n: int) -> None:
        self._batch_size = max(1, int(n))

    @property
    def dim(self) -> int:  # the image encoder's (a callable learns its width on its first batch)
        d = int(self.image.dim)
        return d if self.pool == "mean" or d == 0 else self.max_frames * (d + 1)

    @property
    def identity(self) -> str:
        pool = "mean" if self.pool == "mean" else "frames+mask"  # attn: the projector pools the frame sequence
        return (f"video:frames|image=({self.image.identity})|fps={self.fps:g},max={self.max_frames},"
                f"{SAMPLING_VERSION}|pool={pool}")

    @property
    def source_encoder(self) -> VideoFramesEncoder | None:
        """A ``pool=mean`` encoder's frame-sequence twin (``pool=attn``, the same image encoder instance and
        sampling): the feature cache derives the mean from a clip's cached sequence (:meth:`from_source`) instead
        of decoding and encoding the clip again (:func:`anybind.encoders.base.cache_source`); ``None`` for
        ``pool=attn``."""
        if self.pool != "mean":
            return None
        twin = getattr(self, "_twin", None)
        if twin is None:
            twin = copy.copy(self)
            twin.pool = "attn"
            twin.spec = f"video:frames({self.image_spec})@fps={self.fps:g},max={self.max_frames},pool=attn"
            self._twin = twin
        return twin

    def from_source(self, seqs: np.ndarray) -> np.ndarray:
        """The mean features of clips from their frame sequences (rows of :attr:`source_encoder`'s features): the
        mean over each clip's valid frames, in float64 as :meth:`encode_loaded` takes it, so the result is the
        same to the bit as encoding the clip with ``pool=mean``."""
        seqs = np.asarray(seqs, np.float32)
        s = seqs.reshape(len(seqs), self.max_frames, -1)
        valid = s[:, :, -1] > 0.5
        if len(s) and not valid.any(1).all():
            raise EncoderError(f"encoder {self.spec!r}: a cached frame sequence has no valid frame")
        out = [s[i, valid[i], :-1].mean(axis=0, dtype=np.float64) for i in range(len(s))]
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def load(self, item: Any) -> LoadedClip:
        if isinstance(item, LoadedClip):
            return item
        if isinstance(item, (str, Path, bytes, bytearray, memoryview)):
            sampled = sample_frames(item, self.fps, self.max_frames)
            name = video_name(item)
        elif (isinstance(item, np.ndarray) and item.ndim == 4 and item.dtype == np.uint8) or (
                isinstance(item, (list, tuple)) and item):
            sampled = ((i / self.fps, f) for i, f in enumerate(list(item)[: self.max_frames]))
            name = f"<{len(item)} frames>"
        else:
            raise DataError(f"{short_repr(item)}: not a video (expected a file path, its bytes, "
                            "or frames as a (T, H, W, 3) uint8 array or a list of images)")
        frames, times = [], []
        for t, frame in sampled:
            try:
                frames.append(self.image.load(frame))
            except DataError as e:
                raise unusable_kind(e)(f"{name}: frame at {t:.2f} s: {e}") from None  # a refused frame: a refused clip
            times.append(t)
        if not frames:
            raise DataError(f"{name}: video has no frames")
        return LoadedClip(frames, times)

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        clips = [self.load(b) for b in batch]
        flat = [f for c in clips for f in c.frames]
        if not flat:
            return np.zeros((0, self.dim), np.float32)
        bs = max(1, int(getattr(self.image, "batch_size", 32)))
        feats = np.concatenate([np.asarray(self.image.encode_loaded(flat[i : i + bs]), np.float32)
                                for i in range(0, len(flat), bs)], axis=0)
        if feats.ndim != 2 or feats.shape[0] != len(flat):
            raise EncoderError(f"encoder {self.spec!r}: the image encoder returned shape {feats.shape} "
                               f"for {len(flat)} frames")
        out, i = [], 0
        for c in clips:
            n = len(c.frames)
            if self.pool == "mean":
                out.append(feats[i : i + n].mean(axis=0, dtype=np.float64))
            else:  # the frame sequence, each row flagged valid, padded with zero rows to max frames
                seq = np.zeros((self.max_frames, feats.shape[1] + 1), np.float32)
                seq[:n, :-1], seq[:n, -1] = feats[i : i + n], 1.0
                out.append(seq.reshape(-1))
            i += n
        return self.check_output(np.stack(out).astype(np.float32), len(clips))

    def encode(self, items, batch_size=None):
        if self.dim == 0 and len(items):  # a callable image encoder learns its width on a first batch
            self.encode_loaded([self.load(items[0])])
        return super().encode(items, batch_size)


def make_video_encoder(name: str) -> Encoder:
    """Factory for ``video:<name>`` specs (see the module docstring); ``video:hf/<model>`` is a ``transformers``
    video model (:mod:`anybind.encoders.hf_video`)."""
    if name.strip().startswith("hf/"):
        from .hf_video import make_hf_video_encoder

        return make_hf_video_encoder(name.strip()[len("hf/") :])
    image_spec, fps, max_frames, pool = parse_frames_spec(name.strip())
    return VideoFramesEncoder(image_spec, fps, max_frames, pool=pool)

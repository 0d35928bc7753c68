"""The spec of an ONNX Runtime encoder (:mod:`anybind.encoders.ort`): its options and declared preprocessing.

``<modality>:onnx/<model.onnx>[@option=value,...]``; every problem is one :class:`EncoderError` line naming
the spec.  Lists of numbers (``mean``, ``std``) are separated by ``/`` (``mean=0.5/0.5/0.5``), since ``,``
separates options.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import sha256_file

COMMON = ("output", "pool", "device")
OPTIONS = {
    "image": COMMON + ("size", "mean", "std", "resize", "interp", "channels", "layout", "scale"),
    "text": COMMON + ("tokenizer", "max_length"),
    "audio": COMMON + ("sr", "max_seconds", "normalize"),
}
POOLS = ("auto", "cls", "mean")
RESIZES = ("crop", "squash", "pad")
INTERPS = ("bicubic", "bilinear", "nearest")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OrtOptions:
    output: str | None = None
    pool: str = "auto"
    device: str = "cpu"
    # image
    size: tuple[int, int] | None = None  # (height, width); None: the model's static input size
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "crop"
    interp: str = "bicubic"
    channels: str = "rgb"
    layout: str = "nchw"
    scale: float = 255.0
    # text
    tokenizer: str | None = None
    max_length: int | None = None
    # audio
    sr: int = 16000
    max_seconds: float = 30.0
    normalize: bool = False

    def described(self, modality: str, size: tuple[int, int] | None = None) -> str:
        """The options of a modality that decide the features, as ``k=v,...``: ``device`` and the tokenizer's
        path left out (its files are hashed), ``size`` as resolved from the model when not given."""
        keep = [k for k in OPTIONS[modality] if k not in ("device", "tokenizer")]
        vals = {k: getattr(self, k) for k in keep}
        if "size" in vals and size is not None:
            vals["size"] = size
        return ",".join(f"{k}={_show(v)}" for k, v in vals.items())


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ("x" if all(isinstance(x, int) for x in v) else "/").join(_show(x) for x in v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _err(spec: str, msg: str) -> EncoderError:
    return EncoderError(f"encoder {spec!r}: {msg}")


def _number(spec: str, key: str, value: str, kind: type, lo: float, hi: float) -> Any:
    try:
        v = kind(value)
    except ValueError:
        raise _err(spec, f"{key}={value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not lo <= v <= hi:
        raise _err(spec, f"{key}={value!r} is out of range ({lo:g}..{hi:g})")
    return v


def _floats(spec: str, key: str, value: str) -> tuple[float, ...]:
    parts = value.split("/")
    out = tuple(_number(spec, key, p, float, -1e6, 1e6) for p in parts)
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise _err(spec, f"{key}={value!r}: give one value or three separated by '/' (e.g. 0.5/0.5/0.5)")
    if key == "std" and min(out) <= 0:
        raise _err(spec, f"std={value!r}: every value must be positive")
    return out


def _choice(spec: str, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _err(spec, f"{key}={value!r} is not one of {', '.join(allowed)}")
    return value


def _size(spec: str, value: str) -> tuple[int, int]:
    h, sep, w = value.lower().partition("x")
    hh = _number(spec, "size", h, int, 1, 8192)
    return (hh, _number(spec, "size", w, int, 1, 8192) if sep else hh)


def _bool(spec: str, key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise _err(spec, f"{key}={value!r}: use true or false")
    return value.lower() == "true"


def parse_onnx_name(spec: str, modality: str, name: str) -> tuple[str, OrtOptions]:
    """``"<model.onnx>[@k=v,...]"`` -> (model path, options); a bad option: EncoderError naming the spec."""
    source, opts = name, ""
    head, sep, tail = name.rpartition("@")
    if sep and ("=" in tail or not tail):
        source, opts = head, tail
    if not source.strip():
        raise _err(spec, f"onnx/ needs a model file, e.g. {modality}:onnx/model.onnx")
    allowed = OPTIONS[modality]
    kw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if key not in allowed or not eq or not value:
            why = f"unknown option {key!r}" if key not in allowed else f"option {key!r} needs a value"
            raise _err(spec, f"{why} (options of {modality}:onnx/: {', '.join(allowed)}, as @k=v,k=v)")
        if key == "pool":
            kw[key] = _choice(spec, key, value, POOLS)
        elif key == "device":
            if value not in ("cpu", "auto", "cuda") and not value.startswith("cuda:"):
                raise _err(spec, f"device={value!r}: use cpu, cuda, cuda:N or auto")
            kw[key] = value
        elif key == "size":
            kw[key] = _size(spec, value)
        elif key in ("mean", "std"):
            kw[key] = _floats(spec, key, value)
        elif key == "resize":
            kw[key] = _choice(spec, key, value, RESIZES)
        elif key == "interp":
            kw[key] = _choice(spec, key, value, INTERPS)
        elif key == "channels":
            kw[key] = _choice(spec, key, value, ("rgb", "bgr"))
        elif key == "layout":
            kw[key] = _choice(spec, key, value, ("nchw", "nhwc"))
        elif key == "scale":
            kw[key] = _number(spec, key, value, float, 1e-6, 1e6)
        elif key == "max_length":
            kw[key] = _number(spec, key, value, int, 1, 1 << 20)
        elif key == "sr":
            kw[key] = _number(spec, key, value, int, 1000, 384000)
        elif key == "max_seconds":
            kw[key] = _number(spec, key, value, float, 0.01, 24 * 3600)
        elif key == "normalize":
            kw[key] = _bool(spec, key, value)
        else:  # output, tokenizer
            kw[key] = value
    assert {f.name for f in fields(OrtOptions)} >= set(kw)
    return source.strip(), OrtOptions(**kw)


# ----------------------------------------------------------------------------- the model's files


def external_data_files(model: Path) -> list[Path]:
    """The external-data files a ``.onnx`` names (weights stored beside it), in order, without reading them.

    Needs the ``onnx`` package; a model that cannot be parsed raises whatever ``onnx`` raises (the caller
    turns it into one line)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load_model(str(model), load_external_data=False)
    names: set[str] = set()

    def tensors(graph: Any):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from tensors(attr.g)
                for g in attr.graphs:
                    yield from tensors(g)

    for t in tensors(proto.graph):
        if uses_external_data(t):
            names.update(e.value for e in t.external_data if e.key == "location")
    return [model.parent / n for n in sorted(names)]


def model_sha256(model: Path, extra: list[Path]) -> str:
    """SHA-256 over the ``.onnx`` file's bytes and each external-data file's name and bytes."""
    h = hashlib.sha256(f"onnx:{sha256_file(model)};".encode())
    for p in extra:
        h.update(f"{p.name}:{sha256_file(p)};".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- image preprocessing


def preprocess_image(img: Any, o: OrtOptions, size: tuple[int, int]) -> np.ndarray:
    """An RGB PIL image -> float32 ``(3, H, W)`` (``nchw``) or ``(H, W, 3)`` (``nhwc``), as the options say.

    ``crop``: scale so the image covers ``size``, then centre-crop; ``squash``: resize to ``size`` ignoring
    the aspect ratio; ``pad``: scale so the image fits, centred on black.  Then
    ``(pixel / scale - mean) / std``.
    """
    from PIL import Image

    h, w = size
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}[o.interp]
    iw, ih = img.size
    if o.resize == "squash":
        img = img.resize((w, h), resample)
    else:
        f = max(h / ih, w / iw) if o.resize == "crop" else min(h / ih, w / iw)
        nw, nh = max(1, round(iw * f)), max(1, round(ih * f))
        img = img.resize((nw, nh), resample)
        if o.resize == "crop":
            left, top = (nw - w) // 2, (nh - h) // 2
            img = img.crop((left, top, left + w, top + h))
        else:
            canvas = Image.new("RGB", (w, h), (0, 0, 0))
            canvas.paste(img, ((w - nw) // 2, (h - nh) // 2))
            img = canvas
    x = np.asarray(img, dtype=np.float32) / np.float32(o.scale)
    x = (x - np.asarray(o.mean, np.float32)) / np.asarray(o.std, np.float32)
    if o.channels == "bgr":
        x = x[:, :, ::-1]
    if o.layout == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


"""Where torch models run and at what precision: one setting for encoding, training, indexing and serving.

``--device auto|cpu|cuda[:N]|mps`` and ``--precision fp32|fp16|bf16`` (the CLI) and :func:`use_runtime` /
:func:`set_runtime` (the library) set the process's :class:`Runtime`; every encoder that runs a torch model
(the image built-ins, ``hf/``, aiSFX, sentence-transformers), the projector training loop and the service
read it from :func:`current_runtime` when they run, so a model moves to the device it is asked to run on.

* ``auto`` (the default) is ``cuda`` when ``torch.cuda.is_available()``, else ``cpu`` (never MPS unless
  asked); ``cuda`` is the current CUDA device (``cuda:0`` unless set otherwise).  A device that is not
  there is a :class:`DeviceError` in one line, before any work starts.
* ``fp16`` / ``bf16`` run the model's forward (and the projectors' training steps) under
  ``torch.autocast``; weights stay fp32, features are returned as float32.  ``bf16`` works on every device
  (on a CPU through CPU autocast); ``fp16`` on a CPU is refused (CPU autocast in fp16 is slow and lossy: use
  ``bf16`` there).  fp16 training uses a gradient scaler.
* The device is not part of an encoder's identity (the same weights give the same features, up to float
  rounding); the precision is part of the feature cache's key when it is not fp32
  (:func:`cache_identity`), so fp16 features are never served for an fp32 run or the other way round.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import EncoderError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")


class DeviceError(EncoderError):
    """A device or precision that this machine cannot give (named, with what to use instead)."""


@dataclass(frozen=True)
class Runtime:
    """A resolved device (``cpu``, ``cuda:0``, ``mps``) and a precision (``fp32``, ``fp16``, ``bf16``)."""

    device: str = "cpu"
    precision: str = "fp32"

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    @property
    def is_cuda(self) -> bool:
        return self.device_type == "cuda"

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "precision": self.precision}


_LOCK = threading.Lock()
_CURRENT: Runtime | None = None


def resolve_device(spec: str | None = "auto") -> str:
    """``auto|cpu|cuda[:N]|mps`` -> the device models run on (``cuda`` becomes ``cuda:<current>``).

    An unavailable device is a :class:`DeviceError` in one line."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    if not re.fullmatch(r"auto|cuda(:\d+)?|mps", spec):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    import torch

    if spec == "auto":
        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("mps requested but torch.backends.mps.is_available() is False")
        return "mps"
    if not torch.cuda.is_available():
        raise DeviceError(f"{spec} requested but torch.cuda.is_available() is False")
    n = torch.cuda.device_count()
    index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
    if index >= n:
        raise DeviceError(f"{spec} requested but only {n} CUDA device(s) are visible (cuda:0..cuda:{n - 1})")
    return f"cuda:{index}"


def check_precision(precision: str, device: str) -> str:
    """The precision, checked against the resolved device (fp16 on a CPU is refused)."""
    p = (precision or "fp32").strip().lower()
    if p not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    if p == "fp16" and device == "cpu":
        raise DeviceError("fp16 on cpu is not supported: use --precision bf16 (CPU autocast) or fp32")
    return p


def make_runtime(device: str | None = "auto", precision: str | None = "fp32") -> Runtime:
    """Resolve and check a device and a precision (see the module docstring)."""
    dev = resolve_device(device)
    return Runtime(dev, check_precision(precision or "fp32", dev))


def set_runtime(device: str | Runtime | None = "auto", precision: str | None = "fp32") -> Runtime:
    """Set the process's runtime (what models run on from now on); returns it."""
    global _CURRENT
    rt = device if isinstance(device, Runtime) else make_runtime(device, precision)
    with _LOCK:
        _CURRENT = rt
    return rt


def current_runtime() -> Runtime:
    """The runtime set last (by default ``auto`` / ``fp32``, resolved on first use)."""
    global _CURRENT
    if _CURRENT is None:
        rt = make_runtime("auto", "fp32")
        with _LOCK:
            if _CURRENT is None:
                _CURRENT = rt
    assert _CURRENT is not None
    return _CURRENT


def current_precision() -> str:
    """The precision set (``fp32`` when none was): no torch import."""
    return _CURRENT.precision if _CURRENT is not None else "fp32"


@contextlib.contextmanager
def use_runtime(device: str | Runtime | None = "auto", precision: str | None = "fp32") -> Iterator[Runtime]:
    """Run a block with a runtime, restoring the previous one after."""
    global _CURRENT
    before = _CURRENT
    rt = set_runtime(device, precision)
    try:
        yield rt
    finally:
        with _LOCK:
            _CURRENT = before


def autocast(rt: Runtime | None = None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the runtime's precision (nothing for fp32)."""
    rt = rt or current_runtime()
    if rt.precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if rt.precision == "bf16" else torch.float16
    return torch.autocast(device_type=rt.device_type, dtype=dtype)


def place(model: Any, device: str | None = None) -> Any:
    """Move a torch module to ``device`` (default: the runtime's) if it is not there yet; returns it."""
    import torch

    device = device or current_runtime().device
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    if first is None or first.device != torch.device(device):
        model.to(device)
    return model


def cache_identity(encoder: Any) -> str:
    """The feature cache's key of an encoder: its identity, plus the precision when a torch encoder runs
    at another precision than fp32 (fp16 features never mix with fp32 ones)."""
    identity = encoder.identity
    p = current_precision()
    if p != "fp32" and getattr(encoder, "runs_torch", False):
        return f"{identity}|precision={p}"
    return identity


def ray_gpus(requested: float = 0.0, rt: Runtime | None = None) -> float:
    """GPUs a Ray actor asks for: ``requested`` when given, else one when the runtime is CUDA, else none."""
    if requested:
        return float(requested)
    rt = rt or current_runtime()
    return 1.0 if rt.is_cuda else 0.0


def worker_runtime(rt: dict[str, str] | None) -> None:
    """In a Ray worker: take the driver's runtime (``Runtime.to_dict()``); Ray's ``CUDA_VISIBLE_DEVICES``
    makes the actor's GPU ``cuda:0``, so a CUDA device is re-resolved as ``cuda``."""
    if not rt:
        return
    device = "cuda" if rt["device"].startswith("cuda") else rt["device"]
    set_runtime(device, rt["precision"])

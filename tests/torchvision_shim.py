"""Test-only shim: lets ``import torchvision`` work when its C++ ops cannot load (never used by src/).

Why: the package registry of this project's CI has torch 2.13.0 only as the CPU build and torchvision 0.28.0 (the
matching release) only as the ``+cu130`` build.  That wheel's ``_C.so`` links ``libtorch_cuda.so``, so it cannot load
against the CPU torch.  torchvision tolerates that (``extension._has_ops()`` is then False, and every detection op
raises its own "Couldn't load custom C++ ops" error), except for two fake-tensor registrations that run unguarded at
import time: ``@torch.library.register_fake("torchvision::nms")`` and ``("torchvision::qnms")`` in
``torchvision/_meta_registrations.py``, which raise ``RuntimeError: operator torchvision::nms does not exist``.

What: before torchvision is first imported, and only if its ``_C`` library fails to load, this defines the schemas of
those two operators (copied from the ``_C.so`` of torchvision 0.28.0) with a kernel that raises NotImplementedError.
Nothing else changes: ``_has_ops()`` stays False, so the guarded registrations are skipped and the Python ops
(``torchvision.ops.nms``, ``roi_align``, ...) still raise torchvision's own error.  The image transforms and models that
timm and OpenCLIP use are pure Python on top of torch and PIL.

:func:`install` adds an import hook, so torch is imported only when something imports torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

# the operators that torchvision registers fake kernels for without checking that its C++ ops loaded
UNGUARDED_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

#: after the hook ran: None (nothing to do: torchvision absent or its C++ ops load), else why the ops were shimmed
state: dict[str, str | None] = {"shimmed": None}
_LIBS: list = []  # a torch.library.Library deregisters its definitions when collected


def _c_ops_error(pkg_dir: Path) -> str | None:
    """Why torchvision's ``_C`` extension does not load (None where it does), the way torchvision tries it."""
    import torch

    found = sorted(pkg_dir.glob("_C*.so")) + sorted(pkg_dir.glob("_C*.pyd"))
    if not found:
        return f"no _C extension in {pkg_dir}"
    try:
        torch.ops.load_library(str(found[0]))
    except (ImportError, OSError) as e:
        return f"{found[0].name}: {' '.join(str(e).split())[:200]}"
    return None


def _not_implemented(name: str):
    def kernel(*args, **kwargs):
        raise NotImplementedError(
            f"torchvision::{name} is a test shim's placeholder: this torchvision's C++ ops did not load "
            "(tests/torchvision_shim.py); detection ops are not available"
        )

    return kernel


def define_missing_ops(pkg_dir: Path) -> str | None:
    """Define the unguarded operators if torchvision's C++ ops do not load; returns why, or None."""
    import torch

    why = _c_ops_error(pkg_dir)
    if why is None:
        return None
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in UNGUARDED_SCHEMAS.items():
        if hasattr(torch.ops.torchvision, name):  # defined already (a second install)
            continue
        lib.define(schema)
        lib.impl(name, _not_implemented(name), "CompositeExplicitAutograd")
    _LIBS.append(lib)
    return why


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # once; then let the ordinary finders find it
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            state["shimmed"] = define_missing_ops(Path(next(iter(spec.submodule_search_locations))))
        return spec


def install() -> None:
    """Run :func:`define_missing_ops` right before torchvision is first imported (no-op if it already is)."""
    if "torchvision" in sys.modules or any(isinstance(f, _Hook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Hook())


def import_or_skip(module: str):
    """``module`` (timm, open_clip) imported, or the test skipped with the exact reason: never an error.

    ``pytest.importorskip`` catches ImportError only; a torchvision that fails at import time raises RuntimeError.
    """
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError on a mismatched build
        shim = f"; torchvision's C++ ops: {state['shimmed']}" if state["shimmed"] else ""
        pytest.skip(f"cannot import {module} ({type(e).__name__}: {' '.join(str(e).split())[:300]}){shim}")

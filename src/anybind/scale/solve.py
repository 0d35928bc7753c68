"""One solve shared by every worker of a distributed streaming run (:func:`solve_once`; the projector state the
streaming trainer hands around with a kernel branch in it is :func:`anybind.projectors.start_state`'s).

Split out of :mod:`anybind.scale.train` (which re-exports :func:`solve_once`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .. import errors

__all__ = ["broadcast_", "group_device", "solve_once"]


def solve_once(solve: Callable[[], Any], projectors: Mapping[str, nn.Module], distributed: bool) -> Any:
    """``solve()`` (which sets ``projectors``' weights, e.g. the ridge start re-solved after the attention phase)
    run on rank 0 only, its result handed to every worker: its return value and every projector's parameters and
    buffers, broadcast (a kernel branch the solve set, changed or removed first: its shape and temperature, so that
    every worker holds rank 0's branch).  Each worker would solve the same normal equations over the same shards
    (every worker reads all of them), so the result is what each would have computed, at one worker's cost.  A solve
    that fails on rank 0 raises the same error on every worker (none is left waiting): rank 0 raises its own, the
    others anybind's error of the same class, or a RuntimeError naming any other class, with its message.  Not
    distributed: ``solve()``.  The tensors go through the process group's device (:func:`broadcast_`): under nccl the
    projectors are on the CPU here, after the attention phase's loop."""
    if not distributed:
        return solve()
    import torch.distributed as dist

    box: list[Any] = [None]
    mine: Exception | None = None  # rank 0's own error, raised as it is
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", solve(), {m: _branches(pr) for m, pr in projectors.items()})
        except Exception as e:  # noqa: BLE001 -- handed to the other workers, then raised here too
            box[0] = ("error", _portable(e), None)
            mine = e
    dist.broadcast_object_list(box, src=0)
    kind, value, branches = box[0]
    if kind == "error":
        dist.barrier()  # every worker past the broadcast before any leaves (and may tear the group down)
        raise mine if mine is not None else _rebuilt(*value)
    with torch.no_grad():
        for m, pr in projectors.items():
            if _branches(pr) != branches.get(m, NO_BRANCHES):  # this worker's branches take rank 0's shapes
                _take_shapes(pr, branches.get(m, NO_BRANCHES))
            for _, t in sorted((*pr.named_parameters(), *pr.named_buffers()), key=lambda kv: kv[0]):
                broadcast_(t.data, 0)
    return value


def group_device(t: torch.Tensor) -> torch.device:
    """The device a collective of the live process group takes ``t`` on: this process's GPU for a CPU tensor under
    nccl (which takes CUDA tensors only), else ``t``'s own (gloo takes CPU tensors)."""
    import torch.distributed as dist

    if t.device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``dist.broadcast`` of ``t`` from rank ``src``, in place, on the device the process group takes
    (:func:`group_device`): the streaming trainer's projectors and temperature are back on the CPU after each loop
    (:func:`anybind.loop.fit_loop` moves them back), so under nccl a CPU tensor goes to this process's GPU for the
    broadcast and rank ``src``'s value comes back into it (it failed: "No backend type associated with device type
    cpu").  Returns ``t``."""
    import torch.distributed as dist

    dev = group_device(t)
    if dev == t.device:
        dist.broadcast(t, src)
        return t
    buf = t.to(dev)
    dist.broadcast(buf, src)
    t.copy_(buf)
    return t


#: a projector with neither fixed branch
NO_BRANCHES: tuple[Any, Any] = (None, None)


def _branches(pr: nn.Module) -> tuple[tuple[int, float] | None, tuple[int, int, float, int] | None]:
    """A projector's fixed branches' shapes: its kernel branch (support size, temperature) and its base gate
    (:mod:`anybind.base_gate`: support rows, base width, quantile, references), each None where it has none."""
    cfg = getattr(pr, "cfg", None)
    kernel = (int(cfg.kernel), float(cfg.kernel_tau)) if getattr(cfg, "kernel", 0) else None
    if not getattr(cfg, "gate", 0):
        return kernel, None
    return kernel, (int(cfg.gate), int(cfg.gate_base), float(cfg.gate_q), int(cfg.gate_refs))


def _take_shapes(pr: nn.Module, shapes: tuple[Any, Any]) -> None:
    """Give ``pr`` placeholder branches of ``shapes`` (:func:`_branches`'; their values come with the broadcast that
    follows), on the device its model lives on (DDP's); both removed first (a gate and a kernel never coexist)."""
    (kernel, gate), dev = shapes, next(iter(pr.state_dict().values())).device
    pr.set_kernel(None).set_gate(None)
    if kernel is not None:
        n, tau = kernel
        pr.set_kernel(torch.ones(n, pr.cfg.feat_dim), torch.zeros(n, pr.cfg.out_dim), tau)
    if gate is not None:
        n, base, q, refs = gate
        pr.set_gate(torch.ones(n, base), torch.zeros(refs), base, q)
    pr.to(dev)


def _portable(e: Exception) -> tuple[str, str]:
    """What :func:`solve_once` broadcasts of rank 0's error: its class name and one-line message (plain strings,
    so the other workers unpickle nothing but text, whatever the error holds: a lock, a handle, a constructor
    that wants more arguments)."""
    return type(e).__name__, " ".join(str(e).split())


def _rebuilt(name: str, message: str) -> Exception:
    """The error another worker raises for rank 0's: the same class when it is one of anybind's own (they take
    one message), else a RuntimeError naming the class."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.AnybindError):
        return cls(message)
    return RuntimeError(f"{name}: {message}")

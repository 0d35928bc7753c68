"""The streaming trainer's broadcasts under nccl: after each loop (:func:`anybind.loop.fit_loop`) the projectors
and the temperature are back on the CPU, and the attention phase's shared ridge refit (:func:`solve_once`) and the
val score broadcast them from there -- nccl takes CUDA tensors only ("No backend type associated with device type
cpu").  :func:`anybind.scale.solve.broadcast_` sends a CPU tensor through this process's GPU under nccl and back;
under gloo it broadcasts the tensor as it is (two CPU processes, below)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import torch

from anybind.projectors import Projector, ProjectorConfig

from test_scale_solve_once_errors import _free_port


def test_a_cpu_tensor_takes_the_gpu_under_nccl_and_stays_put_under_gloo(monkeypatch):
    import torch.distributed as dist

    from anybind.scale.solve import group_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    assert group_device(torch.zeros(2)) == torch.device("cuda", 1)
    assert group_device(torch.zeros(2, device="meta")) == torch.device("meta")  # not a CPU tensor: as it is
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "gloo")
    assert group_device(torch.zeros(2)) == torch.device("cpu")


def _worker(rank: int, world: int, port: int, out: str, backend: str) -> None:
    """One worker: a projector on the CPU (where fit_loop leaves it), rank 0's solve sets its weights and a kernel
    branch, shared with solve_once; then a val score broadcast from rank 0."""
    import torch.distributed as dist

    from anybind.scale.solve import broadcast_, solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        torch.manual_seed(rank)  # every worker's weights differ before the solve
        pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()

        def solve():
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                pr.linear.weight.copy_(torch.randn(4, 6, generator=g))
            pr.set_kernel(torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g), 0.5)
            return "solved"

        got = solve_once(solve if rank == 0 else (lambda: "not me"), {"image": pr}, True)
        score = float(broadcast_(torch.tensor([0.25 + rank], dtype=torch.float64), 0)[0])
        devices = sorted({str(t.device) for t in (*pr.parameters(), *pr.buffers())})
        y = pr(torch.linspace(-1, 1, 12).reshape(2, 6))
        Path(f"{out}/{rank}.json").write_text(json.dumps({"got": got, "score": score, "devices": devices,
                                                          "kernel": pr.cfg.kernel, "y": y.tolist()}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _check(out: Path, world: int) -> None:
    runs = [json.loads((out / f"{r}.json").read_text()) for r in range(world)]
    for r in runs:
        assert r["got"] == "solved" and r["score"] == 0.25 and r["kernel"] == 5 and r["devices"] == ["cpu"]
        assert r["y"] == runs[0]["y"]  # rank 0's function on every rank, bit for bit


def test_cpu_tensors_are_shared_over_gloo_by_two_processes(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path), "gloo"), nprocs=2)
    _check(tmp_path, 2)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.distributed.is_nccl_available()),
                    reason="nccl needs a CUDA GPU")
def test_cpu_tensors_are_shared_over_nccl(tmp_path):
    """One process per GPU (one process where there is one GPU: the collectives still refuse a CPU tensor)."""
    world = min(2, torch.cuda.device_count())
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(tmp_path), "nccl"), nprocs=world)
    _check(tmp_path, world)

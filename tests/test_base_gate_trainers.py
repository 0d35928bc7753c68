"""The base-encoder block's gate (anybind.base_gate) where a solve hands it around: every rank of a distributed run
holds rank 0's gate after a shared solve (set, dropped, or traded with a kernel branch either way), and an attention
refit dropped on val gives back the gate it replaced."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from anybind.projectors import Projector, ProjectorConfig
from test_scale_solve_once_errors import _free_port


def _projector() -> Projector:
    return Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()


def _gate(pr: Projector, n: int, g: torch.Generator | None = None, q: float = 0.5) -> None:
    pr.set_gate(F.normalize(torch.randn(n, 3, generator=g), dim=-1), torch.sort(torch.rand(4, generator=g)).values, 3, q)


def _worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    import torch.distributed as dist

    from anybind.scale.train import solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        torch.manual_seed(rank)  # every worker's weights (and gate) differ before the solve
        pr = _projector()
        if case in ("drop", "to_kernel") or (case == "set" and rank == 1):
            _gate(pr, 2 + rank, q=0.25 + rank / 4)  # rank 1's of another size and quantile
        if case == "from_kernel" and rank == 1:
            pr.set_kernel(torch.randn(3, 6), torch.randn(3, 4), 0.3)

        def solve():  # what the ridge start does on rank 0: new weights, its gate set or removed (a kernel instead)
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                pr.linear.weight.copy_(torch.randn(4, 6, generator=g))
            pr.set_kernel(None).set_gate(None)
            if case in ("set", "from_kernel"):
                _gate(pr, 5, g)
            elif case == "to_kernel":
                pr.set_kernel(torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g), 0.5)
            return "solved"

        got = solve_once(solve if rank == 0 else (lambda: "not me"), {"image": pr}, True)
        y = pr(torch.linspace(-1, 1, 18).reshape(3, 6) * torch.tensor([[1.0], [5.0], [-3.0]]))
        Path(f"{out}/{rank}.json").write_text(json.dumps({
            "got": got, "gate": [pr.cfg.gate, pr.cfg.gate_base, pr.cfg.gate_q, pr.cfg.gate_refs],
            "kernel": pr.cfg.kernel, "y": y.tolist(), "buffers": sorted(k for k, _ in pr.named_buffers())}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", ["set", "drop", "from_kernel", "to_kernel"])
def test_every_rank_holds_rank_0s_gate_after_a_shared_solve(tmp_path, case):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path), case), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["got"] == r1["got"] == "solved"
    assert r0["gate"] == r1["gate"] == ([5, 3, 0.5, 4] if case in ("set", "from_kernel") else [0, 0, 0.0, 0])
    assert r0["kernel"] == r1["kernel"] == (5 if case == "to_kernel" else 0)
    assert r0["buffers"] == r1["buffers"]
    assert r0["y"] == r1["y"]  # the same function on both ranks, bit for bit


@pytest.mark.parametrize("refit_does", ["drop", "resize", "kernel"])
def test_a_refit_dropped_on_val_gives_back_the_gate_it_replaced(refit_does):
    from anybind.attention import refit_after_attention

    pr = _projector()
    _gate(pr, 5, torch.Generator().manual_seed(0), q=0.3)
    x = torch.randn(3, 6) * torch.tensor([[1.0], [4.0], [-2.0]])
    want, cfg = pr(x), pr.cfg

    def refit():
        with torch.no_grad():
            pr.linear.weight.add_(1.0)
        pr.set_gate(None)
        if refit_does == "resize":
            _gate(pr, 7)
        elif refit_does == "kernel":
            pr.set_kernel(torch.randn(7, 6), torch.randn(7, 4), 1.0)
        return {"refit": True}

    phase = {"best_val": 0.9}
    assert refit_after_attention({"image": pr}, phase, refit, lambda epoch: 0.5) is None
    assert phase["ridge_refit"].startswith("dropped") and pr.cfg == cfg
    assert torch.equal(pr(x), want)

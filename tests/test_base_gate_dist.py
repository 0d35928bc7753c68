"""A distributed solve hands rank 0's base gate (anybind.base_gate) to every worker: its shape first, then its
buffers (a worker without it, or with another, would broadcast mismatched tensors)."""

import datetime
import json
import os
from pathlib import Path

import pytest
import torch

from anybind.projectors import Projector, ProjectorConfig, load_start_state, start_state
from test_scale_solve_once_errors import _free_port


def _worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    import torch.distributed as dist

    from anybind.scale.train import solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        torch.manual_seed(rank)
        pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
        if case == "drop" or rank == 1:  # rank 1 holds a gate of another size, or rank 0 drops its gate
            pr.set_gate(torch.nn.functional.normalize(torch.randn(3 + rank, 4), dim=-1), torch.rand(2 + rank).sort().values,
                        4, 0.5)

        def solve():
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                pr.linear.weight.copy_(torch.randn(4, 6, generator=g))
            if case == "drop":
                pr.set_gate(None)
            else:
                pr.set_gate(torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1),
                            torch.rand(3, generator=g).sort().values, 4, 0.2)
            return "solved"

        got = solve_once(solve if rank == 0 else (lambda: "not me"), {"image": pr}, True)
        y = pr(torch.linspace(-1, 1, 12).reshape(2, 6))
        Path(f"{out}/{rank}.json").write_text(json.dumps({"got": got, "gate": [pr.cfg.gate, pr.cfg.gate_base,
                                                                               pr.cfg.gate_q, pr.cfg.gate_refs],
                                                          "y": y.tolist()}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", ["set", "drop"])
def test_every_rank_holds_rank_0s_gate_after_a_shared_solve(tmp_path, case):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path), case), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["got"] == r1["got"] == "solved"
    assert r0["gate"] == r1["gate"] == ([5, 4, 0.2, 3] if case == "set" else [0, 0, 0.0, 0])
    assert r0["y"] == r1["y"]  # the same function on both ranks, bit for bit


def test_the_start_state_carries_the_gate_to_a_projector_without_one():
    """What the streaming trainer hands Ray's workers (tensors only): the gate's width and quantile ride along."""
    torch.manual_seed(0)
    a = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    a.set_gate(torch.nn.functional.normalize(torch.randn(5, 4), dim=-1), torch.rand(3).sort().values, 4, 0.2)
    b = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    load_start_state(b, start_state(a))
    x = torch.randn(7, 6)
    assert b.cfg == a.cfg and torch.equal(b(x), a(x))
    load_start_state(b, start_state(Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear"))))
    assert b.cfg.gate == 0 and not hasattr(b, "gate_support")

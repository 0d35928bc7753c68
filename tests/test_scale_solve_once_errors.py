""":func:`anybind.scale.train.solve_once`: a solve that fails on rank 0 fails every worker, none left waiting,
even when its error cannot be pickled (broadcast as its type and message)."""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Unpicklable(RuntimeError):
    """An error holding what pickle refuses (a lock)."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.lock = threading.Lock()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from anybind.scale.train import solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
    try:
        def bad():
            raise _Unpicklable("solver state lost")
        try:
            solve_once(bad if rank == 0 else (lambda: None), {}, True)
            got = "no error"
        except Exception as e:  # noqa: BLE001 -- what each worker saw, written for the test
            got = f"{type(e).__name__}: {e}"
        Path(f"{out}/{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()


def test_an_unpicklable_error_on_rank_0_fails_every_worker_with_its_message(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == "_Unpicklable: solver state lost"
    assert "solver state lost" in got[1] and "_Unpicklable" in got[1]

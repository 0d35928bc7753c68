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


class _NeedsTwo(RuntimeError):
    """An error that pickles but whose constructor wants two arguments (it would not unpickle)."""

    def __init__(self, what: str, why: str):
        super().__init__(f"{what}: {why}")


def _raise(kind: str):
    from anybind.errors import DataError

    if kind == "unpicklable":
        raise _Unpicklable("solver state lost")
    if kind == "needs-two":
        raise _NeedsTwo("solver", "state\nlost")
    raise DataError("shard 3: solver state lost")


def _worker(rank: int, world: int, port: int, out: str, kind: str = "unpicklable") -> None:
    import torch.distributed as dist

    from anybind.scale.train import solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
    try:
        def bad():
            _raise(kind)
        try:
            solve_once(bad if rank == 0 else (lambda: None), {}, True)
            got = "no error"
        except Exception as e:  # noqa: BLE001 -- what each worker saw, written for the test
            got = f"{type(e).__name__}: {e}"
        Path(f"{out}/{rank}.json").write_text(json.dumps(got))
        dist.barrier()  # both workers past the broadcast before either tears gloo down
    finally:
        dist.destroy_process_group()


def test_an_unpicklable_error_on_rank_0_fails_every_worker_with_its_message(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == "_Unpicklable: solver state lost"
    assert "solver state lost" in got[1] and "_Unpicklable" in got[1]


def _run(tmp_path, kind: str) -> list[str]:
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path), kind), nprocs=2)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]


def test_other_workers_raise_anybinds_own_error_class_and_others_by_name(tmp_path):
    """Only text crosses between workers: anybind's own error comes back as its class, an error that pickles but
    would not unpickle (its constructor wants two arguments) as a RuntimeError naming it, on one line."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _run(tmp_path / "a", "data") == ["DataError: shard 3: solver state lost"] * 2
    got = _run(tmp_path / "b", "needs-two")
    assert got[0] == "_NeedsTwo: solver: state\nlost"
    assert got[1] == "RuntimeError: _NeedsTwo: solver: state lost"

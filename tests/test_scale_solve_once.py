"""Under Ray Train (DDP), the ridge map re-solved after the attention phase is solved on one worker and
broadcast, not once per worker; the trained result is the same as when every worker solved it (issue 17)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from anybind.errors import DataError

FRAMES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, shards_dir: str, out: str) -> None:
    """One DDP worker (gloo): the streaming trainer twice, the re-solve shared (the library) and solved by every
    worker (as before); its ridge solves counted, its states written as safetensors, its records as JSON."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    import anybind.scale.train as st
    from anybind.scale.stream import TrainingShards
    from anybind.train import TrainConfig

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = TrainConfig(epochs=2, attn_epochs=2, patience=5, batch_size=32, dim=8, hidden=16, seed=0,
                          init="ridge", lock="text", threads=1)
        shards = TrainingShards.open(shards_dir)
        stats = st.shard_stats(shards)
        start, _ = st.ridge_init(shards, cfg, stats)
        solves, ridge, shared = [], st.ridge_start, st.solve_once
        st.ridge_start = lambda *a, **k: (solves.append(1), ridge(*a, **k))[1]
        runs = {}
        for name, solve_once in (("shared", shared), ("each", lambda solve, projectors, distributed: solve())):
            st.solve_once, solves[:] = solve_once, []
            res = st.train_streaming(shards, cfg, rank=rank, world=world, stats=stats, init=start, progress=False)
            save_file({f"{m}.{k}": v.contiguous() for m, sd in res["state"].items() for k, v in sd.items()},
                      f"{out}/{name}-{rank}.safetensors")
            runs[name] = {"solves": len(solves), "robust": res["robust"], "history": res["history"],
                          "logit_scale": res["logit_scale"], "best_epoch": res["best_epoch"]}
        # a solve that fails on rank 0 fails every worker with its message, none left waiting
        def bad():
            raise DataError("no ridge today")
        try:
            shared(bad if rank == 0 else (lambda: None), {}, True)
        except DataError as e:
            runs["error"] = str(e)
        Path(f"{out}/{rank}.json").write_text(json.dumps(runs, default=str))
        dist.barrier()  # both workers past the last collective before either tears gloo down (a teardown race aborted one)
    finally:
        dist.destroy_process_group()
    # gloo's threads joined by the teardown, none left to run into interpreter shutdown (test_scale_group_teardown)
    tasks = Path("/proc/self/task")
    left = [n for t in tasks.iterdir() if "gloo" in (n := _comm(t))] if tasks.is_dir() else []
    Path(f"{out}/{rank}-left.json").write_text(json.dumps(left))


def _comm(task: Path) -> str:
    try:
        return (task / "comm").read_text().strip()
    except OSError:  # the thread ended
        return ""


def test_the_ridge_refit_after_the_attention_phase_is_solved_once_and_shared(tmp_path):
    pytest.importorskip("av")
    from safetensors.torch import load_file
    from video_helpers import one_frame_corpus

    from anybind.cache import FeatureCache
    from anybind.manifests import as_manifests
    from anybind.scale.shard_write import write_training_shards

    manifest, specs = one_frame_corpus(tmp_path / "clips", n=60, frames=FRAMES)
    specs["video"] = f"video:frames(callable:video_helpers:rgb_stats)@fps=4,max={FRAMES},pool=attn"
    shards = write_training_shards(as_manifests(manifest, None, specs, False, False), specs,
                                   FeatureCache(tmp_path / "cache"), tmp_path / "shards", progress=False)
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(shards.path), str(tmp_path)), nprocs=2)
    runs = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert [json.loads((tmp_path / f"{r}-left.json").read_text()) for r in (0, 1)] == [[], []]
    assert [r["shared"]["solves"] for r in runs] == [1, 0]  # rank 0 solved, rank 1 received
    assert [r["each"]["solves"] for r in runs] == [1, 1]
    assert all("ridge_refit" in r[n]["robust"]["attention_phase"] for r in runs for n in ("shared", "each"))
    states = {(n, r): load_file(str(tmp_path / f"{n}-{r}.safetensors")) for n in ("shared", "each") for r in (0, 1)}
    ref = states["each", 0]
    assert ref.keys() and any(k.startswith("video.attn") for k in ref)
    for key, sd in states.items():  # every worker, either way: the same weights to the bit
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref), key
    for r in runs:
        assert {k: v for k, v in r["shared"].items() if k != "solves"} == \
               {k: v for k, v in r["each"].items() if k != "solves"}
        assert r["error"] == "no ridge today"
    assert np.isfinite(runs[0]["shared"]["logit_scale"])

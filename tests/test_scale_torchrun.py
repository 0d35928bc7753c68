"""``anybind fit`` under torchrun (issue 17: DDP on several nodes): two one-process "nodes" on this machine (gloo,
CPU, ``--nnodes 2 --node-rank 0/1``, a rendezvous port from the OS) train the same weights, bit for bit, as one node
running two processes; every node has a ``LOCAL_RANK`` 0, and only global rank 0 writes (the space, the feature
cache, the training shards) and reports.  Each launch runs under a timeout and is killed with its whole session
after it, so a stuck rendezvous cannot hang the suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from anybind import Space
from anybind.errors import DataError
from anybind.scale.launch import Launch, torchrun_launch
from scale_helpers import synthetic_corpus

TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))  # this anybind, the helpers
    env["OMP_NUM_THREADS"] = "1"  # torchrun sets it for several processes a node only: the same in every layout
    return env


def _launch(torchrun: list[str], manifest: Path, encoders: dict[str, str], cache: Path, out: Path):
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", "anybind", "fit", str(manifest),
           *[x for m, s in encoders.items() for x in ("-e", f"{m}={s}")], "--cache", str(cache), "--out", str(out),
           "--recipe", "plain", "--epochs", "2", "--batch-size", "64", "--dim", "8", "--seed", "0"]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(procs) -> list[str]:
    """Every launch's output once it has ended (each killed with its session past the timeout); each must succeed."""
    outs = []
    try:
        for p in procs:
            try:
                outs.append(p.communicate(timeout=TIMEOUT_S)[0])
            except subprocess.TimeoutExpired:
                pytest.fail(f"torchrun did not finish within {TIMEOUT_S} s: {p.args}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    return outs


def test_two_nodes_train_the_one_node_weights_and_only_global_rank_0_writes(tmp_path):
    manifest, encoders = synthetic_corpus(tmp_path / "syn", n=300)
    port = _free_port()
    nodes = [_launch(["--nnodes", "2", "--node-rank", str(r), "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
                      "--master-port", str(port)], manifest, encoders, tmp_path / f"cache{r}", tmp_path / f"out{r}")
             for r in (0, 1)]
    two = _finish(nodes)
    one = _finish([_launch(["--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                            "--master-port", str(_free_port())], manifest, encoders, tmp_path / "cache", tmp_path / "one")])
    a, b = Space.load(tmp_path / "out0"), Space.load(tmp_path / "one")
    for m in encoders:
        sa, sb = a.projectors[m].state_dict(), b.projectors[m].state_dict()
        assert sa.keys() == sb.keys() and all(sa[k].equal(sb[k]) for k in sa), m
    assert a.logit_scale == b.logit_scale and a.info["training"]["history"] == b.info["training"]["history"]
    assert a.info["training"]["workers"] == 2 and a.info["lineage"][-1]["trainer"] == "torchrun x2"
    # node 1 (RANK 1, LOCAL_RANK 0) wrote nothing: no space at its --out, no cache, no shards; it reported nothing
    assert not (tmp_path / "out1").exists() and not (tmp_path / "cache1").exists()
    assert "saved" in two[0] and "saved" not in two[1] and one[0].count("saved ") == 1, two[1][-2000:]
    assert (tmp_path / "cache0" / "training").is_dir()


@pytest.mark.parametrize("env, why", [
    ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset"),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "not numeric"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
])
def test_an_environment_torchrun_would_not_leave_is_refused_in_one_line(env, why):
    with pytest.raises(DataError) as ei:
        torchrun_launch(env)
    assert why in str(ei.value) and "\n" not in str(ei.value)


def test_the_global_rank_is_read_apart_from_the_local_one():
    base = {"MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert torchrun_launch({}) is None
    assert torchrun_launch({**base, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None  # nothing to share
    got = torchrun_launch({**base, "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert got == Launch(rank=3, world=4, local_rank=1) and not got.leader


def _failing_worker(rank: int, world: int, ports: list[int], manifest: str, encoders: dict, tmp: str) -> None:
    """One process of a torchrun-like job (gloo) calling ``fit_sharded(launch=...)`` twice: once with a manifest
    that does not exist (rank 0's preparation fails), once where rank 1 cannot read the shards rank 0 wrote (as on a
    node without the shared storage); what each process raised, written for the test."""
    import anybind.scale.sharded as sh
    from anybind.errors import DataError as Refused

    got = []
    for port, what in zip(ports, ("no manifest", "shards unseen", "shards odd")):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if what == "shards unseen" and rank == 1:
            def unseen(path):
                raise Refused(f"{path}: not a training-shards folder (no meta.json)")
            sh.TrainingShards.open = unseen
        if what == "shards odd" and rank == 1:  # not an error anybind names: it must still reach rank 0 (agree)
            def odd(path):
                raise KeyError("shards")
            sh.TrainingShards.open = odd
        try:
            sh.fit_sharded(manifest if what != "no manifest" else f"{tmp}/missing.jsonl", encoders=encoders,
                           cache=f"{tmp}/cache", launch=Launch(rank, world, rank), recipe="plain", epochs=1,
                           batch_size=64, dim=8, progress=False)
            got.append("no error")
        except Refused as e:
            got.append(str(e))
    Path(f"{tmp}/{rank}.txt").write_text("\n".join(got))


def test_a_failure_on_one_rank_stops_every_rank_in_one_line(tmp_path):
    import torch

    manifest, encoders = synthetic_corpus(tmp_path / "syn", n=200)
    torch.multiprocessing.spawn(_failing_worker, nprocs=2, join=True,
                                args=(2, [_free_port() for _ in range(3)], str(manifest), encoders, str(tmp_path)))
    for r in (0, 1):
        missing, unseen, odd = (tmp_path / f"{r}.txt").read_text().split("\n")
        assert odd.startswith("rank 1 of 2: cannot read the training shards rank 0 wrote (KeyError: 'shards')"), odd
        assert "missing.jsonl" in missing and "does not exist" in missing
        assert unseen.startswith("rank 1 of 2: cannot read the training shards rank 0 wrote")
        assert "(--cache or $ANYBIND_CACHE) on storage every node mounts at the same path" in unseen, unseen


def _joined(monkeypatch, value: str | None) -> dict:
    """What ``process_group`` hands ``init_process_group`` with ``ANYBIND_DIST_TIMEOUT`` set to ``value``."""
    import torch.distributed as dist

    from anybind.scale.launch import process_group

    got: dict = {}
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: got.update(kw))
    monkeypatch.setattr(dist, "barrier", lambda *a, **kw: None)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **kw: None)
    if value is None:
        monkeypatch.delenv("ANYBIND_DIST_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("ANYBIND_DIST_TIMEOUT", value)
    with process_group(Launch(1, 2, 0)):
        pass
    return got


def test_the_ranks_wait_for_rank_0s_preparation_as_long_as_anybind_dist_timeout_says(monkeypatch):
    """The other ranks wait in a collective while rank 0 encodes and writes the shards, which on a large corpus
    outlasts torch's 30 min default: ANYBIND_DIST_TIMEOUT (seconds) sets the group's timeout."""
    from datetime import timedelta

    assert _joined(monkeypatch, "7200")["timeout"] == timedelta(seconds=7200)
    assert _joined(monkeypatch, None)["timeout"] >= timedelta(minutes=30)
    for bad in ("soon", "0", "-5"):
        with pytest.raises(DataError) as ei:
            _joined(monkeypatch, bad)
        assert "ANYBIND_DIST_TIMEOUT" in str(ei.value) and repr(bad) in str(ei.value) and "\n" not in str(ei.value)


def test_a_one_process_torchrun_job_trains_streaming_as_every_torchrun_job_does(tmp_path, monkeypatch):
    """``torchrun --nproc-per-node 1`` (WORLD_SIZE=1: nothing to coordinate) still implies --stream, as the README
    and --help say of torchrun: the same trainer as two processes, not the in-memory fit of a corpus larger than RAM."""
    from typer.testing import CliRunner

    from anybind.cli import app

    manifest, encoders = synthetic_corpus(tmp_path / "syn", n=120)
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    args = ["fit", str(manifest), *[x for m, s in encoders.items() for x in ("-e", f"{m}={s}")], "--cache",
            str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--recipe", "plain", "--epochs", "1", "--dim", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trainer: streaming" in " ".join(res.output.split()), res.output
    assert Space.load(tmp_path / "out").info["lineage"][-1]["trainer"] == "streaming"


def test_from_pretrained_under_torchrun_is_refused_before_every_rank_saves_the_same_space(tmp_path, monkeypatch):
    """``--from-pretrained`` trains nothing: under torchrun every process would import the pair and save it to the
    same --out (the second finding the first's space there); refused in one line naming torchrun."""
    from typer.testing import CliRunner

    from anybind.cli import app

    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["fit", "--from-pretrained", f"clip={tmp_path / 'clip'}", "--out",
                                   str(tmp_path / "out")])
    assert res.exit_code != 0 and "without torchrun" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "out").exists()

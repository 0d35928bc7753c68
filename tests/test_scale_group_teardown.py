"""A process group anybind's streaming trainer ran in (DDP, gradients all-gathered) is freed by
``destroy_process_group``: gloo's worker threads are joined then, not left running into interpreter shutdown, where
one letting go of a finished collective's tensor takes the GIL and the process aborts ("terminate called without
an active exception": the flaky abort of ``test_scale_solve_once`` under load, issue 15).  torch's differentiable
collectives hold the group live when they are imported as a default argument; anybind imports them first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# one process, as a user's worker: the trainer imported, then two process groups one after the other, each used by
# DDP and the trainer's all-gather and destroyed; which gloo threads are left after each teardown
SCRIPT = r"""
import json, os, sys
import anybind.scale.train as st
import torch
import torch.distributed as dist
from torch import nn

def gloo_threads():
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{t}/comm").read().strip())
        except OSError:
            pass
    return sorted(n for n in names if "gloo" in n)

out = {}
for i in range(2):
    store = dist.FileStore(os.path.join(sys.argv[1], f"store{i}"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    model = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))
    y = st._gather(model(torch.ones(4, 3)))
    y.sum().backward()
    out[f"rows{i}"] = len(y)
    out[f"live{i}"] = gloo_threads()
    del model, y
    dist.destroy_process_group()
    out[f"left{i}"] = gloo_threads()
    print(json.dumps(out), flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc (Linux)")
def test_destroying_the_group_after_ddp_and_the_gather_joins_gloos_threads(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["live0"] and got["live1"]  # gloo's threads were there while each group was live
    assert got["left0"] == [] and got["left1"] == []  # and joined when it was destroyed
    assert got["rows0"] == got["rows1"] == 4  # the second group's gather ran over that group

"""The kernel start on Ray Train (issue 16): the driver fits the start once, its kernel branch included, and every
worker trains from it (the branch goes to the workers as safetensors with its temperature beside the buffers and
comes back the same way)."""

import pytest
import torch
from scale_helpers import within

from test_kernel_start_trainers import tux200  # noqa: F401 -- the module fixture: 200 real Tux Paint stamps

pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time (conftest.py)


def test_ray_train_workers_start_from_the_drivers_kernel_branch(ray_local, tux200, shared_cache):  # noqa: F811
    from anybind.scale.sharded import fit_sharded

    kw = dict(modalities=["image", "text"], cache=shared_cache, progress=False, rows_per_shard=50,
              shuffle_buffer=1000, epochs=0, seed=0)
    ray_space = within(300, fit_sharded, tux200.path, ray_workers=2, **kw)
    local = fit_sharded(tux200.path, **kw)
    rec = ray_space.info["lineage"][-1]["ridge_start"]["image"]["kernel"]
    assert rec["kept"] is True and ray_space.projectors["image"].cfg.kernel == rec["support"] == 160
    assert ray_space.projectors["image"].cfg.kernel_tau == local.projectors["image"].cfg.kernel_tau == rec["tau"]
    sd, want = ray_space.state_dict(), local.state_dict()
    assert sd.keys() == want.keys() and all(torch.equal(v, sd[k]) for k, v in want.items())

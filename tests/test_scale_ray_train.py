"""Training on Ray (anybind.scale.sharded, Ray Train workers) gives what one process gives.  Split from
``test_scale_ray.py`` when each module started its own local Ray: in one Ray session a Ray Data actor pool left by
the encode tests could still hold one of the 2 CPUs when Ray Train asked for 2 workers, and the trainer waited for
them until the test timed out (seen in CI).  The library now waits a bounded time and sizes the workers to the free
CPUs (``test_scale_ray_session.py``), and the shared Ray of the scale modules (``ray_local``) starts each module with
every CPU free again.  Tolerances: see scale_helpers."""

import shutil
from pathlib import Path

import pytest
from scale_helpers import (
    CLIP_FRAMES,
    FIT,
    TOL,
    attends_to_the_signal_frame,
    recalls,
    within,
)

# under pytest-xdist the Ray modules run on one worker, one after the other (conftest.py): one local Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

# each fit on Ray Train runs under the thread guard (pytest-timeout's alarm is not acted on while the main thread
# waits inside Ray Train): a trainer that waits forever fails its test after this many seconds, not the whole run
RAY_FIT_S = 300


def test_ray_train_matches_single_process_training(ray_local, syn):
    from anybind.scale.sharded import fit_sharded

    space = within(RAY_FIT_S, fit_sharded, syn["manifest"], encoders=syn["encoders"], cache=syn["cache"],
                   progress=False, ray_workers=2, rows_per_shard=100, shuffle_buffer=1000, **FIT)
    tr = space.info["training"]
    assert tr["workers"] == 2 and tr["ray_workers"] == 2 and space.info["lineage"][-1]["trainer"] == "ray-train x2"
    rec = recalls(space, syn["manifest"], syn["cache"])
    for k, v in syn["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    # the saved space works like any other
    assert space.embed("a", ["r0001"], cache=syn["cache"]).shape == (1, 32)
    shutil.rmtree(Path(tr["shards"]).parent / "_ray_runs", ignore_errors=True)


def test_ray_train_workers_start_from_the_drivers_ridge_start(ray_local, syn):
    """init='ridge' on Ray Train: the driver streams the ridge start once and every worker starts from it."""
    import torch

    from anybind.scale.sharded import fit_sharded

    kw = dict(encoders=syn["encoders"], cache=syn["cache"], progress=False, rows_per_shard=100, shuffle_buffer=1000,
              lock="a", init="ridge", epochs=0, hidden=64)
    ray_space = within(RAY_FIT_S, fit_sharded, syn["manifest"], ray_workers=2, **kw)
    local = fit_sharded(syn["manifest"], **kw)
    sd = ray_space.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in local.state_dict().items())
    assert ray_space.info["training"]["history"][0]["epoch"] == 0 and ray_space.info["training"]["best_epoch"] == 0
    assert ray_space.dim == 24 and ray_space.projectors["b"].linear.weight.abs().sum() > 0  # b regressed onto a
    # WiSE-FT and L2-SP through the shared loop's hooks on DDP workers: every worker mixes in step
    robust = within(RAY_FIT_S, fit_sharded, syn["manifest"], ray_workers=2,  # m2-mix on every worker, one lambda
                    **{**kw, "epochs": 2, "wise": "auto", "l2sp": 1e-3, "mixup": 0.5})
    rob = robust.info["training"]["robust"]
    assert rob["l2sp"] == 1e-3 and rob["mixup"] == 0.5 and rob["wise_alpha"] in [float(a) for a in rob["wise_val"]]
    assert rob["ridge"]["b"]["prior"] == "zero" and robust.info["lineage"][-1]["ridge_start"] == rob["ridge"]
    shutil.rmtree(Path(ray_space.info["training"]["shards"]).parent / "_ray_runs", ignore_errors=True)



def test_ray_train_learns_the_attention_pool_within_tolerance(ray_local, clips):
    from anybind.scale.sharded import fit_sharded

    space = within(RAY_FIT_S, fit_sharded, clips["manifest"], encoders=clips["encoders"], cache=clips["cache"],
                   progress=False, ray_workers=2, rows_per_shard=100, shuffle_buffer=1000, **FIT)
    assert space.info["training"]["workers"] == 2 and space.projectors["video"].cfg.frames == CLIP_FRAMES
    rec = recalls(space, clips["manifest"], clips["cache"])
    for k, v in clips["recalls"].items():
        assert abs(rec[k] - v) <= TOL, (k, rec[k], v)
    assert attends_to_the_signal_frame(space, clips) > 0.8
    shutil.rmtree(Path(space.info["training"]["shards"]).parent / "_ray_runs", ignore_errors=True)

"""Ray Train for the streaming trainer: every worker runs :func:`anybind.scale.train.train_streaming` on its own
shards inside a DDP process group (``TorchTrainer`` over gloo on CPUs; over nccl, one GPU per worker, when the
process's device is CUDA: :func:`scaling`); the driver computes the standardisation and the ridge start once and
saves rank 0's best state as the space."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.files import absolute_as_given, is_uri, location_as_given
from ..encoders.device import Runtime, current_runtime, worker_runtime
from ..errors import DataError
from ..train import TrainConfig
from .reserve import Groups, down, reserve
from .stream import TrainingShards
from .train import DEFAULT_SHUFFLE_BUFFER, streaming_space, streaming_start, train_streaming

log = logging.getLogger(__name__)

#: seconds Ray Train waits for a CPU per worker (a GPU per worker on CUDA) to be free before it is sized to the CPUs
#: that are free, or refused: a finished Ray Data actor pool gives its CPUs back asynchronously, and CPUs held
#: elsewhere would otherwise keep Ray Train waiting for its workers forever
RESOURCE_WAIT_S = 30.0
#: the fewest CPUs a worker is started with (sized to what is free below one each)
MIN_WORKER_CPUS = 0.1


def _ray_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (one per worker): stream this worker's shards, DDP, report rank 0's best state."""
    import ray.train
    from safetensors.torch import load, save_file

    worker_runtime(config.get("runtime"))  # the driver's device and precision (a CUDA one: this worker's GPU)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    shards = TrainingShards.open(config["shards"])
    cfg = TrainConfig(**config["cfg"])
    stats = {m: (np.asarray(v[0], np.float32), float(v[1]), int(v[2])) for m, v in config["stats"].items()}
    init = None
    if config.get("init") is not None:  # the driver's ridge start, as safetensors bytes
        init = {}
        for k, v in load(config["init"]).items():
            m, rest = k.split(".", 1)
            init.setdefault(m, {})[rest] = v
    res = train_streaming(shards, cfg, rank=rank, world=world, shuffle_buffer=config["shuffle_buffer"],
                          stats=stats, init=init, progress=False, checked=True)  # the driver checked cfg
    ckpt = None
    if rank == 0:
        d = Path(tempfile.mkdtemp(prefix="anybind-ray-"))
        tensors = {f"{m}.{k}": v.contiguous() for m, sd in res["state"].items() for k, v in sd.items()}
        save_file(tensors, str(d / "projectors.safetensors"))
        (d / "result.json").write_text(json.dumps({k: v for k, v in res.items() if k != "state"}))
        ckpt = ray.train.Checkpoint.from_directory(str(d))
    best_val = float("nan") if res["best_val"] is None else res["best_val"]  # no val split: still a number
    ray.train.report({"best_val": best_val, "best_epoch": res["best_epoch"]}, checkpoint=ckpt)


def scaling(workers: int, cpus: float, rt: Runtime | None = None) -> tuple[dict[str, Any], str]:
    """(``ScalingConfig`` arguments, DDP backend) of a run: one GPU per worker and nccl when the runtime is
    CUDA, else CPUs and gloo."""
    rt = rt or current_runtime()
    if rt.is_cuda:
        return {"num_workers": workers, "use_gpu": True, "resources_per_worker": {"CPU": cpus, "GPU": 1}}, "nccl"
    return {"num_workers": workers, "use_gpu": False, "resources_per_worker": {"CPU": cpus}}, "gloo"


def worker_cpus(workers: int, *, gpus: bool = False, wait: float | None = None) -> float:
    """CPUs per Ray Train worker on the connected cluster, sized to what is free, so that the trainer's request can
    be met: one each (at most the cluster's CPUs / ``workers``) when they are free, waiting up to ``wait`` seconds
    (default :data:`RESOURCE_WAIT_S`) for them; else the share of the free CPUs (at least :data:`MIN_WORKER_CPUS`).
    With ``gpus``, one free GPU per worker is needed too.  The size is checked by holding it (a placement group of
    the workers' bundles, :func:`anybind.scale.reserve.reserve`, given back at once for the trainer's own): the
    cluster's view of its free CPUs lags, and a size read from a stale view would have Ray Train wait for its
    workers forever.  Raises :class:`DataError` (one line naming what is missing) when even the least is not free
    after the wait (at once when the cluster has too few CPUs in all)."""
    from . import cluster_cpus, free_cpus, free_gpus

    wait = RESOURCE_WAIT_S if wait is None else float(wait)
    total = cluster_cpus()
    if total < MIN_WORKER_CPUS * workers - 1e-9:  # never free, however long it waits: refused at once
        raise DataError(f"Ray Train needs {MIN_WORKER_CPUS * workers:g} CPUs ({MIN_WORKER_CPUS:g} per worker); the "
                        f"Ray cluster has {total:g} in all: give at most {int(total / MIN_WORKER_CPUS + 1e-6)} "
                        "--ray-workers, or --ray-address of a larger cluster")
    want = down(max(MIN_WORKER_CPUS, min(1.0, total / workers)))
    free_cpus(wait=wait, at_least=want * workers)  # a finished pool's CPUs come back asynchronously
    if gpus:
        free_gpus(wait=wait, at_least=workers)
    sized: dict[str, float] = {}

    def plan(free: float) -> Groups:
        missing = []
        if free < MIN_WORKER_CPUS * workers - 1e-9:
            missing.append(f"{MIN_WORKER_CPUS * workers:g} CPUs ({MIN_WORKER_CPUS:g} per worker); {free:g} of "
                           f"{total:g} are free")
        if gpus and (g := free_gpus()) < workers:
            missing.append(f"{workers} GPUs (one per worker); {g:g} are free")
        if missing:
            raise DataError(f"Ray Train needs {' and '.join(missing)} on the Ray cluster after waiting {wait:g} s "
                            "(held by other actors or tasks, e.g. an actor pool of a pipeline still running): free "
                            "them, give fewer --ray-workers, or --ray-address of a larger cluster")
        sized.update(free=free, cpus=min(want, down(free / workers)))
        return {"Ray Train workers": [{"CPU": sized["cpus"], **({"GPU": 1.0} if gpus else {})}] * workers}

    with reserve(plan, wait=wait, what=f"Ray Train ({workers} workers)"):
        pass  # held, so free: given back for the trainer's own placement group, asked for right after
    cpus = sized["cpus"]
    if cpus < want:
        log.warning("Ray Train: %g of %g CPUs are free after waiting %g s: %d workers get %.2g CPUs each (not %g)",
                    sized["free"], total, wait, workers, cpus, want)
    return cpus


def _no_restart():
    """Ray Train's failure config in which a worker group that could not start fails the run (Ray Train v2:
    ``controller_failure_limit=0``; its default retries forever); the plain one on Ray Train v1, which has no such
    retry."""
    from ray.train import FailureConfig

    try:
        return FailureConfig(controller_failure_limit=0)
    except TypeError:
        return FailureConfig()


def _failure(e: BaseException, workers: int, cpus: float) -> str:
    """One line for a failed ``trainer.fit``: the workers that could not start, or the worker's own error."""
    from .encode_ray import root_cause

    c, seen = e, 0
    while c is not None and seen < 10:
        if type(c).__name__ == "WorkerGroupStartupTimeoutError":
            return (f"Ray Train could not start its {workers} workers ({cpus:g} CPU each) in time: the CPUs were "
                    "free when sized but other actors or tasks took them before the workers started: free them, "
                    "give fewer --ray-workers, or --ray-address of a larger cluster")
        c, seen = c.__cause__ or getattr(c, "controller_failure", None) or getattr(c, "cause", None), seen + 1
    return f"Ray Train run failed ({root_cause(e)})"


def _remove_run(root: str, name: str) -> None:
    """Delete the finished run's folder (its checkpoint is read): under a local ``root``, or under a URI through the
    filesystem pyarrow (Ray Train's own dependency) opens for it; what cannot be deleted stays, logged."""
    if not is_uri(root):
        shutil.rmtree(Path(root) / name, ignore_errors=True)
        return
    try:
        from pyarrow import fs

        store, base = fs.FileSystem.from_uri(root)
        store.delete_dir(f"{base.rstrip('/')}/{name}")
    except Exception as e:  # noqa: BLE001 -- the space is trained; a run folder left behind is not an error
        log.warning("Ray Train's run folder %s/%s was left (%s)", root.rstrip("/"), name, " ".join(str(e).split()))


def fit_ray(
    shards: TrainingShards,
    cfg: TrainConfig,
    *,
    workers: int = 2,
    address: str | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    storage: str | Path | None = None,
    wait: float | None = None,
    checked: bool = False,
):
    """Train a space from training shards with Ray Train (``TorchTrainer``, ``workers`` DDP workers).

    ``cfg.batch_size`` is the global batch (``batch_size // workers`` per worker).
    ``storage``: where Ray Train keeps the run (default: beside the shards, which on a
    cluster must be shared storage every node reads): a local folder (made absolute, created) or a URI Ray Train's
    storage reads (``s3://...``, ``gs://...``: kept as typed).  ``wait``: seconds to wait for the workers' CPUs
    (and GPUs) to be free before sizing them to what is free, or refusing (:func:`worker_cpus`).  ``cfg`` is
    checked once, here (:func:`~anybind.scale.train.check_config`) unless ``checked`` (the caller did), not by the
    workers.
    """
    from safetensors.torch import load_file, save

    from . import ray_session

    if workers < 1:
        raise DataError(f"ray workers must be >= 1, got {workers}")
    cfg = cfg.resolved()  # the workers get the plain defaults for what the recipe left open
    start = streaming_start(shards, cfg, checked=checked)  # here, once: every worker starts from it
    init_bytes = None
    if start.init is not None:
        init_bytes = save({f"{m}.{k}": v.contiguous() for m, sd in start.init.items() for k, v in sd.items()})
    with ray_session(address):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        rt = current_runtime()
        cpus = worker_cpus(workers, gpus=rt.is_cuda, wait=wait)  # what is free: else Ray Train waits forever
        scale, backend = scaling(workers, cpus, rt)
        root = location_as_given(storage if storage is not None else shards.path.parent / "_ray_runs")
        if not is_uri(root):  # a folder here, made now
            Path(root).mkdir(parents=True, exist_ok=True)
        name = f"fit-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.default_rng().integers(1 << 30):08x}"
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={
                "shards": absolute_as_given(shards.path), "cfg": cfg.to_dict(), "shuffle_buffer": int(shuffle_buffer),
                "stats": {m: (v[0].tolist(), v[1], v[2]) for m, v in start.stats.items()}, "init": init_bytes,
                "runtime": rt.to_dict(),
            },
            scaling_config=ScalingConfig(**scale),
            torch_config=TorchConfig(backend=backend),
            # a worker group that cannot start (its CPUs taken in the instant between worker_cpus and its placement
            # group) fails the run after Ray Train's start timeout instead of being retried forever
            run_config=RunConfig(storage_path=root, name=name, failure_config=_no_restart()),
        )
        try:
            result = trainer.fit()
        except Exception as e:
            raise DataError(_failure(e, workers, cpus)) from e
        if getattr(result, "error", None):
            raise DataError(f"Ray Train run failed ({result.error})")
        with result.checkpoint.as_directory() as d:
            flat = load_file(str(Path(d) / "projectors.safetensors"))
            res = json.loads((Path(d) / "result.json").read_text())
        _remove_run(root, name)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        m, rest = k.split(".", 1)
        state.setdefault(m, {})[rest] = v
    res["state"] = state
    return streaming_space(shards, cfg, res, start, ray_workers=workers, ray_worker_cpus=cpus,
                           shuffle_buffer=shuffle_buffer)

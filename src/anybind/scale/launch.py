"""DDP launched by torchrun: ``torchrun ... -m anybind fit MANIFEST --stream --out S`` on one node or several.

torchrun (``torch.distributed.run``) starts ``--nproc_per_node`` processes on each of ``--nnodes`` nodes and gives
each its place in the environment: ``RANK`` (global, ``0..WORLD_SIZE-1``: which shards it reads, whether it writes),
``LOCAL_RANK`` (its place on its own node: which GPU it drives), ``WORLD_SIZE`` and the rendezvous
``MASTER_ADDR`` / ``MASTER_PORT``.  On several nodes the two ranks differ (every node has a ``LOCAL_RANK`` 0):
only global rank 0 prepares the data (encodes into the feature cache, writes the training shards), shows progress
and saves the space; a CUDA process drives ``cuda:LOCAL_RANK``, never ``cuda:RANK`` (a node has no GPU 5 because
it runs rank 5).  The training itself is :func:`anybind.scale.sharded.fit_sharded`'s (``launch=``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from ..errors import DataError

log = logging.getLogger(__name__)

#: what torchrun sets in every process it starts
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: seconds a collective waits (the other ranks wait in one while rank 0 encodes and writes the shards), default
#: torch's 30 min: raise it for a corpus whose preparation takes longer
TIMEOUT_ENV = "ANYBIND_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


def collectives_before_any_group() -> None:
    """Import torch's differentiable collectives (``torch.distributed.nn.functional``) now, before any process group
    exists.  Each of its functions takes ``group=group.WORLD`` as a default, evaluated when the module is imported:
    imported while a group is live (DDP imports it on first use, as does an all-gather with gradients), it keeps
    that group for the rest of the process, so ``destroy_process_group`` cannot free it.  gloo's worker threads then
    outlive the group into interpreter shutdown, where one letting go of a finished collective's tensor takes the
    GIL and the process aborts ("terminate called without an active exception"; seen under load).  Imported
    first, the defaults hold ``None`` and the group goes, its threads joined, when it is destroyed."""
    import torch.distributed

    if torch.distributed.is_available():
        import torch.distributed.nn.functional  # noqa: F401 -- imported for its side effect (above)


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun job: ``rank`` (global), ``world`` (processes in all), ``local_rank``
    (on this node)."""

    rank: int
    world: int
    local_rank: int

    @property
    def leader(self) -> bool:
        """Global rank 0: the one process that prepares the data, reports progress and writes."""
        return self.rank == 0


def under_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether torchrun (or a launcher like it) started this process: ``WORLD_SIZE`` or ``RANK`` set, whatever the
    job's size (``anybind fit`` then trains streaming, in DDP when there are several processes)."""
    env = os.environ if env is None else env
    return "WORLD_SIZE" in env or "RANK" in env


def torchrun_launch(env: Mapping[str, str] | None = None) -> Launch | None:
    """This process's :class:`Launch` when torchrun started it with ``WORLD_SIZE`` > 1, else ``None`` (not under
    torchrun, or a job of one process: nothing to coordinate).  An environment torchrun would not leave (a variable
    missing or not a number, a rank outside the world) is a :class:`DataError` in one line naming it."""
    env = os.environ if env is None else env
    if not under_torchrun(env):
        return None
    missing = [k for k in TORCHRUN_ENV if not env.get(k)]
    if missing:
        raise DataError(f"torchrun's environment is incomplete ({', '.join(missing)} unset; WORLD_SIZE="
                        f"{env.get('WORLD_SIZE')!r}, RANK={env.get('RANK')!r}): launch with torchrun, or unset "
                        "WORLD_SIZE and RANK to train in one process")
    try:
        rank, world, local = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise DataError(f"torchrun's environment is not numeric: RANK={env['RANK']!r}, WORLD_SIZE="
                        f"{env['WORLD_SIZE']!r}, LOCAL_RANK={env['LOCAL_RANK']!r}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DataError(f"torchrun's environment is inconsistent: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}")
    return Launch(rank, world, local) if world > 1 else None


def group_timeout(env: Mapping[str, str] | None = None) -> timedelta:
    """How long the group's collectives wait: ``ANYBIND_DIST_TIMEOUT`` seconds, else torch's 30 min; a value that
    is not a positive number is a :class:`DataError` in one line naming it."""
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise DataError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds (how long the other ranks wait "
                        "for rank 0's preparation and for one another; default 1800)")
    return timedelta(seconds=seconds)


@contextmanager
def process_group(launch: Launch) -> Iterator[str]:
    """The job's ``torch.distributed`` process group for a block (yields the backend): gloo on CPUs, nccl on
    CUDA, where this process drives ``cuda:LOCAL_RANK`` for the block.  The group is joined through torchrun's
    rendezvous (``MASTER_ADDR`` / ``MASTER_PORT``) with :func:`group_timeout`'s timeout (the other ranks wait
    in a collective while rank 0 prepares the data), and torn down after; a block that
    ends normally meets the other processes at a barrier first (none tears gloo down while another is still in a
    collective)."""
    import torch
    import torch.distributed as dist

    from ..encoders.device import current_runtime, make_runtime, use_runtime

    timeout = group_timeout()
    rt = current_runtime()
    device = f"cuda:{launch.local_rank}" if rt.is_cuda else rt.device
    if rt.is_cuda:
        if device != rt.device:
            log.info("rank %d drives %s (LOCAL_RANK %d), not %s", launch.rank, device, launch.local_rank, rt.device)
        rt = make_runtime(device, rt.precision)  # one line naming the device when this node has too few GPUs
        torch.cuda.set_device(launch.local_rank)
    backend = "nccl" if rt.is_cuda else "gloo"
    collectives_before_any_group()  # none left holding the group past its teardown
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world, timeout=timeout)
    try:
        with use_runtime(rt):
            yield backend
        dist.barrier()
    finally:
        dist.destroy_process_group()


def agree(error: str | None) -> None:
    """Every process of the group passes its own error (``None``: fine); if any has one, every process raises a
    :class:`DataError` naming the first rank that failed and its message, so none is left waiting in a collective."""
    import torch.distributed as dist

    errors: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    for r, e in enumerate(errors):
        if e is not None:
            dist.barrier()  # every process past the gather before any tears the group down (gloo aborts otherwise)
            raise DataError(f"rank {r} of {len(errors)}: {e}")

"""Scale-out: distributed encoding, indexing and training on Ray; bounded-memory feature streaming.

When a corpus outgrows one process, anybind runs on `Ray <https://www.ray.io>`_ (the
``scale`` extra: ``pip install 'anybind[scale]'``) instead of a scheduler of its own.
The same commands run on a laptop (a local Ray started with the machine's CPUs)
and on a cluster (``--ray-address head:6379`` or ``RAY_ADDRESS``; Ray Client's ``ray://head:10001`` for the
commands without Ray Data: ``federate``, ``fit --ray-workers`` on cached features)::

    anybind encode data/tux/manifest.jsonl --encoder image:efficientnet-lite0 --modality image --ray
    anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux --ray
    anybind fit data/tux/manifest.jsonl --modalities image,text --ray-workers 2 --out spaces/tux

* :func:`~anybind.scale.encode.encode_items` -- Ray Data decodes items in map tasks and
  encodes them in an actor pool (one pool per encoder), each actor committing shards to
  the :class:`~anybind.cache.FeatureCache` in the very format the single-process path
  writes: ``fit`` reads them directly.  Cached items are filtered out before anything is
  decoded, so a rerun after a crash encodes only what is missing.
* :func:`~anybind.scale.encode_ray.ray_index_embedder` -- parallel embedding for
  :meth:`anybind.index.Index.add`; the driver writes to LanceDB chunk by chunk.
* :mod:`anybind.scale.stream` -- training shards (the cached features joined per record, a few thousand
  rows per file; written by :mod:`anybind.scale.shard_write`) and :class:`~anybind.scale.pairstream.PairStream`,
  which iterates them in bounded memory (one shard at a time, a shuffle buffer).
* :mod:`anybind.scale.train` -- the streaming trainer, in-process (``fit --stream``)
  or on Ray Train (``TorchTrainer``, DDP over gloo/NCCL, ``fit --ray-workers N``).

On a cluster every node must see the same paths: the manifest and its media, the
feature cache (``--cache`` / ``$ANYBIND_CACHE`` on shared storage) and, for ``callable:``
encoders, the module (installed on the nodes or on ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from .ray_connect import local_ray_env, restore_local_ray_env

LOCAL = "local"


def ray_address(address: str | None) -> str | None:
    """The address to connect to: ``address``, else ``$RAY_ADDRESS``; ``None``/``"local"`` = start a local Ray."""
    a = address if address not in (None, "") else os.environ.get("RAY_ADDRESS")
    return None if a in (None, "", LOCAL) else a


def _require_ray():
    try:
        import ray  # noqa: F401
    except ImportError as e:  # pragma: no cover - the extra is installed in development
        from ..errors import AnybindError

        raise AnybindError(f"distributed mode needs Ray ({e}): pip install 'anybind[scale]'") from None
    return ray


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             resources: dict[str, float] | None = None) -> bool:
    """Connect to (or start) Ray; returns True when this call started it (the caller shuts it down, with
    :func:`shutdown_ray`).

    ``resources``: custom resources a local Ray advertises (e.g. ``{"anybind_client_0": 1}``, see
    :mod:`anybind.scale.federated_ray`); ignored when joining a cluster, whose nodes say their own.
    ``address``: ``None`` or ``"local"`` starts a local Ray with ``num_cpus`` (default: the
    machine's CPUs) unless ``$RAY_ADDRESS`` names a cluster; ``"auto"`` joins the cluster
    this machine belongs to; ``"ray://head:10001"`` connects a client to a remote cluster.
    Already initialised: nothing happens.  Locally, the workers get this process'
    ``sys.path`` so that ``callable:`` encoders importable here import there too.
    """
    ray = _require_ray()
    if ray.is_initialized():
        return False
    addr = ray_address(address)
    quiet_ray_core()
    kw: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if addr is None:
        # local workers inherit the environment of the Ray processes started here: give them this
        # process' import path (no runtime_env, which would forbid reusing prestarted workers)
        old = os.environ.get("PYTHONPATH")
        path = [p for p in sys.path if p and os.path.isdir(p)]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path + ([old] if old else [])))
        try:
            with local_ray_env():  # what Ray sets in os.environ (RAY_AUTH_MODE=token...), put back by shutdown_ray
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, resources=dict(resources or {}), **kw)
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
    else:
        join_ray(addr, kw)
    quiet_ray_data()
    return True


def join_ray(addr: str, kw: dict) -> None:
    """``ray.init(address=addr, **kw)``, refused in one line naming ``addr`` (see :mod:`anybind.scale.ray_connect`):
    first checked within a bounded time, then Ray's own failure to join (an error, a missing token) reworded."""
    import ray

    from .ray_connect import (CLIENT_HINT, TOKEN_HINT, TOKEN_SOURCES, RayConnectError, canonical_address,
                              check_auth_mode, check_ray_address)

    check_ray_address(addr)
    restore_local_ray_env()  # a local Ray of anybind's shut down by ray.shutdown(): its RAY_AUTH_MODE=token goes
    check_auth_mode(addr)  # a token mode from elsewhere against a token-less cluster: refused in one line
    if addr.startswith("ray://"):
        kw = {k: v for k, v in kw.items() if k != "include_dashboard"}
    try:
        ray.init(address=canonical_address(addr), **kw)  # the port probed, written as Ray reads it
    except (ConnectionError, RuntimeError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        why = lines[0]
        if why.endswith(":") and len(lines) > 1:  # Ray Client's header: the reason follows, or the server's
            why += " " + (lines[-1] if lines[1].startswith("Traceback") else lines[1])  # traceback, ending in it
        why = why[:300]
        token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        hint = (f"; this process uses token authentication (RAY_AUTH_MODE=token): is its token the cluster's "
                f"({TOKEN_SOURCES})?" if token else f"; if it uses token authentication, {TOKEN_HINT}")
        if addr.startswith("ray://") and "ray[client]" in str(e):
            why, hint = "a ray:// address needs Ray Client", f": {CLIENT_HINT}"
        raise RayConnectError(f"cannot join the Ray cluster at {addr}: {why}{hint}") from None


#: Ray's own lines that are no business of an anybind user: a note that the local cluster anybind starts
#: uses token authentication, and Ray Data's note that its progress bars are off (anybind shows its own)
_RAY_NOTE_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")


def quiet_ray_core() -> None:
    """Before ``ray.init``: Ray's informational notes off (see :data:`_RAY_NOTE_LOGGERS`).

    Ray's C++ core writes its ERROR lines to stderr itself; the one that comes in every normal run
    (``core_worker.cc:... E ... Actor ... has constructor arguments in the object store and max_restarts > 0``,
    once per Ray Data actor pool) is dropped inside :func:`ray_session` by
    :func:`anybind.scale.native_stderr.native_stderr_without`, every other line stays."""
    for name in _RAY_NOTE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_ray_data() -> None:
    """No Ray Data progress bars or per-execution log lines: anybind shows its own progress."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a small input cannot keep every encoder actor busy: Ray Data says so on every small run (anybind
    # chose the pool size, not the user), so that one warning is dropped
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """``with ray_session(addr):`` -- Ray connected inside; shut down after if this block started it."""
    from .native_stderr import RAY_ACTOR_RESTART_NOTE, native_stderr_without

    started = init_ray(address, num_cpus=num_cpus)
    try:
        with native_stderr_without(RAY_ACTOR_RESTART_NOTE):  # Ray's one known line per actor pool: dropped
            yield
    finally:
        if started:
            shutdown_ray()


def shutdown_ray() -> None:
    """``ray.shutdown()``, then what a local Ray started by :func:`init_ray` set in ``os.environ`` put back
    (:mod:`anybind.scale.ray_connect`): this process can then join a cluster as a fresh one would."""
    import ray

    ray.shutdown()
    restore_local_ray_env()


def cluster_cpus() -> float:
    """Logical CPUs of the connected Ray cluster."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def free_cpus(wait: float = 0.0, at_least: float = 0.1) -> float:
    """Logical CPUs of the connected Ray cluster not held by anything now (actors, tasks, other jobs).

    With ``wait`` > 0, polls for up to that many seconds until at least ``at_least`` are free (actors of
    a pipeline that just ended give their CPUs back asynchronously)."""
    return free_resource("CPU", wait, at_least)


def free_gpus(wait: float = 0.0, at_least: float = 1.0) -> float:
    """GPUs of the connected Ray cluster not held by anything now; ``wait``/``at_least`` as :func:`free_cpus`."""
    return free_resource("GPU", wait, at_least)


def free_resource(name: str, wait: float = 0.0, at_least: float = 0.1) -> float:
    """How much of the Ray resource ``name`` (``"CPU"``, ``"GPU"``) is free, polling for up to ``wait`` seconds
    until at least ``at_least`` is (collecting garbage between polls: dropped pipelines' actors then exit)."""
    import gc
    import time

    import ray

    deadline = time.monotonic() + wait
    while True:
        free = float(ray.available_resources().get(name, 0.0))
        if free >= at_least - 1e-9 or time.monotonic() >= deadline:
            return free
        gc.collect()  # drops unreferenced pipelines, whose actors then exit
        time.sleep(0.2)


def driver_folder() -> str:
    """This (the driver's) folder as the shell names it (links kept: the name nodes mounting the same storage
    share), for Ray workers to work in (:func:`work_in`)."""
    from ..data.files import absolute_as_given

    return absolute_as_given(".")


def work_in(folder: str | None) -> None:
    """In a Ray worker (an actor, a task): work in the driver's ``folder`` (:func:`driver_folder`) where this node
    has it, so that a relative path (a media file of a manifest given by a relative path, a file in an encoder spec
    such as ``vectors:a.npz``) reads as on the driver; a worker process serves one driver only.  Otherwise the
    worker's folder is its node's ``ray start`` folder (a node without the driver's folder keeps it: the relative
    path is then refused there, naming it)."""
    if folder and os.path.isdir(folder):
        os.chdir(folder)

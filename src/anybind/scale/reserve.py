"""Reserving CPUs (and GPUs) on the Ray cluster before a pipeline uses them, instead of sizing it to what
``ray.available_resources()`` says is free and hoping.

Why: that number is the GCS's view of the cluster, which lags the raylets' (seen in CI on two busy CPUs: right
after an actor took one CPU of two, it still said two were free).  A Ray Data encode sized to it started one
encoder actor of 0.75 CPU in the 1 CPU that was really free; its decode tasks (0.5 CPU each) and the second actor
could never be scheduled, and the pipeline waited for them forever.  Any other job taking CPUs between the check
and the pipeline's start does the same.  A placement group is Ray's own way to close that race: it is ready only
once its bundles are held on a node, and what runs inside it cannot be starved by anything outside it.

:func:`reserve` sizes the groups to the CPUs the view says are free, creates them and waits a short while for them
to be ready; when they are not (the view was stale, or someone took the CPUs), it gives them back, reads the view
again and sizes anew, until its deadline, then refuses in one line.  A :class:`Reservation` is released by
removing its groups, which also ends every actor and task still running in them: nothing of Ray's state API (and
so no dashboard) is needed for that.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AnybindError, DataError

log = logging.getLogger(__name__)

#: seconds one attempt waits for its placement groups before the view is read again and they are sized anew
PROBE_S = 3.0

#: attempts made before a refusal, however short the wait: each reads the view anew, which catches up
MIN_ATTEMPTS = 3

#: bundles by name (e.g. ``{"actors": [{"CPU": 0.5}] * 2, "decode": [{"CPU": 0.25}]}``): one placement group each
Groups = dict[str, list[dict[str, float]]]


@dataclass
class Reservation:
    """Placement groups holding a pipeline's CPUs (and GPUs); :meth:`strategy` schedules work inside one of them,
    :meth:`release` gives everything back (ending what still runs inside).  A context manager that releases."""

    groups: Groups
    pgs: dict[str, Any] = field(default_factory=dict)

    def strategy(self, name: str):
        """The Ray scheduling strategy that places an actor or task in any bundle of group ``name``."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(self.pgs[name], placement_group_bundle_index=-1,
                                                placement_group_capture_child_tasks=False)

    def map_batches(self, ds: Any, name: str, fn: Any, **kwargs: Any) -> Any:
        """``ds.map_batches(fn, **kwargs)`` with its tasks or actors placed in group ``name``.

        Ray 2.60 deprecates ``map_batches(..., scheduling_strategy=...)`` with every other ``ray_remote_args``
        (removal announced for Ray 2.64) and has no public replacement yet ("Ray Data manages scheduling
        internally"); its own stages that bring their placement groups (``ray.data.llm``'s) call
        ``Dataset.map_batches_internal``, the developer API behind ``map_batches`` without the deprecation (nor its
        batch-size checks: every caller here passes its batch size).  pyproject bounds Ray to the tested range."""
        refuse_ray_client(name)
        internal = getattr(ds, "map_batches_internal", None)
        if internal is None:  # a Ray outside the tested range: refused, not run unplaced (it could wait forever)
            import ray

            raise AnybindError(
                f"Ray {getattr(ray, '__version__', '?')} has no Dataset.map_batches_internal, which anybind uses to "
                "run a pipeline stage in its reserved placement group; install the tested Ray range: "
                "pip install 'anybind[scale]' (ray[data,train]>=2.60,<2.64)")
        return internal(fn, scheduling_strategy=self.strategy(name), **kwargs)

    def cpus(self, name: str) -> float:
        """CPUs held by group ``name``."""
        return sum(b.get("CPU", 0.0) for b in self.groups[name])

    def release(self) -> None:
        """Remove the placement groups (idempotent): their CPUs come back and what runs in them ends."""
        from ray.util import remove_placement_group

        _remove(self.pgs, remove_placement_group)
        self.pgs.clear()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_ray_client(what: str) -> None:
    """Refuse (one line) to run a Ray Data stage (``what``) through Ray Client (a ``ray://`` address): Ray 2.60's
    Data executor runs in the driver and needs the driver's core worker, which a Ray Client process has not
    (``AttributeError: 'Worker' object has no attribute 'core_worker'``, after Ray's own traceback).  Actors and
    tasks alone (``anybind federate``) run through Ray Client."""
    from ray.util.client import ray as client

    if client.is_connected():
        import ray

        raise AnybindError(
            f"Ray Data's {what} cannot run through Ray Client (a ray:// address): Ray {ray.__version__}'s Data "
            f"executor needs this process to be a Ray driver; join the head's GCS address instead (HOST:PORT, the "
            f"port `ray start --head --port` opened) or run anybind on a node of the cluster (RAY_ADDRESS=auto)")


def _ready(pgs: dict[str, Any], timeout: float) -> bool:
    import ray

    try:
        ready, _ = ray.wait([pg.ready() for pg in pgs.values()], num_returns=len(pgs), timeout=max(timeout, 0.0))
    except Exception:  # noqa: BLE001 -- a group that cannot be placed at all: not ready
        return False
    return len(ready) == len(pgs)


def reserve(plan: Callable[[float], Groups], *, wait: float, what: str, probe: float | None = None,
            strategy: str = "PACK", advice: str | None = None) -> Reservation:
    """Hold the bundles that ``plan(free_cpus)`` asks for (one placement group per name), sized anew from the
    cluster's view of its free CPUs on every attempt until ``wait`` seconds have passed (and at least
    :data:`MIN_ATTEMPTS` were made).

    ``plan`` may raise :class:`DataError` itself (too little is free to size anything).  Raises :class:`DataError`
    in one line naming ``what``, the last request and why it was not held -- no node has that much in all (each
    node named with what it has of it, :func:`shortfall`), else the CPUs free -- then ``advice`` (default: free
    them, ask for less or use a larger cluster) when nothing could be held in time."""
    from ray.util import placement_group, remove_placement_group

    from . import cluster_cpus, free_cpus

    probe = PROBE_S if probe is None else probe
    deadline = time.monotonic() + max(wait, 0.0)
    attempt = 0
    while True:
        attempt += 1
        free = free_cpus()
        groups = {k: [dict(b) for b in v] for k, v in plan(free).items() if v}
        pgs: dict[str, Any] = {}
        try:
            for k, v in groups.items():
                pgs[k] = placement_group(v, strategy=strategy)
            ready = _ready(pgs, max(0.5, min(probe, deadline - time.monotonic())))
        except BaseException:  # Ctrl-C or an error while creating or waiting: nothing created may stay held
            _remove(pgs, remove_placement_group)
            raise
        if ready:
            if attempt > 1:
                log.info("%s: held after %d attempts (the cluster's view of free CPUs lagged or they were taken)",
                         what, attempt)
            return Reservation(groups, pgs)
        _remove(pgs, remove_placement_group)
        if time.monotonic() >= deadline and attempt >= MIN_ATTEMPTS:
            asked = " and ".join(f"{_fmt(v)} for {k}" if k else _fmt(v) for k, v in groups.items())
            why = shortfall(groups) or (f"{free_cpus():g} of {cluster_cpus():g} CPUs free; held by other actors or "
                                        "tasks")
            raise DataError(f"{what}: the Ray cluster did not give {asked} within {wait:g} s ({why}): " + (
                advice or "free them, ask for fewer actors or workers, or give --ray-address of a larger cluster"))
        time.sleep(0.2)


def shortfall(groups: Groups) -> str | None:
    """Why a bundle of ``groups`` can never be held, whatever is freed: no live node of the cluster has all it asks
    for (each node that advertises the bundle's custom resources named, with what it has of what is asked); None
    when every bundle fits some node's total."""
    import ray

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 -- no view of the nodes (a Ray Client connection, Ray shutting down): say nothing
        return None
    for bundles in groups.values():
        for b in bundles:
            if any(all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in b.items()) for n in nodes):
                continue
            custom = [k for k in b if k not in ("CPU", "GPU", "memory")]
            named = [n for n in nodes if all(k in n.get("Resources", {}) for k in custom)]
            if custom and not named:
                return f"no node advertises {', '.join(custom)}"
            have = "; ".join(f"{n.get('NodeManagerAddress', '?')}: " + ", ".join(
                f"{n['Resources'].get(k, 0.0):g} {k}" for k in b) for n in named[:4]) + ("; ..." if len(named) > 4 else "")
            return (f"no node has that much: the node(s) with {', '.join(custom)} have {have}" if custom
                    else f"no node has that much: {have}")
    return None


def _remove(pgs: dict[str, Any], remove: Callable[[Any], None]) -> None:
    for pg in pgs.values():
        with contextlib.suppress(Exception):  # already removed, or Ray shut down: nothing is held
            remove(pg)


def down(cpus: float) -> float:
    """``cpus`` rounded down to Ray's resource precision (1e-4): a request never passes what is free."""
    import math

    return math.floor(cpus * 1e4 + 1e-6) / 1e4


def _fmt(bundles: list[dict[str, float]]) -> str:
    """``2 x 0.375 CPU`` / ``1 x (0.5 CPU, 1 GPU)``: a group's bundles in words."""
    from collections import Counter

    def one(b: dict[str, float]) -> str:
        parts = [f"{v:g} {k}" for k, v in sorted(b.items()) if v]
        return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"

    return ", ".join(f"{n} x {s}" for s, n in Counter(one(b) for b in bundles).items())

"""Federated clients as Ray actors (``anybind federate --ray`` / ``--ray-address``).

Each client is one actor: it reads its own manifest and features where it runs (on a cluster, the
node's view of the paths and of the feature cache) and keeps them; the driver holds the server and
sends each actor the server's :class:`~anybind.federated_parties.Message` objects, all clients of a
round at once.  What an actor returns is its reply message and nothing else, checked, counted and
logged by the driver's ledger exactly as for clients in the driver's process; with the same seed the
space is the same (each client trains with its own random streams and the federation's thread count
and float settings, wherever it runs).

    from anybind.scale.federated_ray import federate_on_ray
    space = federate_on_ray(["a.jsonl", "b.jsonl"], "public.jsonl", address=None)  # a local Ray

On a cluster of several machines (``address="10.0.0.5:6379"``, a head started with ``ray start --head``):

* What crosses to an actor is its :class:`~anybind.federated_clients.ClientSpec`: the *path* of its manifest (or, for
  ``anybind federate --data``, the manifest's records themselves, as an object), the encoder specs, the feature
  cache's *path* and the configuration; never a feature or a media file.  The driver is the server: it never reads a
  client's data, so it cannot ship it.  Paths are made absolute on the driver (a worker's folder is not the
  driver's), not resolved through links; an actor works in the driver's folder where its node has that path, so a
  relative file in an encoder spec (``vectors:a.npz``, an ONNX or local model) is read as on the driver.
* So the node an actor lands on must see, under the same absolute paths, that client's manifest, its media and the
  feature cache (shared storage, or the same files copied to each node).  A cache the node cannot see is not fatal:
  the client encodes its records there (the media and the encoders' weights must then be on that node).  A path the
  node does not see is refused in one line naming the client, the path and the node.
* To keep a client's data on its own machine, start that node with ``ray start --address=HEAD
  --resources='{"anybind_client_I": 1}'`` (``I``: the client's place in the list, from 0): its actor then runs there
  and nowhere else (:data:`CLIENT_RESOURCE`); clients without such a node run wherever Ray places them.  Each
  actor's CPUs (and node) are held before it starts, pinned clients first: a client no node can take, or whose CPUs
  stay held by others, is refused after :data:`PLACE_WAIT_S` in one line naming it, what it asked for and what the
  node(s) have.
* anybind itself must be importable on every node (installed there, or on ``PYTHONPATH`` when ``ray start`` ran).
* A cluster started with token authentication (Ray's default when ``~/.ray/auth_token`` exists) needs
  ``RAY_AUTH_MODE=token`` and the token on the driver's machine; a wrong or unreachable address is refused in one line
  within seconds (:mod:`anybind.scale.ray_connect`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnybindError, DataError, FederationError
from ..federated_clients import ClientSpec, build_client
from ..federated_parties import Message
from ..loop import training_threads
from ..space import Space
from . import driver_folder, work_in
from .reserve import Reservation, down, reserve

log = logging.getLogger(__name__)

#: a node that holds client ``i``'s data advertises this Ray resource (``ray start --resources='{"anybind_client_0":
#: 1}'``): client ``i``'s actor then runs there and nowhere else
CLIENT_RESOURCE = "anybind_client_{}"
#: how much of it an actor asks for (a node may host several federations' client ``i``)
CLIENT_RESOURCE_SHARE = 0.01
#: seconds a client's actor may wait to be placed (its CPUs, and its node when pinned) before the federation is refused
#: in one line naming the client, what it asked for and what the cluster has (it waited forever, silently)
PLACE_WAIT_S = 60.0


class ClientActor:
    """One client inside a Ray actor: built on the actor's side; a build error is kept and handed to the driver."""

    def __init__(self, spec: ClientSpec, public: Mapping[str, np.ndarray], workdir: str | None = None):
        self.threads = spec.config.threads
        self.client, self.error = None, None
        work_in(workdir)  # the driver's folder: paths in encoder specs read as there
        try:
            self.client = build_client(spec, public)
        except AnybindError as e:  # the driver raises it (one line, the client and the node it ran on named)
            self.error = on_node(e)

    def ready(self) -> tuple[AnybindError | None, int]:
        """(the build error or None, the number of val pairs)."""
        return self.error, (self.client.n_val if self.client is not None else 0)

    def handle(self, msg: Message) -> Message:
        with training_threads(self.threads):
            return self.client.handle(writable(msg))


def on_node(e: AnybindError) -> AnybindError:
    """``e`` with the Ray node it was raised on named (a path that node does not see is the usual cause on a
    cluster); ``e`` itself when its class takes more than a message."""
    import ray

    try:
        return type(e)(f"{e} (in its Ray actor on node {ray.util.get_node_ip_address()})")
    except Exception:
        return e


def writable(msg: Message) -> Message:
    """``msg`` with arrays of its own (Ray hands over read-only views of its object store, which torch refuses to
    share)."""
    return Message(msg.sender, msg.kind, {k: np.array(v) for k, v in msg.arrays.items()}, dict(msg.counts))


class RayClients:
    """The clients of a federation as Ray actors (the driver must be connected to Ray)."""

    where = "ray"

    def __init__(self, specs: Sequence[ClientSpec], public: Mapping[str, np.ndarray], cpus: float | None = None):
        import ray

        from . import cluster_cpus

        cpus = down(cpus if cpus is not None else max(0.05, min(1.0, cluster_cpus() / max(1, len(specs)))))
        actor = ray.remote(num_cpus=cpus, max_restarts=0)(ClientActor)
        ref, here = ray.put(dict(public)), driver_folder()
        have = ray.cluster_resources()
        self.actors, self.held = [None] * len(specs), []
        try:
            # each actor's CPUs (and node, when pinned) held first, pinned clients before the others: one that cannot
            # be placed is refused after PLACE_WAIT_S, naming it (an actor that never starts waits forever)
            for i in sorted(range(len(specs)), key=lambda i: CLIENT_RESOURCE.format(specs[i].index) not in have):
                s, pin = specs[i], CLIENT_RESOURCE.format(specs[i].index)
                pin = {pin: CLIENT_RESOURCE_SHARE} if pin in have else {}
                res = self._place(s.index, {"CPU": cpus, **pin})
                if pin:  # pinned to the node(s) holding that client's data
                    log.info("client %d runs on a node with the Ray resource %s", s.index, *pin)
                self.actors[i] = actor.options(resources=pin, scheduling_strategy=res.strategy("")).remote(s, ref, here)
            ready = self._get([a.ready.remote() for a in self.actors])
        except BaseException:  # an actor died while building its client: the others keep no shard or CPU
            self.close()
            raise
        for err, _ in ready:
            if err is not None:
                self.close()
                raise err
        self.n_val = [n for _, n in ready]

    def _place(self, index: int, bundle: dict[str, float]) -> Reservation:
        pinned = [k for k in bundle if k != "CPU"]
        what = f"federated client {index}" + (f" (pinned by the Ray resource {pinned[0]})" if pinned else "")
        try:
            res = reserve(lambda free: {"": [bundle]}, wait=PLACE_WAIT_S, what=what, strategy="STRICT_PACK",
                          advice="ask for fewer CPUs per client (cpus_per_client=), free them, or give "
                          + ("that node more CPUs (ray start --num-cpus)" if pinned else "a larger cluster"))
        except DataError as e:
            raise FederationError(str(e)) from None
        self.held.append(res)
        return res

    def exchange(self, msgs: Sequence[Message]) -> list[Message]:
        return [writable(r) for r in self._get([a.handle.remote(m) for a, m in zip(self.actors, msgs)])]

    def _get(self, refs: list) -> list:
        """Each client's answer, in order (all run at once); a failed client named, with its error's root cause."""
        import ray

        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayError as e:
                from .encode_ray import root_cause

                raise FederationError(f"client {i} failed in its Ray actor ({root_cause(e)})") from None
        return out

    def close(self) -> None:
        import ray

        for a in self.actors:
            if a is not None:
                with contextlib.suppress(Exception):
                    ray.kill(a)
        for res in getattr(self, "held", ()):
            res.release()
        self.actors, self.held = [], []


@contextlib.contextmanager
def ray_clients(specs: Sequence[ClientSpec], public: Mapping[str, np.ndarray], *, address: str | None = None,
                num_cpus: int | None = None, cpus_per_client: float | None = None) -> Iterator[RayClients]:
    """A :func:`anybind.federated.federate` runner: one actor per client on the Ray at ``address`` (``None``:
    ``$RAY_ADDRESS``, else a local Ray with ``num_cpus``, shut down after); each actor asks for
    ``cpus_per_client`` CPUs (default: the cluster's CPUs shared among the clients, at most 1)."""
    from . import ray_session

    with ray_session(address, num_cpus=num_cpus):
        parties = RayClients(specs, public, cpus_per_client)
        try:
            yield parties
        finally:
            parties.close()


def federate_on_ray(
    clients: Sequence[str | Path | Any],
    public: Any,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_client: float | None = None,
    **kw: Any,
) -> Space:
    """:meth:`anybind.Space.federate` with every client a Ray actor (see :func:`ray_clients`); the public
    :class:`anybind.Space`."""
    runner = functools.partial(ray_clients, address=address, num_cpus=num_cpus, cpus_per_client=cpus_per_client)
    return Space.federate(clients, public, runner=runner, **kw)

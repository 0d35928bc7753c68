"""A federation's clients as the server's side sees them (:mod:`anybind.federated`): what each is built from
(:class:`ClientSpec`, its paths made :func:`portable` to another process or node), how it is built on its own side
(:func:`build_client`: its manifest and features read there only) and the default runner, every client in this
process (:func:`local_clients`); :func:`anybind.scale.federated_ray.ray_clients` is the other, one Ray actor each."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .cache import FeatureCache
from .data.files import absolute_as_given
from .data.manifest import Manifest
from .errors import DataError
from .federated_parties import Client, Message


def federated_loss() -> nn.Module:
    """The loss every party of a federation trains with (the server's, each client's): InfoNCE."""
    from .losses import build_loss

    return build_loss("infonce")


@dataclass(frozen=True)
class ClientSpec:
    """What client ``index`` is built from on its own side (this process, or a Ray actor): its manifest (read
    there), the encoders everyone shares, the feature cache's folder and the federation's configuration."""

    data: Any  # str | Path | Manifest
    index: int
    encoders: dict[str, str]
    cache: str
    config: Any  # the federation's FederatedConfig (anybind.federated, a layer above: not imported here)
    strict: bool = False


def portable(where: Any) -> Any:
    """A client's manifest (a path, or a :class:`Manifest` whose media paths are relative to its own) or the feature
    cache's folder as a client built elsewhere finds it: an absolute path, taken on the driver (a Ray worker's
    folder, and its node, are not the driver's), links kept (:func:`~anybind.data.files.absolute_as_given`)."""
    if isinstance(where, Manifest):
        return where if where.path.is_absolute() else replace(where, path=Path(absolute_as_given(where.path)))
    return absolute_as_given(where)


def build_client(spec: ClientSpec, public: Mapping[str, np.ndarray], progress: bool = False) -> Client:
    """Client ``spec.index``, built from its own manifest and features (read on the client's side only)."""
    from .manifests import as_manifests
    from .train import FeatureSet

    encoders, cfg = spec.encoders, spec.config
    (man,) = as_manifests([spec.data], list(encoders), dict(encoders), spec.strict, progress)
    where = f"client {spec.index} ({man.path})"
    present = sorted({m for r in man.records for m in r.values} & set(encoders))
    extra = sorted(set(present) - set(public))
    if extra:
        raise DataError(f"{where}: modality {', '.join(extra)} is not in the public set ({', '.join(sorted(public))})")
    if not present:
        raise DataError(f"{where}: none of the encoders' modalities ({', '.join(sorted(encoders))}) occur: a federated "
                        "client needs pairs, or one modality with labels")
    fs = FeatureSet.from_manifests([man], {m: encoders[m] for m in present}, FeatureCache(spec.cache), progress=progress)
    return Client(fs, public, cfg, federated_loss(), seed=cfg.seed + 1 + spec.index, where=where)


class LocalClients:
    """The clients in this process, answering one after the other."""

    where = "in-process"

    def __init__(self, clients: Sequence[Client]):
        self.clients = list(clients)
        self.n_val = [c.n_val for c in self.clients]

    def exchange(self, msgs: Sequence[Message]) -> list[Message]:
        return [c.handle(m) for c, m in zip(self.clients, msgs)]


@contextlib.contextmanager
def local_clients(specs: Sequence[ClientSpec], public: Mapping[str, np.ndarray],
                  progress: bool = False) -> Iterator[LocalClients]:
    """The default runner of :func:`anybind.federated.federate`: every client built here, in this process."""
    yield LocalClients([build_client(s, public, progress) for s in specs])

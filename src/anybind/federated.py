"""Federated binding: clients whose pairs never leave them bind one space (``anybind federate``).

Each client holds a private manifest; the server holds a *public* manifest (pairs anyone may
read) and the global projectors, whose feature standardisation it fits on the public set.  Only
:class:`~anybind.federated_parties.Message` objects cross between them, each checked
(:func:`~anybind.federated_parties.check_message`), counted in bytes, logged (``debug``: what
left which client) and handed to ``on_message`` when given:

* ``method="fedavg"``: the clients send projector weights, the server averages them weighted by
  each client's number of training pairs (``server_public=True``: and then trains the average on the public pairs,
  ``server_epochs``, as a CreamFL server does without its distillation: FedAvg given the public pairs too);
* ``method="creamfl"``: the clients, regularised towards the global embeddings of the public
  pairs, send their embeddings of the public records; the server ensembles them (weighted by
  agreement with its own embeddings of the other modalities) and distils the global projectors on
  the public pairs (see :mod:`anybind.federated_cream`).  By default the clients start each round
  from the global projectors (``client_init="global"``: those weights then count as training
  traffic); ``client_init="own"`` is the paper's, where they keep their own.  ``average=True`` adds FedAvg's step
  (not in CreamFL's reference code, whose clients' models differ from the server's): the clients send their
  projector weights beside the embeddings and the server starts its distillation from their average.

Every round ends with the global projectors sent to the clients, which answer with their val
score on their own val pairs (a number and a count; these bytes, and CreamFL's global weights when its clients
only score them, are counted apart from the training exchange); the round with the best count-weighted
score is kept, and training stops after ``patience`` rounds without improvement.  The start
competes as round 0.  The result is a normal :class:`~anybind.space.Space` whose lineage names
the method, rounds, client count and the public data, never the clients' data.
:func:`train_alone` trains one client's data alone through the same code (the "local only"
baseline, and with the union of every client's data the centralised one).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import FeatureCache
from .data.manifest import Manifest
from .epochs import EpochSelection, selection_record
from .errors import DataError
from .federated_clients import ClientSpec, build_client, federated_loss, local_clients, portable
from .federated_cream import INTRA_KINDS, KD_KINDS
from .federated_epochs import LOCAL_EPOCHS_RULE, choose_local_epochs, local_epoch_grid
from .federated_parties import Message, Server, check_message, public_features
from .loop import training_threads
from .progress import progress_bar
from .recipe import check_seed

if TYPE_CHECKING:
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

METHODS = ("fedavg", "creamfl")
VAL_METRIC = "clients' val-pair-count-weighted mean of (R@1+R@5+R@10)/3 over pairs, both directions"


@dataclass
class FederatedConfig:
    """How a federation trains (recorded in the lineage)."""

    method: str = "creamfl"  # "fedavg" | "creamfl"
    rounds: int = 20
    local_epochs: int = 1  # client epochs per round (federate(local_epochs="auto" | "1,3,5" | [1, 3, 5]): one
    # federation per count, the one scoring highest on the clients' val pairs kept: anybind.federated_epochs)
    server_epochs: int | None = None  # creamfl (and fedavg with server_public): epochs of the server on the public
    # pairs per round (and before the first); None: each server's own, chosen on the clients' val pairs (BENCHMARKS.md,
    # federated): 10 for creamfl, 1 for fedavg with server_public (0.765 vs 0.724 with 10)
    server_public: bool = False  # fedavg: the server also trains the averaged projectors on the public pairs
    # (InfoNCE, server_epochs, CreamFL's server loop without the distillation) each round and before the first:
    # FedAvg with server fine-tuning on public data, the baseline that gets CreamFL's public pairs too
    patience: int = 10  # rounds without a better val score before stopping
    dim: int = 256
    projector: str = "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    temperature: float = 0.05
    learn_temperature: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    reg_weight: float = 1.0  # creamfl: the clients' inter+intra-modal term on the public pairs
    reg_temperature: float = 0.5  # creamfl: its temperature (CreamFL's), and the aggregation's
    kd_weight: float = 10.0  # creamfl: the server's distillation towards the aggregate (with average=True and
    # server_epochs=1, kd 1 scores the clients' val 0.782 vs kd 10's 0.781 and average's default 10 server epochs'
    # 0.784, 3 seeds: not chosen; BENCHMARKS.md, "the kd / reg sweep")
    kd: str = "feature"  # creamfl: "feature" (CreamFL's regression), "relation" (similarity distributions) or "both"
    kd_temperature: float = 0.1  # creamfl: the temperature of the relational distillation
    kd_mix: int = 0  # creamfl: mixes of two public pairs per round the clients also embed and the server distils on
    client_init: str = "global"  # creamfl: "global" (start each round from the global projectors) or "own" (the
    # paper's: clients keep their projectors); the defaults server_epochs=10, kd_weight=10, client_init="global" were
    # chosen on the clients' val pairs (BENCHMARKS.md, federated; session 8 ran 2, 1.0, "own")
    intra: str = "start"  # creamfl: the negative of the clients' intra-modal term on the public set: "start" (the
    # client's projectors at the round's start: with client_init="global" the global ones, so the term is inert) or
    # "moon" (MOON's and CreamFL's: the client's own projectors at the end of its previous round, kept on the client;
    # with client_init="own" the two are the same)
    average: bool = False  # creamfl: the clients also send their projector weights and the server starts each
    # round's distillation from their training-pair-weighted average (FedAvg's step; CreamFL's reference code has
    # none: its clients' models differ from the server's); the agreement still weighs the embeddings
    label: str = "top"  # a client holding one modality: the label its local (supervised contrastive) loss uses
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_seed(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def federated_config(config: Mapping[str, Any]) -> FederatedConfig:
    """Checked :class:`FederatedConfig` from keyword options (an unknown one is a TypeError naming the known)."""
    known = set(FederatedConfig.__dataclass_fields__)
    bad = sorted(set(config) - known)
    if bad:
        raise TypeError(f"unknown option(s) {bad} for a federation (known: {', '.join(sorted(known))})")
    cfg = FederatedConfig(**config)
    if cfg.server_epochs is None:
        cfg = replace(cfg, server_epochs=1 if cfg.server_public is True else 10)
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.kd not in KD_KINDS or cfg.client_init not in ("own", "global") or cfg.intra not in INTRA_KINDS:
        raise ValueError(f"kd must be one of {', '.join(KD_KINDS)}, client_init 'own' or 'global' and intra "
                         f"{' or '.join(map(repr, INTRA_KINDS))}, got {cfg.kd!r}, {cfg.client_init!r}, {cfg.intra!r}")
    for name in ("server_public", "average"):
        if not isinstance(getattr(cfg, name), bool):
            raise TypeError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    if cfg.average and cfg.method != "creamfl":
        raise ValueError(f"average applies to method 'creamfl' (method {cfg.method!r} averages weights or not by "
                         "itself)")
    if cfg.server_public and cfg.method != "fedavg":
        raise ValueError(f"server_public applies to method 'fedavg' (a {cfg.method} server always trains on the "
                         "public pairs)")
    if cfg.projector not in ("mlp", "linear"):
        raise ValueError(f"projector must be 'mlp' or 'linear', got {cfg.projector!r}")
    for name in ("reg_temperature", "kd_temperature"):  # divisors of CreamFL's similarities: 0 or less gives NaN
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in ("reg_weight", "kd_weight"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    if isinstance(cfg.local_epochs, bool) or not isinstance(cfg.local_epochs, (int, np.integer)):
        raise ValueError(f"local_epochs must be a whole number here, got {cfg.local_epochs!r} (several counts, or "
                         "'auto', are chosen on the clients' val pairs by federate only)")
    if min(cfg.rounds, cfg.local_epochs, cfg.server_epochs, cfg.patience) < 1 or cfg.batch_size < 2 or cfg.kd_mix < 0:
        raise ValueError("rounds, local_epochs, server_epochs and patience must be >= 1, batch_size >= 2 and "
                         "kd_mix >= 0")
    return cfg


class Ledger:
    """Every message that crosses: checked, counted, logged, passed to ``on_message(direction, client, msg)``."""

    def __init__(self, server: Server, dim: int, on_message: Callable[[str, int, Message], None] | None):
        self.shapes, self.n_public, self.dim = server.shapes, server.n_public, dim
        self.n_mix = server.cfg.kd_mix if server.cfg.method == "creamfl" else 0
        self.weights_too = server.cfg.method == "creamfl" and server.cfg.average
        self.on_message = on_message
        self.bytes = {"up": 0, "down": 0, "evaluation": 0}
        self.by_kind: dict[str, int] = {}
        self.evaluation = ("val",)

    def cross(self, msg: Message, client: int) -> Message:
        """Check, count and pass on one message (the kinds in ``evaluation`` are counted apart: they only serve to
        choose the round)."""
        check_message(msg, shapes=self.shapes, n_public=self.n_public, dim=self.dim, n_mix=self.n_mix,
                      weights_too=self.weights_too)
        way = "up" if msg.sender == "client" else "down"
        self.bytes["evaluation" if msg.kind in self.evaluation else way] += msg.nbytes()
        self.by_kind[msg.kind] = self.by_kind.get(msg.kind, 0) + msg.nbytes()
        log.debug("%s client %d: %s", "from" if way == "up" else "to", client, msg.summary())
        if self.on_message is not None:
            self.on_message(way, client, msg)
        return msg

    def exchange(self, parties, msg: Message) -> list[Message]:
        """Send ``msg`` to every client (``parties.exchange``: at once) and return their checked replies, in order."""
        sent = [self.cross(msg, i) for i in range(len(parties.n_val))]
        return [self.cross(r, i) for i, r in enumerate(parties.exchange(sent))]


def federate(
    clients: Sequence[str | Path | Manifest],
    public: str | Path | Manifest | Sequence[str | Path | Manifest],
    *,
    encoders: Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    on_message: Callable[[str, int, Message], None] | None = None,
    runner: Callable[[Sequence[ClientSpec], Mapping[str, np.ndarray]], AbstractContextManager[Any]] | None = None,
    **config: Any,
) -> "SpaceCore":
    """A Space bound by ``len(clients)`` clients (one manifest each) and a server holding ``public`` (see the
    module doc); ``encoders``: modality -> encoder spec, shared by everyone (default: each of ``modalities``' or the
    public set's base fields' default encoder); ``runner(specs, public features)``: a context manager giving the
    clients, each built on its own side from its :class:`ClientSpec` (default :func:`~anybind.federated_clients.local_clients`, in this
    process; :func:`anybind.scale.federated_ray.ray_clients`: one Ray actor each); ``**config``:
    :class:`FederatedConfig`, where ``local_epochs`` may also be several counts (``"1,3,5"``, a list, or ``"auto"``:
    :data:`~anybind.federated_epochs.AUTO_LOCAL_EPOCHS`): one federation per count, the one whose kept round scores
    highest on the clients' val pairs is returned (:mod:`anybind.federated_epochs`; the lineage's ``local_epochs_search`` records the grid, each
    count's val score and the bytes every federation sent).

    A building block below the public class: it returns a :class:`~anybind.space_core.SpaceCore`.  Users call
    ``Space.federate(...)`` (or ``anybind federate``), which hands out the public :class:`anybind.Space`."""
    t0 = time.perf_counter()
    grid = local_epoch_grid(config.get("local_epochs", 1))
    cfgs = [federated_config({**config, "local_epochs": n}) for n in grid]
    if not clients:
        raise DataError("a federation needs at least one client manifest")
    fc, pub_mans, pub_fs, encoders = _public(public, encoders, modalities, cache, strict, progress)
    specs = [[ClientSpec(portable(c), i, dict(encoders), portable(fc.root), cfg, strict) for i, c in enumerate(clients)]
             for cfg in cfgs]
    runs = [_federation(cfg, sp, pub_mans, pub_fs, progress, on_message, runner, need_val=len(grid) > 1)
            for cfg, sp in zip(cfgs, specs)]
    vals = [training["best_val"] for *_, training in runs]
    cfg, projectors, logit_scale, entry, training = runs[choose_local_epochs(grid, vals) if len(runs) > 1 else 0]
    if len(runs) > 1:
        entry["local_epochs_search"] = {
            "grid": list(grid), "chosen": cfg.local_epochs, "val": vals,
            "best_round": [r[3]["best_round"] for r in runs], "metric": VAL_METRIC, "rule": LOCAL_EPOCHS_RULE,
            "bytes": sum(r[3]["bytes"]["up"] + r[3]["bytes"]["down"] + r[3]["bytes"]["evaluation"] for r in runs)}
    return _space(encoders, pub_fs.identities, projectors, logit_scale, cfg, entry, training, t0)


def _federation(cfg: FederatedConfig, specs: Sequence[ClientSpec], pub_mans, pub_fs, progress: bool,
                on_message: Callable[[str, int, Message], None] | None, runner, *, need_val: bool = False) -> tuple:
    """One federation with ``cfg``: ``(cfg, the kept round's projectors, logit scale, lineage entry, training
    record)``; ``need_val``: refuse clients without any val pair (a local-epoch count is chosen on them)."""
    loss_fn = federated_loss()
    with training_threads(cfg.threads), contextlib.ExitStack() as stack:
        pub = public_features(pub_fs)
        server = Server(pub, cfg, loss_fn, cfg.seed)
        parties = stack.enter_context(runner(specs, pub) if runner else local_clients(specs, pub, progress))
        ledger = Ledger(server, cfg.dim, on_message)
        if cfg.method == "creamfl" and cfg.client_init == "own":  # its clients keep their projectors: the global
            ledger.evaluation = ("val", "global")  # model is only scored
        use_val = any(n > 0 for n in parties.n_val)
        if need_val and not use_val:
            raise DataError(f"none of the {len(specs)} clients holds a val pair: a local-epoch count is chosen on "
                            "the clients' val pairs; give one count (local_epochs=N)")
        sel = EpochSelection(use_val, cfg.patience)
        history: list[dict[str, Any]] = []
        if cfg.method == "creamfl" or cfg.server_public:  # the server starts from the public pairs
            server.distil(cfg.server_epochs)
        best = None
        with progress_bar(progress, f"federating ({cfg.method}, {len(specs)} clients, {cfg.local_epochs} local "
                          f"epoch{'s' if cfg.local_epochs > 1 else ''})", cfg.rounds, "steps", unit="round") as bar:
            for rnd in range(cfg.rounds + 1):
                before = dict(ledger.bytes)
                if rnd > 0:
                    server.aggregate(ledger.exchange(parties, server.train_message()))
                vals = ledger.exchange(parties, server.global_message())
                score = _weighted(vals) if use_val else None
                history.append({"round": rnd, "val": score, "temperature": float(np.exp(-server.logit_scale.item())),
                                **{f"bytes_{k}": ledger.bytes[k] - before[k] for k in ledger.bytes}})
                if sel.update(rnd, score):
                    best = ({m: copy.deepcopy(p.state_dict()) for m, p in server.projectors.items()},
                            float(server.logit_scale.item()), rnd)
                if rnd > 0:
                    bar.advance(msg=sel.progress(float("nan"), score).replace("loss nan ", ""))
                if sel.stop:
                    break
    if best is None:  # no round could be scored (NaN on every client's val pairs): keep the last one, and say so
        log.warning("federate: no round could be scored on the clients' val pairs; keeping the last round (%d)",
                    history[-1]["round"])
        best = ({m: copy.deepcopy(p.state_dict()) for m, p in server.projectors.items()},
                float(server.logit_scale.item()), history[-1]["round"])
    for m, sd in best[0].items():
        server.projectors[m].load_state_dict(sd)
    rounds = history[1:]
    entry = {
        "event": "federate", "method": cfg.method, "clients": len(specs), "clients_ran": parties.where, "rounds": cfg.rounds,
        "rounds_run": len(rounds), "best_round": best[2], "modalities": server.modalities,
        "public": _describe(pub_mans, server.modalities),
        "bytes": {**ledger.bytes, "by_kind": dict(ledger.by_kind),
                  "per_round": round(sum(h["bytes_up"] + h["bytes_down"] for h in rounds) / max(1, len(rounds))),
                  "evaluation_per_round": round(sum(h["bytes_evaluation"] for h in rounds) / max(1, len(rounds)))},
    }
    training = {"best_epoch": best[2], "epochs_run": len(rounds), **selection_record(use_val, sel.best, VAL_METRIC),
                "history": history}
    return cfg, server.projectors, best[1], entry, training


def train_alone(
    data: str | Path | Manifest,
    public: str | Path | Manifest | Sequence[str | Path | Manifest],
    *,
    encoders: Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    **config: Any,
) -> "SpaceCore":
    """One client's data trained alone, as :func:`federate` would train it (the server's start and standardisation,
    the client's optimiser and random streams), ``rounds * local_epochs`` epochs with early stopping on its own
    val pairs: with one client, ``federate(method="fedavg", local_epochs=1)`` gives the same projectors.

    A baseline of :func:`anybind.federated_study.federated_study`, below the public class: it returns a
    :class:`~anybind.space_core.SpaceCore`; ``Space.from_core`` adopts it as an :class:`anybind.Space`."""
    t0 = time.perf_counter()
    cfg = federated_config({"method": "fedavg", **config})
    fc, pub_mans, pub_fs, encoders = _public(public, encoders, modalities, cache, strict, progress)
    loss_fn = federated_loss()
    with training_threads(cfg.threads):
        pub = public_features(pub_fs)
        server = Server(pub, cfg, loss_fn, cfg.seed)
        client = build_client(ClientSpec(data, 0, dict(encoders), str(fc.root), cfg, strict), pub, progress)
        client.handle(server.global_message())
        res = client.fit(cfg.rounds * cfg.local_epochs, use_val=client.n_val > 0, patience=cfg.patience * cfg.local_epochs,
                         start=True)
    entry = {"event": "federate", "method": "alone", "clients": 1, "rounds": cfg.rounds,
             "modalities": client.modalities, "public": _describe(pub_mans, server.modalities)}
    projectors = {m: client.projectors[m] for m in client.modalities}
    return _space(encoders, pub_fs.identities, projectors, res.logit_scale, cfg, entry, res.record(VAL_METRIC), t0)


# ----------------------------------------------------------------------------- helpers
def _public(public, encoders, modalities, cache, strict, progress):
    """The public manifests, the encoder of every modality bound (``encoders``, else the default of each
    ``modalities`` or base field of the public set) and the public feature set."""
    from .encoders.video import temporal_frames
    from .recipe import default_spec
    from .manifests import fit_manifests
    from .train import FeatureSet

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    items = list(public) if isinstance(public, (list, tuple)) else [public]
    given = dict(encoders or {})
    mans, mods = fit_manifests(items, modalities or (list(given) if given else None), given, strict, progress)
    encoders = {m: given.get(m) or default_spec(m) for m in mods}
    if temporal := [m for m, spec in encoders.items() if temporal_frames(spec)]:
        raise DataError(f"{', '.join(temporal)}: a pool=attn video spec needs the in-memory fit (its projector pools "
                        "frames); federated binding trains flat projectors: use pool=mean here")
    present = sorted({m for man in mans for r in man.records for m in r.values} & set(encoders))
    if len(present) < 2:
        raise DataError(f"{', '.join(str(m.path) for m in mans)}: the public set has {len(present)} of the encoders' "
                        f"modalities ({', '.join(sorted(encoders))}): it needs pairs of 2 or more")
    fs = FeatureSet.from_manifests(mans, {m: encoders[m] for m in present}, fc, progress=progress)
    return fc, mans, fs, {m: encoders[m] for m in present}


def _weighted(vals: Sequence[Message]) -> float:
    got = [(float(v.counts["val"]), float(v.counts["n_val"])) for v in vals
           if v.counts["n_val"] > 0 and not np.isnan(v.counts["val"])]
    if len(got) == 1:
        return got[0][0]
    return float(sum(s * n for s, n in got) / sum(n for _, n in got)) if got else float("nan")


def _describe(mans: Sequence[Manifest], modalities: Sequence[str]) -> list[dict[str, Any]]:
    return [{"manifest": str(m.path), "fingerprint": m.fingerprint(modalities), "records": len(m.records)} for m in mans]


def _space(encoders, identities, projectors, logit_scale: float, cfg: FederatedConfig, entry: dict, training: dict,
           t0: float) -> "SpaceCore":
    from .space_core import SpaceCore
    from .version import __version__

    mods = sorted(projectors)
    for p in projectors.values():
        p.eval()
    config = {"method": "contrastive", "loss": "infonce", "dim": cfg.dim, "projector": cfg.projector,
              "hidden": cfg.hidden, "temperature": cfg.temperature, "learn_temperature": cfg.learn_temperature,
              "federated": cfg.method if entry["method"] != "alone" else "alone"}
    space = SpaceCore({m: encoders[m] for m in mods}, dict(projectors), logit_scale,
                  identities={m: identities[m] for m in mods if m in identities}, config=config)
    space.info["metrics"]["val/score"] = training.get("best_val")
    space.info["training"] = training
    space.info["lineage"].append({**entry, "config": cfg.to_dict(), "seconds": round(time.perf_counter() - t0, 2),
                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anybind": __version__})
    return space


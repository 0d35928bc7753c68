"""One training loop for every trainer: in-memory fit, progressive binding, streaming and Ray Train.

The trainers differ only in where batches come from and how gradients are reduced (on Ray
Train the model is wrapped in DDP, whose ``backward`` averages the gradients over the
workers); what they share is here:

* :func:`training_threads`: torch threads and flushed denormals while training;
* :func:`make_temperature`, :func:`make_optimizer` (AdamW: projector weights decayed; the
  temperature, the loss' own parameters and Symile's missing placeholders not), :func:`clamp_temperature`;
* :class:`IndexSampler`: batches of record indices drawn from memory (in-memory and progressive);
* :func:`fit_loop`: epochs of steps, the val score through a callback, best-epoch selection and
  early stopping (:class:`~anybind.epochs.EpochSelection`), the history rows and the progress bar; the
  steps run on the process's device and precision (:mod:`anybind.encoders.device`: autocast, a gradient
  scaler for fp16), and the trained modules come back to the CPU;
* :func:`ridge_select` / :func:`prior_ridge` / :func:`locked_ridge_start`: the ridge start, its one shrinkage grid,
  its prior and its start guard (progressive binding calls :func:`prior_ridge` too).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .encoders.device import Runtime, autocast, current_runtime, place
from .numerics import flush_denormals, torch_threads
from .epochs import EpochSelection, nearest_within_se, selection_record
from .progress import progress_bar

log = logging.getLogger(__name__)

#: the temperature is clamped to [1/100, 1] (the logit scale to [0, log 100]) before the first step and after every
#: step: a model's forward never needs to clamp it
MAX_LOGIT_SCALE = math.log(100)


@contextmanager
def training_threads(threads: int) -> Iterator[None]:
    """Train with ``threads`` torch threads and denormals flushed; the previous settings come back after.

    Small projectors gain nothing from more threads, and on a busy machine multi-threaded
    OpenMP spins (5x slower measured on 2 shared cores).  Adam's second moments underflow
    to denormals, ~2x slower on CPUs (measured 2.5 s -> 1.5 s for 5 epochs).
    """
    with torch_threads(threads):
        flush_denormals(True)
        try:
            yield
        finally:
            flush_denormals(False)


def make_temperature(temperature: float, learn: bool = True) -> nn.Parameter:
    """The logit scale ``log(1 / temperature)`` as a parameter (learnt unless ``learn=False``)."""
    return nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learn)


def make_optimizer(
    decayed: Iterable[nn.Parameter], logit_scale: nn.Parameter, undecayed: Iterable[nn.Parameter] = (), *,
    lr: float, weight_decay: float, own_rate: Iterable[nn.Parameter] = (), own_lr: float | None = None,
) -> torch.optim.AdamW:
    """AdamW over two groups: ``decayed`` (projector weights) with ``weight_decay``; the temperature and
    ``undecayed`` (the loss' own parameters such as SigLIP's bias, Symile's missing placeholders; frozen
    ones left out) without.  ``own_rate`` (a temporal projector's attention scorer, also in ``decayed`` or
    not): a third group, decayed, at ``own_lr`` (``None``: ``lr``)."""
    rest = [p for p in undecayed if p.requires_grad]
    fast = list(own_rate)
    ids = {id(p) for p in fast}
    groups = [{"params": [p for p in decayed if id(p) not in ids], "weight_decay": weight_decay},
              {"params": [logit_scale] + rest, "weight_decay": 0.0}]
    if fast:
        groups.append({"params": fast, "weight_decay": weight_decay, "lr": lr if own_lr is None else own_lr})
    return torch.optim.AdamW(groups, lr=lr)


@torch.no_grad()
def clamp_temperature(logit_scale: torch.Tensor) -> None:
    """Keep the temperature in [1/100, 1] (as CLIP does)."""
    logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def temperature_of(logit_scale: torch.Tensor) -> float:
    return math.exp(-logit_scale.item())


class IndexSampler:
    """Batches of indices from in-memory member lists, one cursor per key.

    Each key walks a fresh seeded permutation of its members ``batch_size`` at a time (a new
    permutation when the rest would not fill a batch); a key with sampling probabilities
    (per-corpus weights) draws without replacement with them instead.  Every key's first
    permutation is drawn when it is added, so the random stream does not depend on which
    keys are used.
    """

    def __init__(self, members: Mapping[Hashable, np.ndarray], batch_size: int, rng: np.random.Generator,
                 probabilities: Mapping[Hashable, np.ndarray] | None = None):
        self.batch_size, self.rng = batch_size, rng
        self.members: dict[Hashable, np.ndarray] = {}
        self.probabilities: dict[Hashable, np.ndarray] = {}
        self.cursors: dict[Hashable, tuple[np.ndarray, int]] = {}
        for k, m in members.items():
            self.add(k, m, (probabilities or {}).get(k))

    def add(self, key: Hashable, members: np.ndarray, probabilities: np.ndarray | None = None) -> None:
        """Members of another key (its first permutation drawn now); an existing key is replaced."""
        self.members[key] = members
        self.probabilities.pop(key, None)
        if probabilities is not None:
            self.probabilities[key] = probabilities
        self.cursors[key] = (self.rng.permutation(members), 0)

    def next(self, key: Hashable) -> np.ndarray:
        mem = self.members[key]
        bs = min(self.batch_size, len(mem))
        if key in self.probabilities:
            return self.rng.choice(mem, size=bs, replace=False, p=self.probabilities[key])
        order, pos = self.cursors[key]
        if pos + bs > len(order):
            order, pos = self.rng.permutation(mem), 0
        self.cursors[key] = (order, pos + bs)
        return order[pos : pos + bs]

    def steps(self, keys: Iterable[Hashable] | None = None) -> int:
        """Steps per epoch: enough batches for the largest of ``keys`` (default: every key)."""
        keys = list(self.members) if keys is None else list(keys)
        return max(1, math.ceil(max(len(self.members[k]) for k in keys) / self.batch_size))


@dataclass
class LoopResult:
    """What :func:`fit_loop` kept: the best epoch's state and how it was chosen."""

    state: dict[str, dict[str, torch.Tensor]]  # keep-name -> state dict of the kept epoch
    logit_scale: float  # the kept epoch's
    best_epoch: int
    best_val: float | None
    use_val: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    se_rule: dict[str, Any] | None = None  # select_se > 0: the standard-error rule's record (best, its se, chosen)

    def record(self, val_metric: str) -> dict[str, Any]:
        """The training-record fields every trainer saves."""
        return {"best_epoch": self.best_epoch, "epochs_run": len(self.history),
                **selection_record(self.use_val, self.best_val, val_metric), "history": self.history,
                **({"epoch_se_rule": self.se_rule} if self.se_rule else {})}


def fit_loop(
    model: nn.Module,
    batches: Iterator[Any],
    optimizer: torch.optim.Optimizer,
    logit_scale: torch.Tensor,
    *,
    epochs: int,
    steps: int,
    use_val: bool,
    patience: int,
    score: Callable[[int], float | None],
    keep: Mapping[str, nn.Module],
    start: bool = False,
    penalty: Callable[[], torch.Tensor] | None = None,
    on_epoch: Callable[[int, float | None], None] | None = None,
    progress: bool = False,
    label: str = "training",
    runtime: Runtime | None = None,
    select_se: float = 0.0,
) -> LoopResult:
    """Train ``model`` (``model(batch)`` returns one step's loss) for up to ``epochs`` epochs of ``steps`` steps.

    ``batches``: an endless iterator of whatever ``model`` takes.  ``model`` may be DDP-wrapped:
    its ``backward`` then reduces the gradients.  After every epoch (in eval mode) ``score(epoch)``
    gives the val score (called only when ``use_val``); the best epoch's state of the ``keep``
    modules is snapshotted, restored into them at the end, and returned, and training stops
    after ``patience`` epochs without improvement (see :class:`~anybind.epochs.EpochSelection`).
    ``start``: the weights as they are (a warm start) compete as epoch 0.  ``penalty()``: added to
    every step's loss (a regulariser); ``on_epoch(epoch, score)``: called after each epoch is scored.
    ``runtime``: where and at what precision the steps run (default: the process's); ``score`` then sees
    the modules on that device, and they are moved back to the CPU at the end.  ``select_se`` > 0 (the standard-error
    rule, :func:`~anybind.epochs.nearest_within_se`): ``score`` gives per-item val scores (their mean is the score,
    early stopping as above) and the kept epoch is the earliest within ``select_se`` standard errors of the best
    (epoch 0, with ``start``: the start); only the epochs that beat every earlier one are held for it.
    """
    sel = EpochSelection(use_val, patience)
    best: tuple[dict, float, int] | None = None
    history: list[dict[str, Any]] = []
    # select_se: (items, mean, snapshot) of each record-setting epoch still within reach of the best
    held: list[tuple[np.ndarray, float, tuple[dict, float, int]]] = []

    def scored(epoch: int) -> tuple[float | None, np.ndarray | None]:
        """The epoch's val score and, with ``select_se``, its per-item scores (their mean is the score)."""
        x = score(epoch)
        if select_se <= 0:
            return x, None
        items = np.atleast_1d(np.asarray(x, dtype=np.float64))
        return float(items.mean()), items

    def hold(items: np.ndarray | None, mean: float | None, kept: tuple[dict, float, int]) -> None:
        """``select_se``: hold a record-setting epoch, and drop the held ones out of reach of its new best."""
        if items is not None:
            held.append((items, mean, kept))
            held[:] = [h for h in held if _within_reach(h[0], sel.best, select_se)]

    rt = runtime or current_runtime()
    place(model, rt.device)
    scaler = torch.amp.GradScaler(rt.device_type) if rt.precision == "fp16" else None

    def snapshot(epoch: int) -> tuple[dict, float, int]:
        return {k: _cpu_state(m) for k, m in keep.items()}, float(logit_scale.item()), epoch

    clamp_temperature(logit_scale)  # in range from the first step on (a starting temperature may lie outside)
    if start and use_val:
        model.eval()
        s0, items = scored(0)
        if sel.update(0, s0):
            best = snapshot(0)
            hold(items, s0, best)
        history.append({"epoch": 0, "loss": float("nan"), "val": s0, "temperature": temperature_of(logit_scale)})
    with progress_bar(progress, label, epochs, "steps") as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            ep_loss = 0.0
            for _ in range(steps):
                batch = next(batches)
                optimizer.zero_grad(set_to_none=True)
                with autocast(rt):
                    total = model(batch)
                    if penalty is not None:
                        total = total + penalty()
                if scaler is None:
                    total.backward()
                    optimizer.step()
                else:  # fp16: scaled loss, unscaled and checked gradients
                    scaler.scale(total).backward()
                    scaler.step(optimizer)
                    scaler.update()
                clamp_temperature(logit_scale)
                ep_loss += float(total.detach())
            model.eval()
            s, items = scored(epoch) if use_val else (None, None)
            history.append({"epoch": epoch, "loss": ep_loss / steps, "val": s,
                            "temperature": temperature_of(logit_scale)})
            if on_epoch is not None:
                on_epoch(epoch, s)
            if sel.update(epoch, s):
                best = snapshot(epoch)
                hold(items, s, best)
            note = sel.progress(ep_loss / steps, s)
            bar.advance(msg=note)
            log.debug("%s epoch %d: %s", label, epoch, note)
            if sel.stop:
                break
    rule, kept_val = None, sel.best
    if select_se > 0 and held:  # the earliest record-setting epoch within select_se standard errors of the best
        i, rule = nearest_within_se([h[0] for h in held], select_se)
        rule.update(best=held[rule["best"]][2][2], chosen=held[i][2][2])
        _, kept_val, best = held[i]  # its val mean, kept unrounded (the rule's record rounds it)
    if best is None:  # no epoch was kept (none ran, or no score was a number): the weights as they are
        best = snapshot(len(history))
    for k, sd in best[0].items():
        keep[k].load_state_dict(sd)
    if rt.device != "cpu":
        model.to("cpu")
        for m in keep.values():
            m.to("cpu")
    return LoopResult(best[0], best[1], best[2], kept_val, use_val, history, rule)


def _within_reach(items: np.ndarray, best: float | None, k: float) -> bool:
    """Whether an epoch with these per-item scores can still be within ``k`` standard errors of any best to come: at
    least the best so far minus ``k`` times the largest standard error items in [0, 1] can have (0.5 / sqrt(n - 1))."""
    if best is None or len(items) < 2:
        return True
    return float(items.mean()) >= best - k * 0.5 / math.sqrt(len(items) - 1)


def _cpu_state(module: nn.Module) -> dict:
    """A copy of a module's state on the CPU (a snapshot of a model training on a GPU)."""
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in module.state_dict().items()}


# the ridge start lives in anybind.ridge; re-exported here, where every caller found it
from .ridge import (  # noqa: E402,F401
    GUARD_ALPHAS, RIDGE_ALPHAS, PairBlocks, locked_ridge_start, prior_ridge, ridge_select)

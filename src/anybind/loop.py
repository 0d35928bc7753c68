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
* :func:`ridge_select` / :func:`locked_ridge_start`: the ridge start and its one shrinkage grid.
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
import torch.nn.functional as F
from torch import nn

from .encoders.device import Runtime, autocast, current_runtime, place
from .numerics import flush_denormals, torch_threads
from .epochs import EpochSelection, selection_record
from .errors import DataError
from .metrics import query_ranks
from .progress import progress_bar

log = logging.getLogger(__name__)

#: the temperature is clamped to [1/100, 1] (the logit scale to [0, log 100]) before the first step and after every
#: step: a model's forward never needs to clamp it
MAX_LOGIT_SCALE = math.log(100)
#: ridge shrinkage candidates (lam = alpha * n), chosen on the validation pairs
RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)
#: with the start guard (a prior to fall back on), the shrinkage path goes on towards the prior, which ends it
#: (infinite shrinkage: the training-free start itself); chosen on val like the rest
GUARD_ALPHAS = (30.0, 100.0, 1000.0)


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

    def record(self, val_metric: str) -> dict[str, Any]:
        """The training-record fields every trainer saves."""
        return {"best_epoch": self.best_epoch, "epochs_run": len(self.history),
                **selection_record(self.use_val, self.best_val, val_metric), "history": self.history}


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
    the modules on that device, and they are moved back to the CPU at the end.
    """
    sel = EpochSelection(use_val, patience)
    best: tuple[dict, float, int] | None = None
    history: list[dict[str, Any]] = []

    rt = runtime or current_runtime()
    place(model, rt.device)
    scaler = torch.amp.GradScaler(rt.device_type) if rt.precision == "fp16" else None

    def snapshot(epoch: int) -> tuple[dict, float, int]:
        return {k: _cpu_state(m) for k, m in keep.items()}, float(logit_scale.item()), epoch

    clamp_temperature(logit_scale)  # in range from the first step on (a starting temperature may lie outside)
    if start and use_val:
        model.eval()
        s0 = score(0)
        if sel.update(0, s0):
            best = snapshot(0)
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
            s = score(epoch) if use_val else None
            history.append({"epoch": epoch, "loss": ep_loss / steps, "val": s,
                            "temperature": temperature_of(logit_scale)})
            if on_epoch is not None:
                on_epoch(epoch, s)
            if sel.update(epoch, s):
                best = snapshot(epoch)
            note = sel.progress(ep_loss / steps, s)
            bar.advance(msg=note)
            log.debug("%s epoch %d: %s", label, epoch, note)
            if sel.stop:
                break
    if best is None:  # no epoch was kept (none ran, or no score was a number): the weights as they are
        best = snapshot(len(history))
    for k, sd in best[0].items():
        keep[k].load_state_dict(sd)
    if rt.device != "cpu":
        model.to("cpu")
        for m in keep.values():
            m.to("cpu")
    return LoopResult(best[0], best[1], best[2], sel.best, use_val, history)


def _cpu_state(module: nn.Module) -> dict:
    """A copy of a module's state on the CPU (a snapshot of a model training on a GPU)."""
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- ridge start
def ridge_select(
    G: torch.Tensor,
    R: torch.Tensor,
    n: int,
    score: Callable[[torch.Tensor], float | np.ndarray],
    *,
    alphas: Iterable[float] = RIDGE_ALPHAS,
    back: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prior: torch.Tensor | None = None,
    se: float = 0.0,
    record: dict[str, Any] | None = None,
) -> tuple[float, torch.Tensor]:
    """``(alpha, W)``: the ridge solution ``W = back((G + alpha n I)^-1 R)`` (float64) whose ``score(W)`` is best.

    ``G``, ``R``: the normal equations (``Z^T Z``, ``Z^T T``; or the dual ``Z Z^T``, ``T`` with
    ``back = Z^T @``).  A NaN score (no val pairs) counts as ``-alpha``: the weakest shrinkage wins.
    ``prior`` (primal only): shrink towards it instead of zero, ``W = (G + lam I)^-1 (R + lam prior)``.
    ``score`` may give per-item scores (their mean is the score).  ``se`` > 0 (the standard-error rule): the most
    shrunk alpha (``alphas`` ascending) whose score is within ``se`` standard errors (of the best's per-item
    scores) of the best; ``record`` (a dict) is filled with the best alpha, its score and standard error.
    """
    if prior is not None and back is not None:
        raise ValueError("ridge_select: a prior needs the primal normal equations (no back=)")
    G, R = G.double(), R.double()
    eye = torch.eye(G.shape[0], dtype=torch.float64)
    path: list[tuple[float, float, float, torch.Tensor]] = []  # (score, its standard error, alpha, W)
    for alpha in alphas:
        lam = alpha * n
        S = torch.linalg.solve(G + lam * eye, R if prior is None else R + lam * prior.double())
        W = back(S) if back is not None else S
        x = score(W)
        v = np.atleast_1d(np.asarray(np.nan if x is None else x, dtype=np.float64))
        s = float(v.mean())
        err = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 and not math.isnan(s) else 0.0
        path.append((-alpha, 0.0, alpha, W) if math.isnan(s) else (s, err, alpha, W))
    pick = best = max(path, key=lambda p: p[0])  # the first best: the least shrunk of ties
    if se > 0:
        if list(alphas) != sorted(alphas):
            raise ValueError("ridge_select: the standard-error rule needs the alphas in ascending order")
        pick = [p for p in path if p[0] >= best[0] - se * best[1]][-1]
    if record is not None:
        record.update({"rule": f"{se:g}se", "best_alpha": best[2], "best_val": round(best[0], 6),
                       "best_se": round(best[1], 6)} if se > 0 else {})
    return pick[2], pick[3]


PairBlocks = Callable[[str], Iterable[tuple[np.ndarray, np.ndarray]]]


@torch.no_grad()
def locked_ridge_start(projectors: Mapping[str, nn.Module], lock: str | None, train_pairs: PairBlocks,
                       val_pairs: Callable[[str], tuple[np.ndarray, np.ndarray] | None], *,
                       prior: Callable[[str], torch.Tensor | None] | None = None,
                       exact_prior: bool = False, guard: dict[str, dict[str, Any]] | None = None,
                       se: float = 0.0, rule: dict[str, dict[str, Any]] | None = None) -> dict[str, float | None]:
    """Start every unlocked projector at the ridge regression onto the locked modality's space.

    For each modality ``m``, ``W = argmin ||Z W - T||^2 + lam ||W - W0||^2`` over the training pairs
    with ``lock`` (``Z``: ``m``'s standardised features, ``T``: the locked space), ``lam = alpha n``
    with ``alpha`` chosen on the val pairs from :data:`RIDGE_ALPHAS` (:func:`ridge_select`); the
    MLP path starts at zero on top of it.  ``train_pairs(m)`` yields blocks of (``m``, ``lock``)
    features (the normal equations are summed over them: memory is one block);
    ``val_pairs(m)``: the val pairs, or ``None`` when there are fewer than 2.  ``W0`` is zero, or
    ``c * prior(m)`` where ``prior(m)`` gives a map (``in_dim``, ``out_dim``), ``c`` its least-squares
    scale onto the targets (``<Z W0, T> / ||Z W0||^2``, from the same normal equations; where that is not positive,
    pairs that disagree with the prior, ``||T|| / ||Z W0||``: the prior's direction, never its opposite).  ``exact_prior``: a
    modality with a prior starts at ``c * prior(m)`` itself (infinite shrinkage: the prior as a branch whose
    residual starts at zero; alpha None).  ``guard`` (a dict, filled in): the training-free start guard -- a
    modality with a prior follows the shrinkage path on towards it (:data:`GUARD_ALPHAS` after the grid) and also
    scores ``c * prior(m)`` itself on the val pairs, keeping it (alpha None) when the best ridge solution does not
    beat it there: the start is never worse on val than the prior alone (the label bridge); ``guard[m]`` records
    both scores and what was kept (with no val pairs: the ridge, and a ``note`` saying so).  ``se`` > 0: the
    standard-error rule of :func:`ridge_select` over the val pairs' scores (each pair's mean of both directions;
    ``rule[m]``, a dict filled in, records the best alpha, its score and standard error).  Returns each alpha.
    """
    if not lock:
        raise DataError("init='ridge' needs a locked modality (lock='text', say): it regresses onto its space")
    tgt = projectors[lock]
    chosen = {}
    for m, pr in projectors.items():
        if m == lock:
            continue
        G = R = None
        n, T_norm2 = 0, torch.zeros((), dtype=torch.float64)
        for xm, xl in train_pairs(m):
            Z = pr.standardized(torch.from_numpy(xm))
            T = tgt(torch.from_numpy(xl))
            g, r = (Z.T @ Z).double(), (Z.T @ T).double()
            G, R = (g, r) if G is None else (G + g, R + r)
            T_norm2 = T_norm2 + T.double().pow(2).sum()
            n += len(xm)
        if n < 3:
            raise DataError(f"init='ridge': {m!r} has {n} training pairs with {lock!r}; need at least 3")
        va = val_pairs(m)

        def per_pair(W: torch.Tensor, pr=pr, va=va) -> np.ndarray:  # each val pair's mean of R@1/5/10 both ways
            if va is None:
                return np.array(np.nan)
            fm, fl = va
            q = F.normalize(pr.standardized(torch.from_numpy(fm)) @ W.float(), dim=-1).numpy()
            g = F.normalize(tgt(torch.from_numpy(fl)), dim=-1).numpy()
            r1 = query_ranks(q @ g.T, query_keys=fm, gallery_keys=fl)
            r2 = query_ranks(g @ q.T, query_keys=fl, gallery_keys=fm)
            return sum((r <= k).astype(np.float64) for r in (r1, r2) for k in (1, 5, 10)) / 6

        def score(W: torch.Tensor) -> float:
            return float(per_pair(W).mean())

        W0 = prior(m) if prior is not None else None
        if W0 is not None:  # scaled onto the targets: c = <Z W0, T> / ||Z W0||^2 = tr(W0' R) / tr(W0' G W0)
            W0 = W0.double()
            norm2 = (W0 * (G @ W0)).sum().clamp_min(1e-12)
            c = float((W0 * R).sum() / norm2)
            if c <= 0:  # pairs that do not agree with the prior at all (shuffled): its direction, never its
                c = float((T_norm2 / norm2).sqrt())  # opposite, at the targets' norm
            W0 = W0 * c
        if exact_prior and W0 is not None:
            alpha, W = None, W0
        else:
            path = RIDGE_ALPHAS + GUARD_ALPHAS if guard is not None and W0 is not None else RIDGE_ALPHAS
            rec: dict[str, Any] = {}
            alpha, W = ridge_select(G, R, n, per_pair, prior=W0, alphas=path, se=se, record=rec)
            if rule is not None and rec:
                rule[m] = rec
            if guard is not None and W0 is not None and va is None:  # nothing to check on: said, not skipped
                guard[m] = {"kept": "ridge", "note": "no val pairs: the ridge start is not checked against the prior"}
            elif guard is not None and W0 is not None:  # training never below the start on val
                s_ridge, s_start = score(W), score(W0)
                keep = "start" if s_start >= s_ridge else "ridge"
                guard[m] = {"ridge_val": round(s_ridge, 6), "start_val": round(s_start, 6), "kept": keep}
                if keep == "start":
                    alpha, W = None, W0
        pr.linear.weight.copy_(W.float().T)
        pr.linear.bias.zero_()
        if pr.mlp is not None:
            pr.mlp[-1].weight.zero_()
            pr.mlp[-1].bias.zero_()
        pr.ridge_alpha = chosen[m] = alpha
    return chosen

"""Robust fine-tuning (issue 16): a trained space that keeps what its training-free start knew.

The levers, each a :class:`~anybind.train.TrainConfig` field, measured cell by cell in
``anybind bench --task transfer``; both trainers (in memory and streaming / Ray) apply them
through the shared loop's hooks (:func:`anybind.loop.fit_loop`'s ``penalty=`` and ``on_epoch=``,
:func:`anybind.ridge.locked_ridge_start`'s ``prior=``):

* ``wise`` -- WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"):
  weight-space ensembling of every trained projector with its training-free start,
  ``theta(alpha) = (1 - alpha) theta_start + alpha theta_trained``.  The trained endpoint is the
  best fine-tuned epoch (val score over epochs >= 1); ``"auto"`` picks ``alpha`` on the val
  split from :data:`WISE_GRID` (the first best, i.e. the one closest to the start on ties), a
  number fixes it.  The grid holds both endpoints, so the mixture is never worse on val than
  what early stopping alone keeps.
* ``l2sp`` -- L2-SP (Li et al. 2018): ``lambda * sum ||theta - theta_start||^2`` over the trainable
  projector weights, added to the loss of every step.
* ``ridge_prior="bridge"`` -- the label bridge kept as the start's fallback: the ridge start
  shrinks a label-bridge projector towards the label bridge itself (``min ||Z W - T||^2 +
  lam ||W - c W_bridge||^2``, ``W_bridge`` reading the bridge block of the features, ``c`` fitted on
  the training pairs) instead of towards zero, so the strong shrinkage that makes a few hundred
  pairs generalise falls back on what the frozen classifier knows rather than on nothing
  (:func:`bridge_prior`).  Where no encoder bridges into the locked space it shrinks towards zero,
  with a warning; each modality's alpha and prior are recorded (:func:`ridge_start`).
  ``ridge_prior="residual"``: the label bridge as a residual branch -- the start *is* the bridge (``c W_bridge``,
  the ridge with infinite shrinkage: a zero-initialised residual on top), fine-tuning learns the residual, and
  WiSE-FT's alpha scales it (``c W_bridge + alpha * delta``).
* ``start_guard`` -- training never below the training-free start on val: with ``ridge_prior="bridge"`` the ridge's
  shrinkage path goes on towards the bridge (:data:`anybind.ridge.GUARD_ALPHAS`: 30, 100, 1000) and ends at the
  bridge itself (``c W_bridge``, infinite shrinkage), all scored on the val (or selection) pairs; the bridge is
  kept as the start when no ridge beats it; early stopping and WiSE-FT (whose alpha 0 is that start) then never
  fall below it.  Recorded per modality under ``ridge.<m>.guard``.
* ``kernel_start`` -- with ``ridge_prior="bridge"``, a kernel branch on the bridge's residual tried beside the
  ridge path and kept where it wins on val (:mod:`anybind.ridge_kernel`); recorded under ``ridge.<m>.kernel``.  A
  fixed buffer: fine-tuning, L2-SP and WiSE-FT (:func:`interpolate`) leave it as it is; streaming / Ray too.
* ``bridge_anchors`` (recipe auto: :data:`anybind.recipe.ANCHOR_WEIGHT` with the bridge prior) -- the label bridge's
  1000 class anchors (its reading of each ImageNet class, paired with the locked text of the class prompt) in the
  ridge start's normal equations, weighted that many times the training pairs (:mod:`anybind.bridge_start`);
  recorded under ``ridge.<m>.anchors`` (``in_start``: the final start is the anchored ridge, not the bridge the guard
  kept nor a kernel branch).
* ``base_gate`` (recipe auto: :data:`anybind.recipe.BASE_GATE` with the bridge prior) -- a linear start's base-encoder
  correction faded for inputs farther from the training inputs than own val's nearest are (:mod:`anybind.base_gate`);
  recorded under ``ridge.<m>.gate``.
* ``ridge_span`` (off) -- that start restricted to the training targets' span, the bridge kept outside it
  (``ridge.<m>.span``; not a default: BENCHMARKS.md, transfer: the span lever).
* ``select_se`` (recipe auto, in memory: 1 on a small own val) -- the standard-error rule over every choice on val (guard, ridge alpha, kernel keep, epoch,
  WiSE-FT alpha; ``select_se_on="finetune"``: the last two only): the candidate nearest the start within that many
  standard errors of the best (:func:`anybind.epochs.nearest_within_se`; BENCHMARKS.md, transfer: select_se).
* ``mixup`` (weight) and ``mixup_alpha`` -- geodesic multi-modal mixup (Oh et al. 2023, "Geodesic
  Multi-Modal Mixup for Robust Fine-Tuning", m^2-mix): each positive pair's two unit embeddings are
  mixed on the great circle between them (``slerp`` with ``lam ~ Beta(alpha, alpha)``) and the mixtures
  serve as hard negatives of a second contrastive term, ``mixup`` times
  :class:`~anybind.losses.M2Mix`, added to any pairwise objective (:func:`with_mixup`, wrapped around the
  loss by both trainers, so it runs inside the shared loop's steps, after the distributed all-gather).
  ``lam`` comes from the mixup's own generator seeded with ``cfg.seed`` (one draw per pair and step):
  runs repeat exactly, and every DDP worker draws the same ``lam``.
* ``center`` -- inductive centring: each modality's mean embedding over the training split is
  stored in its projector (:meth:`~anybind.projectors.Projector.set_center`) and subtracted, then
  re-normalised, at embed time: a corpus that lands in one corner of the space (Fashion-MNIST)
  needs no statistics of its own test batch.  :func:`centred` does the same to any saved space
  (both in :mod:`anybind.centring`, re-exported here).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .base_gate import finite_number, gate_config_problem
from .bridge_start import anchor_weight_problem, anchors_in_start, bridge_anchors, bridge_into, bridge_prior  # noqa: F401  (re-exported: defined here before)
from .centring import center_projectors, centred, train_centers  # noqa: F401  (re-exported: defined here before)
from .epochs import nearest_within_se
from .errors import DataError
from .ridge import PairBlocks, locked_ridge_start, say_starts
from .ridge_span import span_noop
from .losses import M2Mix, is_multimodal
from .projectors import Projector
from .recipe import AUTO, resolved

log = logging.getLogger(__name__)
IDLE_WITHOUT_FINETUNE = ("acts only on fine-tuned epochs and finetune=False keeps the training-free start (no epoch): "
                         "drop it or give finetune=True")  # check_robust's refusal, and anybind.fit_checks'

#: the WiSE-FT mixing coefficients tried on val (0: the training-free start, 1: the fine-tuned weights)
WISE_GRID = tuple(round(0.1 * i, 1) for i in range(11))
#: what the ridge start shrinks towards
RIDGE_PRIORS = ("zero", "bridge", "residual")

State = dict[str, dict[str, torch.Tensor]]


def snapshot(projectors: Mapping[str, Projector]) -> State:
    """A detached copy of every projector's state (parameters and buffers), on the CPU: an epoch kept while the loop
    trains on a GPU is mixed with the start (taken before the loop, on the CPU) after the loop has moved back."""
    return {m: {k: v.detach().cpu().clone() for k, v in pr.state_dict().items()} for m, pr in projectors.items()}


def interpolate(start: State, trained: State, alpha: float) -> State:
    """``(1 - alpha) * start + alpha * trained``, tensor by tensor (alpha 0 and 1 return exact copies)."""
    if alpha == 0:
        return copy.deepcopy(start)
    if alpha == 1:
        return copy.deepcopy(trained)
    def mix(k: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # a kernel branch is fixed: kept as it is
        return torch.lerp(a, b, float(alpha)) if b.is_floating_point() and not k.startswith("kernel_") else b.clone()

    return {m: {k: mix(k, start[m][k], v) for k, v in sd.items()} for m, sd in trained.items()}


def load_state(projectors: Mapping[str, Projector], state: State) -> None:
    for m, sd in state.items():
        projectors[m].load_state_dict(sd)


def l2sp_penalty(projectors: Mapping[str, Projector], start: State, lam: float,
                 moved: dict[tuple[str, str], torch.Tensor] | None = None) -> torch.Tensor | float:
    """``lam * sum ||theta - theta_start||^2`` over the trainable parameters of the projectors that map
    (a locked, identity projector has nothing to keep); 0.0 when ``lam`` is 0.  ``moved`` (a dict, filled in): the
    start's tensors where the parameters train, kept across calls (moved to the device once, not every step)."""
    total = None
    moved = {} if moved is None else moved
    if lam > 0:
        for m, pr in projectors.items():
            if pr.cfg.kind == "identity":
                continue
            for k, p in pr.named_parameters():
                if p.requires_grad:
                    s = moved.get((m, k))
                    if s is None or s.device != p.device:  # the start: on the CPU, p: where it trains
                        s = moved[(m, k)] = start[m][k].to(p.device)
                    d = (p - s).pow(2).sum()
                    total = d if total is None else total + d
    return 0.0 if total is None else lam * total


def parse_wise(value: Any) -> str | float | None:
    """``None`` (off), ``"auto"`` (alpha chosen on val) or a mixing coefficient in [0, 1]."""
    if value is None or value == "auto":
        return value
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise DataError(f"wise must be 'auto', a number in [0, 1] or None, got {value!r}") from None
    if math.isnan(alpha) or not 0.0 <= alpha <= 1.0:
        raise DataError(f"wise must be 'auto', a number in [0, 1] or None, got {value!r}")
    return alpha


def check_robust(cfg) -> None:
    """Refuse a robust-fine-tuning setting that cannot apply (one line, before any work)."""
    cfg = resolved(cfg)  # a field the recipe left open (AUTO): its plain default, as the trainers read it
    parse_wise(cfg.wise)
    lam = cfg.l2sp  # finite_number: numpy's too (a sweep's), not a bool, nor an int past a float's range
    if not finite_number(lam) or lam < 0:
        raise DataError(f"l2sp must be a non-negative number, got {lam!r}")
    for name, v, low in (("mixup", cfg.mixup, 0.0), ("mixup_alpha", cfg.mixup_alpha, None)):
        if not finite_number(v) or (v < low if low is not None else v <= 0):
            raise DataError(f"{name} must be a {'non-negative' if low is not None else 'positive'} number, got {v!r}")
    if cfg.ridge_prior not in RIDGE_PRIORS:
        raise DataError(f"ridge_prior must be one of {', '.join(RIDGE_PRIORS)}, got {cfg.ridge_prior!r}")
    for name in ("ridge_se", "select_se"):
        se = getattr(cfg, name)
        if not finite_number(se) or se < 0:
            raise DataError(f"{name} must be a non-negative number (standard errors), got {se!r}")
    if cfg.select_se_on not in ("all", "finetune"):
        raise DataError(f"select_se_on must be 'all' or 'finetune', got {cfg.select_se_on!r}")
    se = cfg.ridge_se
    if se > 0 and cfg.init != "ridge":  # refused, not ignored: no ridge path to apply the rule to
        raise DataError(f"ridge_se={se!r} is the ridge start's standard-error rule: use init='ridge' (got init={cfg.init!r})")
    for name in ("start_guard", "kernel_start"):
        if not isinstance(getattr(cfg, name), bool):
            raise DataError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    if cfg.kernel_start and cfg.ridge_prior != "bridge":
        raise DataError(f"kernel_start=True fits a kernel branch on the label bridge's residual: use "
                        f"ridge_prior='bridge' (got ridge_prior={cfg.ridge_prior!r})")
    if cfg.ridge_span and cfg.ridge_prior != "bridge":  # refused, not ignored: no prior to keep
        raise DataError(f"ridge_span=True keeps the label bridge's output outside the training targets' span: use "
                        f"ridge_prior='bridge' (got ridge_prior={cfg.ridge_prior!r})")
    a = getattr(cfg, "bridge_anchors", 0.0)  # a config without the field (an update's): none
    if (problem := anchor_weight_problem(a)) is not None:
        raise DataError(f"bridge_anchors {problem}")
    if (problem := gate_config_problem(getattr(cfg, "base_gate", 0.0), cfg.ridge_prior)) is not None:  # none: an update's
        raise DataError(problem)
    if a > 0 and cfg.ridge_prior != "bridge":  # refused, not ignored: the anchors are the bridge's
        raise DataError(f"bridge_anchors={a!r} fits the label bridge's class anchors into its ridge start: use "
                        f"ridge_prior='bridge' (got ridge_prior={cfg.ridge_prior!r})")
    if cfg.start_guard and cfg.ridge_prior != "bridge":
        raise DataError(f"start_guard=True falls back on the label bridge: use ridge_prior='bridge' (got "
                        f"ridge_prior={cfg.ridge_prior!r})")
    if cfg.ridge_prior != "zero" and cfg.init != "ridge":
        raise DataError(f"ridge_prior={cfg.ridge_prior!r} is what the ridge start shrinks towards: "
                        "use init='ridge'")
    idle = [f"{k}={v!r}" for k, v in (("l2sp", lam), ("mixup", cfg.mixup)) if v > 0]
    idle += ["select_se_on='finetune'"] if cfg.select_se_on == "finetune" else []
    if cfg.finetune is False and idle:  # refused, not ignored (nor recorded in training.robust as if it acted)
        raise DataError(f"{', '.join(idle)} {IDLE_WITHOUT_FINETUNE}")
    if (cfg.wise is not None or lam > 0 or cfg.finetune is False) and cfg.init == "random":
        raise DataError("wise / l2sp / finetune=False keep projectors near (at) their training-free start: use "
                        "init='ridge' (with lock), 'procrustes' or 'cca', not init='random'")


def check_select_se_on(cfg) -> None:
    """``select_se_on="finetune"`` beside no standard-error rule, on a config before it is resolved: refused in one
    line where the user gave ``select_se=0`` (``--select-se 0``), said in one line where ``select_se`` was left to the
    recipe and it set none (recipe auto sets 1 only on a small own val): the same call fits on any corpus."""
    se = cfg.select_se
    if cfg.select_se_on != "finetune":
        return
    if se is not AUTO:  # a value that is no number: check_robust's to refuse
        if not isinstance(se, bool) and isinstance(se, (int, float)) and se == 0:  # refused, not ignored
            raise DataError("select_se_on='finetune' steers nothing without the rule (select_se=0): give "
                            "select_se > 0")
        return
    log.info("select_se_on='finetune': no standard-error rule in this fit (select_se left to the recipe, which set "
             "none): the epoch and WiSE-FT alpha take the best val mean")


def loop_config(cfg):
    """The config every trainer's epochs run under (the attention phase, then fine-tuning): ``cfg`` itself, or with
    ``epochs=0`` where ``finetune=False`` keeps the training-free start (:meth:`RobustFit.finish` says so)."""
    return replace(cfg, epochs=0) if cfg.finetune is False else cfg


class RobustFit:
    """WiSE-FT and L2-SP around :func:`anybind.loop.fit_loop`: keeps the start (the projectors as given, a
    training-free start) and the best fine-tuned epoch; ``penalty`` / ``on_epoch`` are the loop's hooks."""

    def __init__(self, cfg, projectors: Mapping[str, Projector], logit_scale: torch.Tensor):
        cfg = resolved(cfg)
        check_robust(cfg)
        self.cfg = cfg
        self.wise, self.l2sp, self.se = parse_wise(cfg.wise), float(cfg.l2sp), float(cfg.select_se)
        self.projectors, self.logit_scale = projectors, logit_scale
        active = self.wise is not None or self.l2sp > 0
        self.start = snapshot(projectors) if active else None
        self.start_logit = float(logit_scale.item())
        self.best: tuple[float, int, State, float] | None = None  # the best fine-tuned epoch (>= 1)

    @property
    def penalty(self) -> Callable[[], torch.Tensor | float] | None:
        """The L2-SP term for ``fit_loop(penalty=...)`` (None when off)."""
        if self.l2sp <= 0:
            return None
        moved: dict[tuple[str, str], torch.Tensor] = {}  # the start where the parameters train: moved once
        return lambda: l2sp_penalty(self.projectors, self.start, self.l2sp, moved)

    def on_epoch(self, epoch: int, score: float | None) -> None:
        """``fit_loop(on_epoch=...)``: keep the best fine-tuned epoch's weights (the last one without val)."""
        if self.wise is None:
            return
        s = -math.inf if score is None or math.isnan(score) else score
        if self.best is None or score is None or s > self.best[0] + 1e-6:
            self.best = (s, epoch, snapshot(self.projectors), float(self.logit_scale.item()))

    def keep(self, res) -> None:
        """After :func:`anybind.loop.fit_loop` (its :class:`~anybind.loop.LoopResult` ``res``): where its standard-error
        rule (``select_se``) kept a fine-tuned epoch, WiSE-FT mixes the start with that epoch (as the loop left the
        projectors), not the best one; the start kept: the best fine-tuned, as at ``select_se=0``."""
        if res.se_rule and self.wise is not None and res.best_epoch >= 1:
            self.best = (res.best_val, res.best_epoch, snapshot(self.projectors), res.logit_scale)

    def finish(self, logit_scale: float, val: Callable[[], float] | None, say=True) -> tuple[float, dict[str, Any]]:
        """Apply WiSE-FT to the projectors (holding early stopping's choice): ``(logit scale, record)``; ``val()``
        scores them as they are now on the val split (None: none); ``say``: log finetune=False (rank 0 only)."""
        rec: dict[str, Any] = {"l2sp": self.l2sp, "wise": self.wise}
        if self.cfg.finetune is False:  # the training-free start kept (loop_config): no epoch, nothing to mix
            rec["finetune"] = False
            if say:
                log.info("finetune=False: the training-free start is kept (epoch 0; no InfoNCE epochs, no WiSE-FT mix)")
        if self.cfg.mixup > 0:
            rec.update(mixup=float(self.cfg.mixup), mixup_alpha=float(self.cfg.mixup_alpha))
        if self.wise is None:
            return logit_scale, rec
        if self.best is None:
            rec["wise_note"] = "no fine-tuned epoch: nothing to mix"
            return logit_scale, rec
        _, epoch, trained, trained_logit = self.best
        rec["wise_endpoint_epoch"] = epoch
        if self.wise == "auto":
            if val is None:
                rec["wise_note"] = "no val split: alpha cannot be chosen, early stopping's choice kept"
                return logit_scale, rec
            scores, items = {}, {}
            for a in WISE_GRID:
                load_state(self.projectors, interpolate(self.start, trained, a))
                items[a] = val()  # select_se > 0: per-item scores (their mean is the score)
                scores[a] = float(np.mean(items[a]))
            if self.se > 0:  # the smallest alpha (nearest the start) within select_se standard errors of the best
                i, r = nearest_within_se([items[a] for a in WISE_GRID], self.se)
                alpha = WISE_GRID[i]
                rec["wise_se_rule"] = {**r, "best": WISE_GRID[r.get("best", i)], "chosen": alpha}
            else:  # the best val score (ties: the smallest alpha)
                alpha = max(WISE_GRID, key=lambda a: (np.nan_to_num(scores[a], nan=-1.0), -a))
            rec["wise_val"] = {f"{a:.1f}": scores[a] for a in WISE_GRID}
        else:
            alpha = float(self.wise)
        load_state(self.projectors, interpolate(self.start, trained, alpha))
        rec["wise_alpha"] = alpha
        if val is not None:  # the space's val score is the mixture's own
            rec["wise_val_chosen"] = rec["wise_val"][f"{alpha:.1f}"] if "wise_val" in rec else float(np.mean(val()))
        return (1 - alpha) * self.start_logit + alpha * trained_logit, rec


# ----------------------------------------------------------------------------- geodesic multi-modal mixup
class GeodesicMixup(nn.Module):
    """A pairwise objective plus ``weight`` x m^2-mix (:class:`~anybind.losses.M2Mix`, its term named
    ``"mixup"``), ``lam ~ Beta(alpha, alpha)`` drawn from a generator seeded with ``seed``, one draw per call."""

    multimodal = False

    def __init__(self, base: nn.Module, weight: float, alpha: float, seed: int = 0):
        super().__init__()
        self.base, self.weight, self.alpha = base, float(weight), float(alpha)
        self.mix = M2Mix(beta=alpha)
        self.needs_features = bool(getattr(base, "needs_features", False))
        self.rng = np.random.default_rng([seed, 0x6D32])  # its own stream: the trainers' draws are untouched
        self.last_lam: float | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, **context) -> dict[str, torch.Tensor]:
        out = dict(self.base(a, b, logit_scale, **context))
        self.last_lam = float(self.rng.beta(self.alpha, self.alpha))
        out["mixup"] = self.weight * self.mix(a, b, logit_scale, lam=self.last_lam)["m2mix"]
        return out


def with_mixup(loss_fn: nn.Module, cfg) -> nn.Module:
    """``loss_fn`` itself when ``cfg.mixup`` is 0, else :class:`GeodesicMixup` around it (pairwise objectives
    only: a one-line error for a multimodal one)."""
    cfg = resolved(cfg)
    check_robust(cfg)
    if cfg.mixup <= 0:
        return loss_fn
    if is_multimodal(loss_fn):
        raise DataError(f"mixup={cfg.mixup} mixes pairs of embeddings: it needs a pairwise objective, not "
                        f"the multimodal {cfg.loss!r}")
    return GeodesicMixup(loss_fn, cfg.mixup, cfg.mixup_alpha, cfg.seed)


def ridge_start(projectors: Mapping[str, Projector], cfg, specs: Mapping[str, str], train_pairs: PairBlocks,
                val_pairs, own_val=None) -> dict[str, dict[str, Any]]:
    """:func:`anybind.ridge.locked_ridge_start` with ``cfg.ridge_prior``; returns each modality's ridge
    ``alpha`` and ``prior`` (``"bridge"`` or ``"zero"``; a bridge prior with no label bridge into ``cfg.lock``
    falls back to zero, with a warning), with ``cfg.kernel_start`` its kernel family's record (``kernel``), with
    ``cfg.ridge_span`` its span record (``span``: the targets' rank, the dimension, the prior's out-of-span share;
    :func:`anybind.ridge_span.target_span`, logged in one line naming a no-op), with ``cfg.bridge_anchors`` > 0 its class
    anchors' (``anchors``: weight, count; a frame-pooling projector: count 0 and a ``note``, logged); ``own_val``: the
    own val pairs (the gate's reference) where ``val_pairs`` are another set's.  Every trainer's: in memory, and the streaming / Ray trainer's over its shards (``train_pairs`` in blocks)."""
    cfg = resolved(cfg)
    check_robust(cfg)
    kern: dict[str, dict[str, Any]] | None = {} if cfg.kernel_start else None
    used: dict[str, str] = {}

    def prior(m: str) -> torch.Tensor | None:
        W0 = bridge_prior(specs[m], specs[cfg.lock], projectors[m]) if cfg.ridge_prior != "zero" else None
        used[m] = "zero" if W0 is None else cfg.ridge_prior
        return W0

    guard: dict[str, dict[str, Any]] | None = {} if cfg.start_guard and cfg.ridge_prior == "bridge" else None
    rule: dict[str, dict[str, Any]] = {}
    span: dict[str, dict[str, Any]] | None = {} if cfg.ridge_span else None
    sel = cfg.select_se if cfg.select_se_on == "all" else 0.0  # "finetune": the start's choices as at select_se=0
    anchored: dict[str, dict[str, Any]] = {}
    gated: dict[str, dict[str, Any]] = {}

    def anchors(m: str):  # a frame-pooling projector under the bridge prior gets none: recorded and said, not skipped
        a = bridge_anchors(specs[m], specs[cfg.lock], projectors[m])
        if a is None and used.get(m) == "bridge" and projectors[m].cfg.frames:
            anchored[m] = {"weight": float(cfg.bridge_anchors), "count": 0, "note": "a frame-pooling projector"}
            log.info("start: %r: no class anchors (a frame-pooling projector: its input is a frame sequence)", m)
        return a

    alphas = locked_ridge_start(projectors, cfg.lock, train_pairs, val_pairs, prior=prior,
                                exact_prior=cfg.ridge_prior == "residual", guard=guard,
                                se=cfg.ridge_se if cfg.ridge_se > 0 else sel, rule=rule,
                                kernel=kern, seed=cfg.seed, span=span, select_se=sel,
                                anchors=anchors,
                                anchor_weight=cfg.bridge_anchors if cfg.ridge_prior == "bridge" else 0.0,
                                anchored=anchored, gated=gated, gate_val=own_val,
                                gate_q=cfg.base_gate if cfg.ridge_prior == "bridge" else 0.0)
    for m, sp in (span or {}).items():
        log.info("start: %r: training targets span %d of %d dims, the prior's out-of-span share %s%s", m, sp["rank"],
                 sp["dim"], sp.get("prior_out", 0.0), " (the span restriction is a no-op)" if span_noop(sp) else "")
    if cfg.ridge_prior != "zero" and all(p == "zero" for p in used.values()):
        log.warning("ridge_prior=%r: no bound modality's encoder has a label bridge into the %r encoder's "
                    "space (%s): every ridge start shrinks towards zero", cfg.ridge_prior, cfg.lock,
                    ", ".join(f"{k}={v}" for k, v in specs.items()))
    say_starts(log, alphas, guard, kern)
    return {m: {"alpha": a, "prior": used.get(m, "zero"), **({"guard": guard[m]} if guard and m in guard else {}),
                **({"se_rule": rule[m]} if m in rule else {}), **({"kernel": kern[m]} if kern and m in kern else {}),
                **({"span": span[m]} if span and m in span else {}), **({"gate": gated[m]} if m in gated else {}),
                **({"anchors": {**anchored[m], "in_start": anchored[m]["count"] > 0 and anchors_in_start(
                    (guard or {}).get(m), (kern or {}).get(m))}} if m in anchored else {})}
            for m, a in alphas.items()}

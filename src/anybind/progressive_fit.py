"""How progressive binding trains the one new projector: :class:`BindConfig`, the frozen anchor targets, the
ridge start and the shared :func:`anybind.loop.fit_loop` against them (see :mod:`anybind.progressive`).

The ridge start is :func:`anybind.ridge.prior_ridge`, the one Space.fit's locked ridge start runs: where the new
encoder's label bridge maps into the space's locked text space (an image bound into a text-locked space, as
Space.fit's recipe binds it) it shrinks towards that bridge (``ridge_prior``) and, with ``start_guard``, keeps the
bridge itself as the start when no ridge beats it on val; with ``kernel_start`` (on there by default, as Space.fit's
recipe) it also fits Space.fit's kernel branch on the bridge's residual (:func:`anybind.ridge_kernel.kernel_start`,
its grid scored on the val pairs), kept only when it beats that linear start on val; with ``bridge_anchors`` (the
recipe's weight there by default) the bridge's class anchors enter its normal equations as in Space.fit's
(:func:`anchor_equations`); with ``base_gate`` (the recipe's :data:`~anybind.recipe.BASE_GATE` there by default) a
linear start kept under the bridge prior gets Space.fit's base-encoder gate (:mod:`anybind.base_gate`: its correction
on the base encoder's features faded for inputs farther from the training inputs than own val's are; support: the
training rows, the kernel's rule; reference: the val pairs' inputs); the record is the lineage entry's ``ridge_start``
(``kernel``: the grid, the choice, the support's size, or why it was not tried; ``anchors``: the weight and the
count, or a ``note``; ``gate``: the gate's record, or a ``note`` saying why none)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base_gate import base_width, finite_number, gate_config_problem, gate_q_problem, gate_start
from .binders import AnchorBinder
from .errors import DataError
from .loop import IndexSampler, fit_loop, make_optimizer, make_temperature, training_threads
from .ridge import anchor_rows, kernel_or_linear, prior_ridge
from .metrics import pair_recalls, query_ranks
from .projectors import Projector, ProjectorConfig, project
from .recipe import check_flags, check_seed
from .bridge_start import anchor_weight_problem, anchors_in_start
from .ridge_kernel import SupportSample, scaled_prior

VAL_METRIC = "mean (R@1+R@5+R@10)/3, new<->anchor on val pairs, both directions"
#: what the ridge start shrinks towards ("auto": the label bridge where the new encoder has one into the space)
RIDGE_PRIORS = ("auto", "bridge", "zero")
#: the new encoder's class anchors for a projector (:func:`anybind.bridge_start.bridge_anchors`, their lock features
#: through the space's locked projector): ``(U, targets, d_base)`` or None
Anchors = Callable[[Projector], "tuple[torch.Tensor, torch.Tensor, int] | None"]

log = logging.getLogger(__name__)


@dataclass
class BindConfig:
    """How the one new projector is trained (recorded in the lineage entry)."""

    projector: str = "mlp"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    standardize: bool = True
    init: str = "ridge"  # "ridge" (regress onto the frozen targets first) | "random"
    # the ridge start's prior: "bridge" (the new encoder's label bridge into the space's locked text encoder), "zero",
    # "auto" (the bridge where there is one); start_guard: keep the bridge as the start when no ridge beats it on val
    # (None: on with the bridge prior, as Space.fit's recipe)
    ridge_prior: str = "auto"
    start_guard: bool | None = None
    # with the bridge prior: also fit a kernel branch on the bridge's residual, kept where it beats the linear start
    # on val (anybind.ridge_kernel; None: on with the bridge prior, as Space.fit's recipe)
    kernel_start: bool | None = None
    # with the bridge prior: the label bridge's 1000 class anchors in the ridge start, weighted that many times the
    # training pairs (anybind.bridge_start; None: recipe.ANCHOR_WEIGHT with the bridge prior, else 0, as Space.fit's)
    bridge_anchors: float | None = None
    # with the bridge prior: a linear start's base-encoder correction faded below this own-val quantile of nearness
    # to the training inputs (anybind.base_gate; None: recipe.BASE_GATE with the bridge prior, else 0, as Space.fit's)
    base_gate: float | None = None
    # the standard-error rule over every choice on val (start guard, ridge alpha, kernel keep, epoch): the candidate
    # nearest the training-free start within this many SE of the best; finetune=False keeps the start (no InfoNCE
    # epochs).  None: as Space.fit's recipe auto (progressive_start.small_val_choice): select_se=1 and finetune=False where the ridge
    # start chooses on 2 to fit_checks.VAL_WARN - 1 val pairs (finetune stays True where lr or loss is not its default), else 0 / True
    select_se: float | None = None
    finetune: bool | None = None
    loss: str = "infonce"  # any pairwise objective spec (see anybind.losses)
    label_smoothing: float = 0.0
    temperature: float = 0.05  # training temperature (learnt; the space's own temperature is untouched)
    learn_temperature: bool = True
    batch_size: int = 128
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 25
    feature_noise: float = 0.0
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_flags(self, {"standardize": (), "learn_temperature": (), "start_guard": (None,), "kernel_start": (None,),
                          "finetune": (None,)})
        check_seed(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bind_config(config: Mapping[str, Any]) -> BindConfig:
    known = set(BindConfig.__dataclass_fields__)
    bad = sorted(set(config) - known)
    if bad:
        raise TypeError(f"unknown option(s) {bad} for progressive binding (known: {', '.join(sorted(known))})")
    cfg = BindConfig(**config)
    if (problem := anchor_weight_problem(cfg.bridge_anchors, allow_none=True)) is not None:
        raise DataError(f"BindConfig.bridge_anchors {problem}")
    if cfg.base_gate is not None:
        if (problem := gate_q_problem(cfg.base_gate)) is not None:
            raise DataError(f"BindConfig.base_gate {problem}")
        cfg.base_gate = float(cfg.base_gate)  # a numpy number recorded as a float
    if cfg.select_se is not None:  # the shared check (TrainConfig.select_se's: robust.check_robust)
        if not finite_number(cfg.select_se) or cfg.select_se < 0:
            raise DataError(f"BindConfig.select_se must be a non-negative number (standard errors), got "
                            f"{cfg.select_se!r}")
        cfg.select_se = float(cfg.select_se)  # a numpy number recorded as a float
    if cfg.finetune is False and cfg.init != "ridge":  # as Space.fit's: no training-free start to keep
        raise DataError("finetune=False keeps the new projector's training-free start: use init='ridge'")
    if cfg.init not in ("ridge", "random"):
        raise ValueError(f"init must be 'ridge' or 'random' for progressive binding, got {cfg.init!r}")
    if cfg.projector not in ("linear", "mlp"):
        raise ValueError(f"projector must be 'linear' or 'mlp', got {cfg.projector!r}")
    if cfg.ridge_prior not in RIDGE_PRIORS:
        raise DataError(f"ridge_prior must be one of {', '.join(RIDGE_PRIORS)} for progressive binding, "
                        f"got {cfg.ridge_prior!r}")
    anchored = bool(cfg.bridge_anchors)  # a weight > 0
    if cfg.init != "ridge" and (cfg.ridge_prior == "bridge" or cfg.start_guard or cfg.kernel_start or anchored
                                or cfg.base_gate):
        raise DataError("ridge_prior='bridge' / start_guard=True / kernel_start=True / base_gate > 0 / "
                        "bridge_anchors > 0 are the ridge start's: use init='ridge'")
    if cfg.base_gate and cfg.ridge_prior == "zero":  # refused, not ignored: no base-encoder block to gate
        raise DataError(gate_config_problem(cfg.base_gate, cfg.ridge_prior).replace("'bridge'", "'bridge' or 'auto'"))
    if anchored and cfg.ridge_prior == "zero":
        raise DataError(f"bridge_anchors={cfg.bridge_anchors!r} fits the label bridge's class anchors into its ridge "
                        "start: use ridge_prior='bridge' or 'auto' (got ridge_prior='zero')")
    if cfg.kernel_start and cfg.ridge_prior == "zero":
        raise DataError("kernel_start=True fits a kernel branch on the label bridge's residual: use ridge_prior="
                        "'bridge' or 'auto' (got ridge_prior='zero')")
    if cfg.start_guard and cfg.ridge_prior == "zero":
        raise DataError("start_guard=True falls back on the label bridge: use ridge_prior='bridge' or 'auto' "
                        "(got ridge_prior='zero')")
    return cfg


@dataclass
class Target:
    """One anchor: frozen target embeddings of the records that pair it with the new modality."""

    anchor: str  # bound modality (for replace: the replaced modality itself, its old embeddings)
    records: np.ndarray  # record indices
    rows: np.ndarray  # row into the new modality's features, per record
    targets: np.ndarray  # (n, space dim) unit vectors from the frozen space
    keys: np.ndarray  # the anchor's frozen input features (content identity for scoring)


def has_modality(records, idx: np.ndarray, m: str) -> np.ndarray:
    return np.array([records[i].has(m) for i in idx], dtype=bool)


def val_score(proj: Projector, feats: np.ndarray, targets: Mapping[str, Target], val_idx: np.ndarray,
              items: bool = False) -> float | np.ndarray:
    """Mean (R@1+R@5+R@10)/3 of new<->anchor retrieval on the val pairs, both directions, over anchors.  ``items``
    (the standard-error rule's, ``BindConfig.select_se``): per val pair, its hits at 1, 5, 10 both ways / 6, every
    anchor's pairs in one array (their mean is the score with a single anchor); NaN (one item) without any."""
    scores, per = [], []
    with torch.no_grad():
        for t in targets.values():
            sel = np.isin(t.records, val_idx)
            if sel.sum() < 2:
                continue
            x = feats[t.rows[sel]]
            e = F.normalize(project(proj, x), dim=-1).numpy()
            g = t.targets[sel]
            if items:
                r1 = query_ranks(e @ g.T, query_keys=x, gallery_keys=t.keys[sel])
                r2 = query_ranks(g @ e.T, query_keys=t.keys[sel], gallery_keys=x)
                per.append(sum((r <= k).astype(np.float64) for r in (r1, r2) for k in (1, 5, 10)) / 6)
                continue
            for q, gg, kq, kg in ((e, g, x, t.keys[sel]), (g, e, t.keys[sel], x)):
                r = pair_recalls(q, gg, query_keys=kq, gallery_keys=kg)
                scores.append((r["R@1"] + r["R@5"] + r["R@10"]) / 3)
    if items:
        return np.concatenate(per) if per else np.array([np.nan])
    return float(np.mean(scores)) if scores else float("nan")


def ridge_start(proj: Projector, feats, targets: Mapping[str, Target], train_idx, val_idx,
                prior: torch.Tensor | None = None, guard: bool = False, kernel: bool = False,
                seed: int = 0, anchors: Anchors | None = None, anchor_weight: float = 0.0,
                lock: str | None = None, gate_q: float = 0.0, name: str | None = None,
                se: float = 0.0) -> dict[str, Any]:
    """Linear path := ridge regression of the standardised features onto the frozen targets (centred; their
    mean is the bias), the shrinkage chosen on the val pairs, shrunk towards ``prior`` (a map onto the targets'
    space: the label bridge) where given, with the start guard where ``guard`` (:func:`anybind.ridge.prior_ridge`).
    ``kernel`` (with a prior): Space.fit's kernel family on the scaled prior's residual (support: the training rows,
    a ``seed``-ed subset above :data:`~anybind.ridge_kernel.MAX_SUPPORT`), kept where it beats that start on val.
    ``anchors`` with ``anchor_weight`` > 0 (with the bridge prior; issue 16): the label bridge's class anchors in the normal
    equations the ridge path and the guard solve, as :func:`anybind.ridge.locked_ridge_start` fits them -- each input
    the training rows' mean with its bridge block the class's unit direction at their mean bridge-block norm, its
    target the locked modality ``lock``'s embedding of the class prompt (less the targets' mean, the start's bias),
    ``anchor_weight`` x the training rows in all -- while the prior's scale, the kernel's support and ``lam`` stay
    the training pairs'.  Only where the targets hold ``lock``'s (the bridge maps into its space); else, or for a
    frame-pooling projector, none and a ``note`` (logged).
    ``gate_q`` > 0 (with the bridge prior): the start chosen, Space.fit's base-encoder gate on it
    (:func:`anybind.base_gate.gate_start`: support the training rows, the kernel's rule with ``seed``; reference the
    val pairs' inputs), or a ``note`` why none (a kernel branch or the label bridge kept, no val pairs; logged, naming
    modality ``name``).  ``se`` > 0 (``BindConfig.select_se``): the standard-error rule on the ridge alpha, the guard and
    the kernel keep, as Space.fit's (:func:`~anybind.ridge.prior_ridge`'s ``se`` / ``guard_se``,
    :func:`~anybind.ridge.kernel_or_linear`'s ``se``; per-item val scores), its record ``rule``.
    Returns its record: ``alpha``, ``prior`` (``"bridge"`` / ``"zero"``), the ``guard``'s, the ``kernel``'s, the
    ``anchors``' (``weight``, ``count``; a ``note`` where none were fitted) and the ``gate``'s."""
    Z_parts, T_parts, V_parts = [], [], []
    for t in targets.values():
        sel = np.isin(t.records, train_idx)
        Z_parts.append(feats[t.rows[sel]])
        T_parts.append(t.targets[sel])
        if (vsel := np.isin(t.records, val_idx)).sum() >= 2:  # the val pairs val_score reads
            V_parts.append(feats[t.rows[vsel]])
    with torch.no_grad():
        Z = proj.standardized(torch.from_numpy(np.concatenate(Z_parts))).double()
        T = torch.from_numpy(np.concatenate(T_parts)).double()
    n, d = Z.shape
    Tm = T.mean(0)
    Tc = T - Tm

    @torch.no_grad()
    def start_at(W: torch.Tensor) -> None:
        proj.linear.weight.copy_(W.T.float())
        proj.linear.bias.copy_(Tm.float())
        if proj.mlp is not None:
            proj.mlp[-1].weight.zero_()
            proj.mlp[-1].bias.zero_()

    def score(W: torch.Tensor) -> float | np.ndarray:  # se: per-item scores (their mean is the score)
        start_at(W)
        proj.eval()
        return val_score(proj, feats, targets, val_idx, items=se > 0)

    Ga, Ra, anchored = anchor_equations(proj, Z_parts, Tm, anchors, anchor_weight, lock, targets)  # none: a note
    has_val = any(np.isin(t.records, val_idx).sum() >= 2 for t in targets.values())
    # primal (d x d) or dual (n x n) system, whichever is smaller (a prior needs the primal)
    G = R = None
    scored: dict[str, float] = {}  # the start's val score (prior_ridge's): not scored again
    rule: dict[str, Any] = {}  # se: the ridge path's standard-error record
    W0 = None  # the prior scaled onto the targets (||T||^2 summed once): the ridge's prior and the kernel's base
    if d <= n or prior is not None:
        G, R = Z.T @ Z, Z.T @ Tc
        W0 = None if prior is None else scaled_prior(G, R, prior, Tc.pow(2).sum())
        alpha, W, g = prior_ridge(G + Ga, R + Ra, n, score, W0=W0, guard=guard, has_val=has_val, scores=scored,
                                  se=se, record=rule, guard_se=se)
    else:
        alpha, W, g = prior_ridge(Z @ Z.T, Tc, n, score, back=lambda S: Z.T @ S, se=se, record=rule)
    kern: dict[str, Any] | None = None
    if kernel and W0 is not None:  # as Space.fit's locked_ridge_start: on the residual, chosen on val
        def with_branch(branch) -> float:
            proj.set_kernel(*branch)
            try:
                return score(W0)
            finally:
                proj.set_kernel(None)

        alpha, W, kern = kernel_or_linear(proj, alpha, W, W0, lambda: (Z, Tc), with_branch, scored["val"],
                                          has_val=has_val, seed=seed, se=se)
    start_at(W)
    gate = None
    if gate_q > 0:  # Space.fit's gate step, on the start chosen
        held = SupportSample(seed)  # the kernel's support rule (support_rows: the same rows)
        held.add(Z.float(), Tc.float())
        val_z = proj.standardized(torch.from_numpy(np.concatenate(V_parts))) if V_parts else None
        gate = gate_start(name, proj, base_width(prior), gate_q, held, val_z, alpha is None, W,
                          scored.get("val", float("nan")), lambda W, _gate: score(W))  # the gate is set: scored with it
    return {"alpha": alpha, "prior": "zero" if prior is None else "bridge", **({"guard": g} if g else {}),
            **({"rule": rule} if rule else {}),
            **({"kernel": kern} if kern is not None else {}), **({"gate": gate} if gate is not None else {}),
            **({"anchors": {**anchored, "in_start": anchored["count"] > 0 and anchors_in_start(g, kern)}}
               if anchored else {})}


def anchor_equations(proj: Projector, X_parts, Tm: torch.Tensor, anchors: Anchors | None, weight: float,
                     lock: str | None, targets: Mapping[str, Target]):
    """``(Ga, Ra, record)``: the class anchors' share of :func:`ridge_start`'s normal equations (0, 0 and None
    without anchors or at weight 0; 0, 0 and a record with a ``note`` where none could be fitted)."""
    if anchors is None or not weight:
        return 0.0, 0.0, None
    rec: dict[str, Any] = {"weight": float(weight), "count": 0}
    if lock not in targets:
        rec["note"] = f"the targets hold no {lock!r} embeddings (the space the label bridge maps into)"
    elif (anc := anchors(proj)) is None:
        rec["note"] = "a frame-pooling projector" if proj.cfg.frames else "no label bridge block in its input"
    if "note" in rec:
        return 0.0, 0.0, rec
    U, La, d = anc
    X = np.concatenate(X_parts)
    norm = float(np.linalg.norm(np.asarray(X, dtype=np.float64)[:, d:], axis=1).mean())  # the anchors' scale
    rec["count"] = len(U)
    return (*anchor_rows(proj, U, La.double() - Tm, d, norm, weight * len(X)), rec)


def train_projector(space, feats, row_of, targets: Mapping[str, Target], train_idx, val_idx, cfg: BindConfig, progress,
                    frames: int = 0, name: str | None = None, prior: Callable[[Projector], torch.Tensor | None] | None = None,
                    anchors: Anchors | None = None, lock: str | None = None):
    """The new projector and its training record; ``prior(proj)``: the ridge start's prior for it (None: zero),
    ``cfg.start_guard`` its guard, ``anchors`` (weighted ``cfg.bridge_anchors``) the class anchors into the locked
    modality ``lock``'s space (:func:`ridge_start`; where none could be fitted, said in one line), ``cfg.base_gate``
    the base-encoder gate on a linear start under that prior (where none, its note said in one line); ``cfg.select_se``
    (resolved: :func:`anybind.progressive_start.small_val_choice`) the standard-error rule on the start's choices and
    the epoch, per-item val scores; ``cfg.finetune`` False: no epoch, the start kept (as Space.fit's
    :func:`anybind.robust.loop_config`)."""
    from .losses import build_loss, is_multimodal

    with training_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        pc = ProjectorConfig(
            in_dim=feats.shape[1], out_dim=space.dim, kind=cfg.projector, hidden=cfg.hidden,
            dropout=cfg.dropout, input_dropout=cfg.input_dropout, standardize=cfg.standardize, frames=frames,
        )
        tr_rows = np.unique(row_of[train_idx][row_of[train_idx] >= 0])
        proj = Projector(pc).fit_stats(feats[tr_rows] if len(tr_rows) > 1 else feats, name)
        info: dict[str, Any] = {}
        if cfg.init == "ridge":
            W0 = prior(proj) if prior is not None else None
            rec = ridge_start(proj, feats, targets, train_idx, val_idx, prior=W0, guard=bool(cfg.start_guard),
                              kernel=bool(cfg.kernel_start), seed=cfg.seed, anchors=anchors,
                              anchor_weight=cfg.bridge_anchors or 0.0, lock=lock,
                              gate_q=cfg.base_gate or 0.0, name=name, se=cfg.select_se or 0.0)
            if "note" in rec.get("anchors", {}):  # recorded and said, never skipped in silence
                log.info("start: %r: no class anchors (%s)", name, rec["anchors"]["note"])
            info["ridge_alpha"], info["ridge_start"] = rec["alpha"], rec
        loss_fn = build_loss(cfg.loss, label_smoothing=cfg.label_smoothing)
        if is_multimodal(loss_fn):
            raise ValueError(f"progressive binding needs a pairwise objective, not {cfg.loss!r}")
        logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
        opt = make_optimizer(proj.parameters(), logit_scale, loss_fn.parameters(), lr=cfg.lr,
                             weight_decay=cfg.weight_decay)
        sampler = IndexSampler({a: np.flatnonzero(np.isin(t.records, train_idx)) for a, t in targets.items()},
                               cfg.batch_size, rng)
        model = AnchorBinder(proj, logit_scale, loss_fn, torch.from_numpy(feats),
                             {a: t.rows for a, t in targets.items()},
                             {a: torch.from_numpy(t.targets) for a, t in targets.items()},
                             {a: torch.from_numpy(t.keys) for a, t in targets.items()}, noise=cfg.feature_noise)
        batches = ([(a, sampler.next(a)) for a in targets] for _ in itertools.count())
        use_val = any(np.isin(t.records, val_idx).sum() >= 2 for t in targets.values())
        se = cfg.select_se or 0.0  # per-item val scores for the rule (the earliest epoch within se SE of the best)
        res = fit_loop(model, batches, opt, logit_scale, epochs=cfg.epochs if cfg.finetune is not False else 0,
                       steps=sampler.steps(), use_val=use_val, patience=cfg.patience,
                       score=lambda epoch: val_score(proj, feats, targets, val_idx, items=se > 0),
                       keep={"projector": proj}, start=cfg.init == "ridge", progress=progress, label="binding",
                       select_se=se)
        proj.eval()
        info.update({**res.record(VAL_METRIC), "train_temperature": float(math.exp(-logit_scale.item()))})
        return proj, info

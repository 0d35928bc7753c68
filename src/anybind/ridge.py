"""The closed-form ridge start every trainer shares (split out of :mod:`anybind.loop`, which re-exports it).

:func:`ridge_select` walks a shrinkage path scored on val (optionally with the standard-error rule),
:func:`prior_ridge` is one modality's start (a prior scaled onto the targets, the start guard), and
:func:`locked_ridge_start` starts every unlocked projector of a locked space (``Space.fit``'s trainers;
progressive binding calls :func:`prior_ridge` itself); both try the kernel family through :func:`kernel_or_linear`.
:func:`say_starts` says what each modality's start finally is (:func:`start_line`, from its guard's and kernel's records).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .epochs import kernel_miss_words, kept_start_words, se_of
from .errors import DataError
from .metrics import query_ranks
from .base_gate import base_width, gate_start, gated_map, own_val_z
from .projectors import kernel_rows
from .ridge_kernel import SupportSample, finite_map, kernel_start, scaled_prior
from .ridge_span import span_restrict, target_span
from .wording import counted

#: ridge shrinkage candidates (lam = alpha * n), chosen on the validation pairs
RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)
#: with the start guard (a prior to fall back on), the shrinkage path goes on towards the prior, which ends it
#: (infinite shrinkage: the training-free start itself); chosen on val like the rest
GUARD_ALPHAS = (30.0, 100.0, 1000.0)


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
    scores: dict[str, float] | None = None,
    restrict: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor]:
    """``(alpha, W)``: the ridge solution ``W = back((G + alpha n I)^-1 R)`` (float64) whose ``score(W)`` is best.

    ``G``, ``R``: the normal equations (``Z^T Z``, ``Z^T T``; or the dual ``Z Z^T``, ``T`` with
    ``back = Z^T @``).  A NaN score (no val pairs) counts as ``-alpha``: the weakest shrinkage wins.
    ``prior`` (primal only): shrink towards it instead of zero, ``W = (G + lam I)^-1 (R + lam prior)``.
    ``score`` may give per-item scores (their mean is the score).  ``se`` > 0 (the standard-error rule): the most
    shrunk alpha (``alphas`` ascending) whose score is within ``se`` standard errors (of the best's per-item
    scores) of the best; ``record`` (a dict) is filled with the best alpha, its score and standard error.
    ``scores`` (a dict, filled in): ``val``, the chosen alpha's score (NaN without val pairs), so that no caller
    scores the same map again.  ``restrict``: applied to every candidate before it is scored and returned
    (:func:`span_restrict`).
    """
    if prior is not None and back is not None:
        raise ValueError("ridge_select: a prior needs the primal normal equations (no back=)")
    G, R = G.double(), R.double()
    eye = torch.eye(G.shape[0], dtype=torch.float64)
    path: list[tuple[float, float, float, torch.Tensor]] = []  # (val score, its standard error, alpha, W)
    scored = False  # some alpha has a val score (else -alpha stands in for each: the least shrunk wins)

    def key(p: tuple[float, float, float, torch.Tensor]) -> float:  # what is compared: a NaN score counts as -alpha
        return -p[2] if math.isnan(p[0]) else p[0]

    for alpha in alphas:
        lam = alpha * n
        S = torch.linalg.solve(G + lam * eye, R if prior is None else R + lam * prior.double())
        W = back(S) if back is not None else S
        W = restrict(W) if restrict is not None else W
        x = score(W)
        v = np.atleast_1d(np.asarray(np.nan if x is None else x, dtype=np.float64))
        s = float(v.mean())
        err = se_of(v)
        path.append((s, err, alpha, W))
        scored = scored or not math.isnan(s)
    pick = best = max(path, key=key)  # the first best: the least shrunk of ties
    if se > 0:
        if list(alphas) != sorted(alphas):
            raise ValueError("ridge_select: the standard-error rule needs the alphas in ascending order")
        pick = [p for p in path if key(p) >= key(best) - se * best[1]][-1]
    if record is not None and se > 0:
        record.update({"rule": f"{se:g}se", "best_alpha": best[2], **({"best_val": round(key(best), 6),
                       "best_se": round(best[1], 6)} if scored else {"note": "no val pairs: the least shrunk alpha"})})
    if scores is not None:
        scores.update(val=pick[0], best=key(best) if scored else math.nan, best_se=best[1])
    return pick[2], pick[3]


def prior_ridge(G: torch.Tensor, R: torch.Tensor, n: int, score: Callable[[torch.Tensor], float], *,
                W0: torch.Tensor | None = None, exact_prior: bool = False,
                guard: bool = False, has_val: bool = True,
                back: Callable[[torch.Tensor], torch.Tensor] | None = None,
                se: float = 0.0, record: dict[str, Any] | None = None, scores: dict[str, float] | None = None,
                span: torch.Tensor | None = None, guard_se: float = 0.0,
                ) -> tuple[float | None, torch.Tensor, dict[str, Any] | None]:
    """``(alpha, W, guard record)``: one modality's ridge start (:func:`locked_ridge_start`, progressive binding).

    ``G``, ``R``: the normal equations of its training pairs (``Z^T Z``, ``Z^T T``; the dual with ``back``, no
    prior); ``score(W)``: its val score (``has_val``: there are val pairs).  Without a prior ``W0``:
    :func:`ridge_select` over :data:`RIDGE_ALPHAS`, nothing else.  The prior ``W0`` (``in_dim`` x ``out_dim``)
    comes scaled onto the targets (:func:`~anybind.ridge_kernel.scaled_prior`, by the caller, which hands the same
    ``W0`` to the kernel family) and the ridge shrinks towards it; ``exact_prior``: ``W0`` itself (alpha None).
    ``guard``: the training-free start guard -- the path goes on through :data:`GUARD_ALPHAS` and ``W0`` is kept
    (alpha None) when the best ridge does not beat it on val; the record holds both scores and what was kept (no
    val pairs: the ridge, and a ``note``).  The record is None without a guard or a prior.  ``scores`` (a dict,
    filled in): ``val``, the val score of the ``W`` returned, where it was scored (not for ``exact_prior``): every
    map is scored once.  ``span`` (``out_dim`` x ``out_dim``, with a prior): the projector onto the targets' span,
    every candidate of the path restricted to it, ``W P + W0 (I - P)`` (:func:`span_restrict`): the prior's output
    outside that span is kept, never shrunk.  ``guard_se`` > 0 (``TrainConfig.select_se``): the guard keeps ``W0``
    unless the best ridge beats it by more than ``guard_se`` standard errors of that ridge's per-item val scores and
    the ridge returned beats it too (recorded: ``best_val``, ``best_se``, ``rule``)."""
    if exact_prior and W0 is not None:
        return None, W0, None
    path = RIDGE_ALPHAS + GUARD_ALPHAS if guard and W0 is not None else RIDGE_ALPHAS
    scores = {} if scores is None else scores
    fix = None if span is None or W0 is None else (lambda W, W0=W0: span_restrict(W, W0, span))
    alpha, W = ridge_select(G, R, n, score, prior=W0, alphas=path, back=back, se=se, record=record, scores=scores,
                            restrict=fix)
    if not guard or W0 is None:
        return alpha, W, None
    if not has_val:  # nothing to check on: said, not skipped
        return alpha, W, {"kept": "ridge", "note": "no val pairs: the ridge start is not checked against the prior"}
    s_ridge, s_start = scores["val"], float(np.mean(score(W0)))  # training never below the start on val
    keep = "start" if s_start >= s_ridge else "ridge"
    rec = {"ridge_val": round(s_ridge, 6), "start_val": round(s_start, 6), "kept": keep}
    if guard_se > 0:  # the standard-error rule: the start unless the best ridge beats it by more than guard_se SE
        # (and the ridge returned beats it: a wider ridge_se may pick one below the start)
        keep = "start" if s_start >= min(s_ridge, scores["best"] - guard_se * scores["best_se"]) else "ridge"
        rec.update(rule=f"{guard_se:g}se", best_val=round(scores["best"], 6), best_se=round(scores["best_se"], 6),
                   kept=keep)
    if keep == "start":
        scores["val"] = s_start
        return None, W0, rec
    return alpha, W, rec


def kernel_skip(pr: nn.Module, has_val: bool) -> str | None:
    """Why the kernel family is not tried on ``pr`` (no val pairs, a frame-pooling projector), or None: it is."""
    return "no val pairs" if not has_val else "a frame-pooling projector" if pr.cfg.frames else None


def kernel_or_linear(pr: nn.Module, alpha: float | None, W: torch.Tensor, W0: torch.Tensor,
                     rows: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                     score: Callable[[Any], float], base_val: float, *, has_val: bool,
                     seed: int = 0, n_all: int | None = None, span: torch.Tensor | None = None,
                     se: float = 0.0) -> tuple[float | None, torch.Tensor, dict[str, Any]]:
    """``(alpha, W, record)``: a modality's linear start ``(alpha, W)`` (:func:`prior_ridge`'s) or the kernel family on
    the scaled prior ``W0``'s residual (:func:`~anybind.ridge_kernel.kernel_start`), whichever is better on val: the
    branch is set on ``pr`` and ``(None, W0)`` returned where it is kept.  ``rows()``: the support's ``(Z, T)``
    (``n_all``: the training pairs they were cut from; None: every pair, cut there); ``score(branch)``: the val
    criterion of ``W0`` with that branch; ``base_val``: the linear start's (:func:`prior_ridge`'s ``scores``).  A
    frame-pooling projector or no val pairs (``has_val``): not tried, said in the record's ``note``
    (:func:`kernel_skip`).  ``span``: every grid candidate's coefficients restricted to it
    (:func:`locked_ridge_start`'s span lever); ``se``: the standard-error rule (``score`` gives per-item scores).  :func:`locked_ridge_start` and progressive binding's."""
    if note := kernel_skip(pr, has_val):  # said, not skipped
        return alpha, W, {"kept": False, "note": note}
    Z, T = rows()
    branch, rec = kernel_start(Z, T, W0, score, base_val, seed=seed, n_all=n_all, span=span, se=se)
    if branch is None:
        return alpha, W, rec
    pr.set_kernel(*branch)
    return None, W0, rec


PairBlocks = Callable[[str], Iterable[tuple[np.ndarray, np.ndarray]]]

@torch.no_grad()
def locked_ridge_start(projectors: Mapping[str, nn.Module], lock: str | None, train_pairs: PairBlocks,
                       val_pairs: Callable[[str], tuple[np.ndarray, np.ndarray] | None], *,
                       prior: Callable[[str], torch.Tensor | None] | None = None,
                       exact_prior: bool = False, guard: dict[str, dict[str, Any]] | None = None,
                       se: float = 0.0, rule: dict[str, dict[str, Any]] | None = None,
                       kernel: dict[str, dict[str, Any]] | None = None, seed: int = 0,
                       span: dict[str, dict[str, Any]] | None = None, select_se: float = 0.0,
                       anchors: Callable[[str], tuple[torch.Tensor, torch.Tensor, int] | None] | None = None,
                       anchor_weight: float = 0.0, anchored: dict[str, dict[str, Any]] | None = None,
                       gate_q: float = 0.0, gated: dict[str, dict[str, Any]] | None = None,
                       gate_val: Callable[[str], tuple[np.ndarray, np.ndarray] | None] | None = None) -> dict[str, float | None]:
    """Start every unlocked projector at the ridge regression onto the locked modality's space.

    For each modality ``m``, ``W = argmin ||Z W - T||^2 + lam ||W - W0||^2`` over the training pairs
    with ``lock`` (``Z``: ``m``'s standardised features, ``T``: the locked space), ``lam = alpha n`` with ``alpha``
    chosen on the val pairs from :data:`RIDGE_ALPHAS` (:func:`ridge_select`); the MLP path starts at zero on top.  ``train_pairs(m)`` yields blocks of (``m``, ``lock``)
    features (the normal equations are summed over them: memory is one block);
    ``val_pairs(m)``: the val pairs, or ``None`` when there are fewer than 2.  ``W0`` is zero, or
    ``c * prior(m)`` where ``prior(m)`` gives a map (``in_dim``, ``out_dim``) scaled onto the targets; ``exact_prior``:
    a modality with a prior starts at ``c * prior(m)`` itself; ``guard`` (a dict, filled in): the training-free start
    guard, ``guard[m]`` its record (all three: :func:`prior_ridge`); ``se`` > 0: the standard-error rule of
    :func:`ridge_select` over the val pairs' scores (each pair's mean of both directions; ``rule[m]``, a dict filled
    in, records the best alpha, its score and standard error).  ``kernel`` (a dict, filled in): a modality with a
    prior and val pairs also tries the kernel branch on the prior's residual, kept where it beats that start on val
    (:func:`~anybind.ridge_kernel.kernel_start`; ``seed``: its support subset, drawn while the blocks are read:
    :class:`~anybind.ridge_kernel.SupportSample`, at most ``MAX_SUPPORT`` rows held), ``kernel[m]`` its record.
    ``span`` (a dict, filled in; issue 16): a modality with a prior restricts every candidate to the span of its
    training targets (:func:`target_span`, :func:`span_restrict`), keeping the prior's output outside it; ``span[m]``
    the rank, the dimension and the prior's out-of-span share.  ``select_se`` > 0: the standard-error rule on the start guard and
    the kernel keep too (:func:`prior_ridge`'s ``guard_se``, :func:`kernel_or_linear`'s ``se``).  ``anchors(m)``
    (with ``anchor_weight`` > 0; issue 16): ``m``'s data-free anchor pairs or None
    (:func:`anybind.bridge_start.bridge_anchors`: unit bridge directions ``U``, the lock encoder's features ``L`` of
    the same prompts, the bridge block's first column ``d``): each anchor input is the training images' mean with
    its bridge block replaced by ``U`` at the training rows' mean bridge-block norm, its target the locked projector's
    output for ``L``, and the ``k`` anchors enter the normal equations with total weight ``anchor_weight`` x ``n``
    (``n``: the training pairs), so the ridge path, the guard and the val scores see them while the kernel's support,
    the prior's scale and ``lam = alpha n`` stay the training pairs'.  ``anchored[m]`` (a dict, filled in): the
    weight and the anchor count.  ``gate_q`` > 0 (issue 16): a linear start kept under the bridge prior gets the
    base-encoder block's gate (:mod:`anybind.base_gate`), ``gated[m]`` its record (or a note: why none), its reference
    the own val pairs' inputs (``gate_val(m)``, as ``val_pairs``; None: ``val_pairs``').  Returns each alpha.
    """
    if not lock:
        raise DataError("init='ridge' needs a locked modality (lock='text', say): it regresses onto its space")
    if exact_prior and kernel is not None:  # the kernel family is tried against the ridge start's val score
        raise ValueError("locked_ridge_start: exact_prior starts at the scaled prior, no ridge to try the kernel beside")
    tgt = projectors[lock]
    chosen = {}
    for m, pr in projectors.items():
        if m == lock:
            continue
        if pr.cfg.kernel or pr.cfg.gate:  # re-solved (the attention phase's refit): from the linear map alone
            pr.set_kernel(None).set_gate(None)
        G = R = None
        va = val_pairs(m)
        P = prior(m) if prior is not None else None
        try_kernel = kernel is not None and P is not None  # the kernel family, unless kernel_skip says why not
        hold = try_kernel and kernel_skip(pr, va is not None) is None
        n, T_norm2, TT = 0, torch.zeros((), dtype=torch.float64), None
        anc = anchors(m) if anchors is not None and anchor_weight > 0 else None
        gate_d = base_width(P) if gate_q > 0 else None  # the base-encoder block's width under the bridge prior
        held = SupportSample(seed) if hold or gate_d else None  # the kernel's (and gate's) support, as blocks go by
        bridge_norm = 0.0  # the training rows' bridge-block norms, summed (the anchors' scale)
        for xm, xl in train_pairs(m):
            if anc is not None:
                bridge_norm += float(np.linalg.norm(np.asarray(xm, dtype=np.float64)[:, anc[2]:], axis=1).sum())
            Z = pr.standardized(torch.from_numpy(xm))
            T = tgt(torch.from_numpy(xl))
            if held is not None:
                held.add(Z, T)
            g, r = (Z.T @ Z).double(), (Z.T @ T).double()
            G, R = (g, r) if G is None else (G + g, R + r)
            Td = T.double()  # ||T||^2 and T'T summed in float64
            T_norm2 = T_norm2 + Td.pow(2).sum()
            if span is not None and P is not None:  # the targets' Gram (d_out x d_out): their span, streamed
                tt = Td.T @ Td
                TT = tt if TT is None else TT + tt
            n += len(xm)
        if n < 3:
            raise DataError(f"init='ridge': {m!r} has {counted(n, 'training pair')} with {lock!r}; need at least 3")
        Ga = Ra = 0.0
        if anc is not None:  # the data-free anchor pairs, weighted as anchor_weight x n training pairs
            U, L, d = anc
            # the ridge path's only: the prior's scale is the pairs'
            Ga, Ra = anchor_rows(pr, U, tgt(L.float()).double(), d, bridge_norm / n, anchor_weight * n)
            if anchored is not None:
                anchored[m] = {"weight": float(anchor_weight), "count": len(U)}

        # the val pairs' standardised inputs and normalised targets, once: every alpha and kernel candidate reuses them
        zv, gv = (None, None) if va is None else (pr.standardized(torch.from_numpy(va[0])),
                                                  F.normalize(tgt(torch.from_numpy(va[1])), dim=-1).numpy())

        def per_pair(W: torch.Tensor, va=va, z=zv, g=gv, branch=None, gate=None) -> np.ndarray:  # R@1/5/10 both ways
            if va is None:
                return np.array(np.nan)
            fm, fl = va
            y = z @ W.float() if gate is None else gated_map(z, W, *gate)  # gate: (support, ref, d, q)
            q = F.normalize(y + (kernel_rows(z, *branch) if branch else 0), dim=-1).numpy()
            r1 = query_ranks(q @ g.T, query_keys=fm, gallery_keys=fl)
            r2 = query_ranks(g @ q.T, query_keys=fl, gallery_keys=fm)
            return sum((r <= k).astype(np.float64) for r in (r1, r2) for k in (1, 5, 10)) / 6

        Pspan = None
        if TT is not None:
            Pspan, span[m] = target_span(TT, P, G)
        rec: dict[str, Any] = {}
        scored: dict[str, float] = {}  # the start's val score (always set where the kernel is tried: no exact_prior)
        W0 = None if P is None else scaled_prior(G, R, P, T_norm2)  # once: the ridge's prior and the kernel's base
        alpha, W, g = prior_ridge(G + Ga, R + Ra, n, per_pair, W0=W0,
                                  exact_prior=exact_prior, guard=guard is not None, has_val=va is not None,
                                  se=se, record=rec, scores=scored, span=Pspan, guard_se=select_se)
        if g is not None:
            guard[m] = g
        if rule is not None and rec:
            rule[m] = rec
        if try_kernel:  # the kernel family on the prior's residual, on val
            alpha, W, kernel[m] = kernel_or_linear(
                pr, alpha, W, W0, held.rows if held is not None else None,
                lambda b, W0=W0: per_pair(W0, branch=b), scored["val"],  # per-pair scores: their mean is the score
                has_val=va is not None, seed=seed, n_all=n, span=Pspan, se=select_se)
        pr.linear.weight.copy_(finite_map(W, m, alpha, anchor_weight).T)
        pr.linear.bias.zero_()
        if pr.mlp is not None:
            pr.mlp[-1].weight.zero_()
            pr.mlp[-1].bias.zero_()
        pr.ridge_alpha = chosen[m] = alpha
        if gated is not None and gate_q > 0:
            gated[m] = gate_start(m, pr, gate_d, gate_q, held, zv if gate_val is None else own_val_z(pr, gate_val(m)), alpha is None, W,
                                  scored.get("val", float("nan")), lambda W, gate: per_pair(W, gate=gate))
    return chosen


def anchor_rows(pr: nn.Module, U: torch.Tensor, targets: torch.Tensor, d: int, norm: float,
                total: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Ga, Ra)``: the class anchors' share of a ridge start's normal equations (float64) -- each anchor input the
    projector's mean with its bridge block (from column ``d``) the unit direction ``U[k]`` at ``norm`` (the training
    rows' mean bridge-block norm), standardised by ``pr``; ``targets`` their rows; ``total`` weight (the anchor
    weight x the training rows) spread over them.  Space.fit's (:func:`locked_ridge_start`) and progressive
    binding's (:func:`anybind.progressive_fit.anchor_equations`)."""
    with torch.no_grad():
        Xa = torch.cat([pr.mean[:d].float().expand(len(U), d), U.float() * norm], 1)
        Za = pr.standardized(Xa).double()
    w = total / len(U)
    return w * (Za.T @ Za), w * (Za.T @ targets.double())


def start_line(guard: dict[str, Any] | None, kernel: dict[str, Any] | None) -> str:
    """What a modality's start finally is, from its start guard's and kernel family's records (either None):
    ``""`` when neither has anything to say."""
    bridge = guard is not None and guard.get("kept") == "start"
    if guard is None or "note" in guard:
        linear = "the linear ridge start"
    elif bridge:
        linear = f"its label bridge ({kept_start_words(guard)})"
    else:
        linear = f"the ridge (val {guard['ridge_val']:.4f} > its label bridge's {guard['start_val']:.4f})"
    if kernel is None:
        return f"starts at {linear}" if guard is not None and "note" not in guard else ""
    if "note" in kernel:
        return f"starts at {linear}; no kernel branch ({kernel['note']})"
    if kernel["kept"]:
        return (f"starts at its label bridge plus a kernel branch (tau {kernel['tau']}, alpha {kernel['alpha']}): "
                f"val {kernel['val']} beats the linear start's {kernel['base_val']:.4f} "
                f"({'the bridge' if bridge else 'the ridge'})")
    finite = [v for v in kernel["grid"].values() if v is not None and math.isfinite(v)]  # a NaN score never wins
    why = (kernel_miss_words(kernel, max(finite)) if finite else
           f"no finite grid score; the linear start's val {kernel['base_val']:.4f}")
    return f"starts at {linear}; no kernel branch ({why})"


def say_starts(logger: logging.Logger, names: Iterable[str], guard: Mapping[str, dict[str, Any]] | None,
               kernel: Mapping[str, dict[str, Any]] | None) -> None:
    """Say what each modality's start is (Space.fit's trainers, progressive binding; on ``logger``): a warning for each
    start guard with nothing to check on (its ``note``), then one line each (:func:`start_line`) from its start
    guard's and kernel family's records (``guard[m]``, ``kernel[m]``; either map None, without ``m`` or its entry
    empty)."""
    said = [(m, (guard or {}).get(m) or None, (kernel or {}).get(m) or None) for m in names]  # empty: nothing
    for m, g, _ in said:
        if g is not None and "note" in g:  # nothing to check on: said
            logger.warning("start guard: %r: %s (its label bridge)", m, g["note"])
    for m, g, k in said:  # one line per modality: what its start finally is
        if line := start_line(g, k):
            logger.info("start: %r %s", m, line)

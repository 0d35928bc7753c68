"""The new projector's ridge start in progressive binding (split out of :mod:`anybind.progressive`): the prior it
shrinks towards (:func:`start_prior`: the new encoder's label bridge into the space's locked encoder, and what the
recipe turns on with it), the bridge's class anchors (:func:`start_anchors`) and their refusal where the targets
cannot hold them (:func:`check_anchor_targets`); and the choices made on its val pairs: the standard-error rule and
the start kept without fine-tuning where they are few, as Space.fit's recipe auto (:func:`small_val_choice`), said and
warned in one line each (:func:`say_val_size`)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .bridge_start import bridge_anchors, bridge_into, bridge_prior
from .errors import DataError
from .fit_checks import VAL_WARN, fine_tuning_options, small_val_rule
from .progressive_fit import BindConfig
from .recipe import ANCHOR_WEIGHT, BASE_GATE
from .scoring import MIP

log = logging.getLogger(__name__)

def start_prior(space, name: str, spec: str, cfg: BindConfig) -> tuple[BindConfig, Callable | None]:
    """``(cfg resolved, prior)``: the ridge start's prior for binding ``name`` (encoder ``spec``) into ``space``.

    The label bridge is the prior where ``spec``'s bridge maps into the space's locked modality's encoder (an
    identity projector: every embedding of the space lives in that encoder's space; not a Symile space) and
    ``cfg.ridge_prior`` is not "zero"; ``start_guard`` / ``kernel_start`` None turn the guard / the kernel start on
    with it (as Space.fit's recipe), ``bridge_anchors`` / ``base_gate`` None is :data:`~anybind.recipe.ANCHOR_WEIGHT` /
    :data:`~anybind.recipe.BASE_GATE` with it, else 0.
    ``prior(projector)`` gives the map (:func:`anybind.robust.bridge_prior`); None where there is none, and
    ``ridge_prior="bridge"``, ``start_guard=True``, ``kernel_start=True``, ``bridge_anchors`` > 0 or ``base_gate`` > 0
    there is a one-line error."""
    if cfg.init != "ridge":
        return cfg, None
    locked, lock_spec = lock_of(space, name)
    bridged = lock_spec is not None and bridge_into(spec, lock_spec) is not None
    if not bridged and (cfg.ridge_prior == "bridge" or cfg.start_guard or cfg.kernel_start or cfg.bridge_anchors
                        or cfg.base_gate):
        if lock_spec:
            where = f"the locked {locked[0]!r} encoder {lock_spec}"
        elif space.scorer.kind == MIP:
            where = "this Symile space (its embeddings are not one encoder's space)"
        elif len(locked) > 1:
            where = f"this space (locked modalities {', '.join(map(repr, locked))}: not a single one)"
        elif name in space.projectors and space.projectors[name].cfg.kind == "identity":
            where = f"this space (its only locked modality is {name!r}, the one replaced)"
        else:
            where = "this space (no locked modality)"
        raise DataError(f"binding {name!r}: ridge_prior='bridge' / start_guard=True / kernel_start=True / "
                        "base_gate > 0 / bridge_anchors > 0 need a label bridge, and "
                        f"{spec} has none into {where}")
    use = bridged and cfg.ridge_prior != "zero"
    guard = use if cfg.start_guard is None else cfg.start_guard
    kern = use if cfg.kernel_start is None else cfg.kernel_start
    weight = (ANCHOR_WEIGHT if use else 0.0) if cfg.bridge_anchors is None else float(cfg.bridge_anchors)
    gate = (BASE_GATE if use else 0.0) if cfg.base_gate is None else float(cfg.base_gate)
    cfg = dataclasses.replace(cfg, ridge_prior="bridge" if use else "zero", start_guard=guard, kernel_start=kern,
                              bridge_anchors=weight, base_gate=gate)
    return cfg, ((lambda proj: bridge_prior(spec, lock_spec, proj)) if use else None)


def lock_of(space, name: str) -> tuple[list[str], str | None]:
    """The space's locked modalities other than ``name`` and, where there is exactly one (not a Symile space), its
    encoder: the space a label bridge could map into."""
    locked = [m for m, p in space.projectors.items() if p.cfg.kind == "identity" and m != name]
    return locked, space.encoders[locked[0]] if len(locked) == 1 and space.scorer.kind != MIP else None


def start_anchors(space, name: str, spec: str, cfg: BindConfig) -> tuple[str | None, Callable | None]:
    """``(lock, anchors)`` for :func:`~anybind.progressive_fit.train_projector`: the locked modality and, where
    ``cfg`` (resolved by :func:`start_prior`) fits the class anchors, ``anchors(projector)`` -- the new encoder's
    :func:`~anybind.bridge_start.bridge_anchors` with their lock features through the space's locked projector
    (what its embeddings of the class prompts are); ``(None, None)`` at weight 0."""
    if not cfg.bridge_anchors:
        return None, None
    locked, lock_spec = lock_of(space, name)

    def anchors(proj):
        a = bridge_anchors(spec, lock_spec, proj)
        if a is None:
            return None
        U, L, d = a
        return U, torch.from_numpy(space.project(locked[0], L.numpy())), d

    return locked[0], anchors


def check_anchor_targets(name: str, lock: str | None, asked: float | None, targets: Sequence[str],
                         where: str | None = None) -> None:
    """A class-anchor weight the user gave (``asked`` > 0) where the anchors cannot apply -- the ``targets`` (anchor
    modalities) hold no embeddings of the locked modality ``lock`` the label bridge maps into: replace_encoder's own
    old embeddings alone, anchors without it, data that pairs too few records with it -- refused in one line before
    any encoding (``where``: the data, when it chose the targets).  The recipe's own weight gets a ``note`` instead
    (:func:`~anybind.progressive_fit.anchor_equations`)."""
    if not asked or lock is None or lock in targets:
        return
    why = (f"fewer than 2 training records of {where} pair {name!r} with {lock!r}" if where else
           f"the targets are the space's own old {name!r} embeddings alone" if list(targets) == [name] else
           f"the targets are {' and '.join(repr(t) for t in targets)} embeddings alone")
    raise DataError(f"binding {name!r}: bridge_anchors={float(asked):g} fits the label bridge's class anchors onto "
                    f"the locked {lock!r} embeddings, and {why}: give {lock!r} as an anchor (anchors=[{lock!r}]; "
                    f"anybind bind --anchors {lock}) with records pairing {name!r} with {lock!r}, or leave "
                    "bridge_anchors unset")


def val_pair_count(counts: Sequence[int]) -> int:
    """The val pairs the new projector's choices are scored on at worst, from each anchor's val pairs with the new
    modality (``counts``): the fewest of an anchor with 2 or more (those its val score reads), else the most (0 or 1:
    none scored), as :func:`anybind.fitting.val_pairs` counts a fit's."""
    return min([c for c in counts if c >= 2] or [max(counts, default=0)])


def small_val_choice(cfg: BindConfig, n: int) -> tuple[BindConfig, dict[str, Any]]:
    """``(cfg resolved, chosen)``: ``select_se`` / ``finetune`` left at None resolved as Space.fit's recipe auto
    resolves them (:func:`anybind.fit_checks.small_val_rule` on ``n`` val pairs, :func:`val_pair_count`, from a ridge
    start; a fine-tuning option asked: ``lr`` or ``loss`` not its default, :func:`~anybind.fit_checks.
    fine_tuning_options`): ``chosen`` what the rule set (``{}``: 0 / True, or the user's)."""
    own = {f.name: f.default for f in dataclasses.fields(BindConfig)}
    given = {k: v for k, v in cfg.to_dict().items() if v != own[k]}
    chosen = small_val_rule(n, cfg.select_se is not None, cfg.finetune is not None,
                            bool(fine_tuning_options(given, {}, own))) if cfg.init == "ridge" else {}
    se = chosen.get("select_se", cfg.select_se or 0.0)
    ft = chosen.get("finetune", True if cfg.finetune is None else cfg.finetune)
    return dataclasses.replace(cfg, select_se=float(se), finetune=ft), chosen


def say_val_size(name: str, where: str, n: int, cfg: BindConfig, chosen: Mapping[str, Any]) -> dict[str, Any] | None:
    """Say in one line what :func:`small_val_choice` chose (info), and warn in one line, naming the data ``where``,
    when the binding chooses on fewer than :data:`~anybind.fit_checks.VAL_WARN` val pairs without the standard-error
    rule, or on none (every choice falls back to its default); the warning's record (the lineage's ``val_warning``)
    or None."""
    if chosen:
        ft = chosen.get("finetune") is False
        log.info("binding %r: select_se=1%s (only %d val pairs, fewer than %d: each choice on val takes the candidate "
                 "nearest the training-free start within one standard error of the best%s; select_se=0 chooses the "
                 "best val mean)", name, ", finetune=False" if ft else "", n, VAL_WARN,
                 ", and the start is kept without fine-tuning (finetune=True fine-tunes it)" if ft else "")
    if n >= VAL_WARN or (n >= 2 and cfg.select_se > 0):
        return None
    if n < 2:
        msg = (f"{where}: binding {name!r}: no val pairs with its anchors ({n}): every choice it makes on val falls "
               "back to its default (the least-shrunk ridge alpha, not checked against the label bridge, no kernel "
               f"branch; the last epoch); give the data val records (\"split\": \"val\", at least {VAL_WARN} pairs)")
    else:
        msg = (f"{where}: binding {name!r}: only {n} val pairs with its anchors (fewer than {VAL_WARN}): a val R@1 has "
               f"a standard error up to {math.sqrt(0.25 / n):.3f}, and every choice made on them (start guard, ridge "
               "alpha, kernel keep, epoch) may follow this data's look and lose off its domain; take the candidate "
               "nearest the training-free start with select_se=1 (--select-se 1) (BENCHMARKS.md, the base-encoder "
               "block's gate in progressive binding)")
    log.warning("%s", msg)
    return {"val_pairs": n, "threshold": VAL_WARN, "message": msg}

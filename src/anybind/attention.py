"""The frame-pooling attention phase every trainer runs between its warm start and fine-tuning (issue 17).

A temporal (``pool=attn``) projector's attention scorer first trains alone on top of the frozen warm start
(:func:`attention_phase`), then the ridge map is re-solved for the frames the learnt pool picks and kept only
when val does not fall (:func:`refit_after_attention`); :func:`attention_start` runs both.  Shared by the
in-memory trainer (:mod:`anybind.train`) and the streaming / Ray trainer (:mod:`anybind.scale.train`).  ``cfg``
is a :class:`~anybind.train.TrainConfig` (read for ``attn_lr``, ``attn_epochs``, ``epochs``, ``init``, ``lr``,
``weight_decay`` and ``patience``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .errors import DataError
from .loop import fit_loop
from .projectors import Projector, attention_parameters, load_start_state, start_state


def check_attention(cfg: Any) -> None:
    """Refuse a bad frame-pooling attention setting (``attn_lr``, ``attn_epochs``) in one line, before any work
    and for every space (shared by the in-memory and streaming trainers)."""
    lr, ep = cfg.attn_lr, cfg.attn_epochs
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise DataError(f"attn_lr must be a positive number (or None: lr), got {lr!r}")
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 0:
        raise DataError(f"attn_epochs must be a whole number >= 0, got {ep!r}")


def attention_start(projectors: Mapping[str, Projector], model: torch.nn.Module, batches: Iterator, steps: int,
                    logit_scale: torch.Tensor, cfg: Any, *, use_val: bool, score: Callable[[int], float],
                    refit: Callable[[], Any], progress: bool = False) -> dict[str, Any] | None:
    """What every trainer runs between its warm start and fine-tuning: the :func:`attention_phase`, then the
    ridge map re-solved for the frames the learnt pool picks (``refit()``, the trainer's ridge start), kept only
    when val does not fall (:func:`refit_after_attention`).  The phase's record, ``ridge`` the refit's record when
    kept (``None``: dropped); ``None`` when no phase ran."""
    phase = attention_phase(projectors, model, batches, steps, logit_scale, cfg, use_val=use_val, score=score,
                            progress=progress)
    if phase is not None:
        phase["ridge"] = refit_after_attention(projectors, phase, refit, score if use_val else None)
    return phase


def attention_phase(projectors: Mapping[str, Projector], model: torch.nn.Module, batches: Iterator, steps: int,
                    logit_scale: torch.Tensor, cfg: Any, *, use_val: bool, score: Callable[[int], float],
                    progress: bool = False) -> dict[str, Any] | None:
    """Train the frame-pooling projectors' attention scorers alone for up to ``cfg.attn_epochs`` epochs (issue 17).

    Only the scorers are stepped (an optimizer over them alone, so ``model`` may be DDP-wrapped); the maps, the
    temperature and the loss' parameters stay where the warm start put them, so the attention learns which frames
    the start's map reads best instead of racing a whole projector that overfits a few hundred clips within an
    epoch or two.  Rate ``cfg.attn_lr`` (``None``: ``cfg.lr``); early stopping on val with the start (uniform
    attention) as epoch 0, as in any fit.  :func:`attention_start` re-solves the ridge start afterwards.
    Returns the phase's record (``None``: no temporal projector, ``attn_epochs`` or ``epochs`` 0, or a random
    start, where the attention trains with the rest)."""
    check_attention(cfg)
    attn = attention_parameters(projectors)
    if not attn or cfg.attn_epochs == 0 or cfg.epochs <= 0 or cfg.init == "random":
        return None
    opt = torch.optim.AdamW([{"params": attn, "weight_decay": cfg.weight_decay}],
                            lr=cfg.lr if cfg.attn_lr is None else cfg.attn_lr)
    res = fit_loop(model, batches, opt, logit_scale, epochs=cfg.attn_epochs, steps=steps, use_val=use_val,
                   patience=cfg.patience, score=score, start=True, progress=progress,
                   keep=dict(projectors), label="attention")
    for p in model.parameters():  # what the frozen parameters gathered (never stepped)
        p.grad = None
    return {"best_epoch": res.best_epoch, "best_val": res.best_val if use_val else None,
            "epochs_run": len(res.history), "lr": opt.param_groups[0]["lr"]}


def refit_after_attention(projectors: Mapping[str, Projector], phase: dict[str, Any], refit: Callable[[], Any],
                          score: Callable[[int], float] | None) -> Any:
    """After an :func:`attention_phase`: the ridge map re-solved for the frames the learnt pool picks (``refit()``,
    which reads the pooled frames through :meth:`~anybind.projectors.Projector.standardized`), kept unless it scores
    lower on val than the phase's best (``score``; ``None``: no val split, kept).  Records ``val_after_ridge`` and
    ``ridge_refit`` in ``phase``; returns ``refit()``'s record when kept, else ``None``."""
    before = {m: start_state(pr) for m, pr in projectors.items()}  # its kernel branches (and temperatures) included
    rec = refit()
    s = score(0) if score is not None else None
    kept = s is None or phase.get("best_val") is None or s >= phase["best_val"]
    phase.update(val_after_ridge=s, ridge_refit="kept" if kept else "dropped: lower on val than the phase's best")
    if not kept:  # back to the start before the refit, its kernel branches included (a refit re-fits or drops them)
        for m, pr in projectors.items():
            load_start_state(pr, before[m])
    return rec if kept else None

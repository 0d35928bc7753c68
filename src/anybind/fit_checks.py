"""What a trained fit refuses before any record is encoded (``Space.fit``, ``anybind fit``, the streaming / Ray fit
beside its own :func:`anybind.scale.train.check_config`): its config as the trainer checks it
(:class:`~anybind.train.TrainConfig`'s fields, :func:`anybind.robust.check_robust`,
:func:`anybind.robust.check_select_se_on`, :func:`anybind.attention.check_attention`), options that contradict a
``finetune`` the user gave, data with fewer than 2 training records, and a ridge start with fewer than 3 training pairs of a modality
with the locked one.  Each was refused only after the training
data was encoded (minutes on a real corpus), or not at all: ``finetune=False`` beside a fixed WiSE-FT alpha or an attention-phase setting (which act on
fine-tuned epochs only) fitted the start as if they were not given."""

from __future__ import annotations

import dataclasses
from typing import Any


def check_before_encoding(plan: Any) -> None:
    """Refuse a contrastive :class:`~anybind.fitting.FitPlan` the trainer would refuse, or that contradicts itself,
    in one line naming the option (or the manifests): nothing for a training-free method."""
    from .attention import check_attention
    from .errors import DataError
    from .wording import counted
    from .recipe import AUTO
    from .robust import IDLE_WITHOUT_FINETUNE, check_robust, check_select_se_on
    from .train import TrainConfig

    if plan.method != "contrastive":
        return
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(plan.config) - known)
    if bad:  # as the other configs say it (a bare "unexpected keyword argument" named no config)
        raise TypeError(f"unknown option(s) {bad} for a trained fit (known: {', '.join(sorted(known))})")
    cfg = TrainConfig(**plan.config)  # its own field checks (flags, seed, epochs)
    ft = plan.config.get("finetune") if "finetune" not in plan.chosen else None  # the user's, not the recipe's
    # finetune=True beside epochs=0 passes: a saved epochs=0 config carries it (finetune resolved to its plain True)
    # and refits (anybind fit refuses them typed)
    # l2sp, mixup, select_se_on: check_robust's; lr and wise None / 'auto' pass: a finetune=False fit saves them
    # (recipe auto's lr and wise='auto', plain's lr), and its saved config refits (anybind fit refuses them typed)
    given = [k for k in finetune_asked(plan)
             if k in ("attn_lr", "attn_epochs") or (k == "wise" and plan.config[k] not in (None, "auto"))]
    if ft is False and given:  # refused, not ignored: no epoch for them to act on
        raise DataError(f"{', '.join(f'{k}={plan.config[k]!r}' for k in given)} {IDLE_WITHOUT_FINETUNE}")
    check_robust(cfg.resolved())
    if cfg.select_se is not AUTO:  # an explicit select_se=0 beside select_se_on='finetune' (left to the recipe: the
        check_select_se_on(cfg)  # trainer says it, once, after recipe auto has or has not set the rule)
    check_attention(cfg.resolved())
    n = sum(r.split == "train" for man in plan.manifests for r in man.records)
    if n < 2:
        raise DataError(f"{', '.join(str(m.path) for m in plan.manifests)}: need at least 2 training records, found "
                        f"{n} (check the 'split' fields)")
    lock = plan.config.get("lock")
    if plan.config.get("init") == "ridge" and lock in plan.modalities:  # the ridge start's floor, on the records
        for m in (m for m in plan.modalities if m != lock):  # (encoding can only lose pairs, never add one)
            k = sum(r.split == "train" and r.has(m) and r.has(lock) for man in plan.manifests for r in man.records)
            if k < 3:
                raise DataError(f"{', '.join(str(x.path) for x in plan.manifests)}: init='ridge': {m!r} has "
                                f"{counted(k, 'training pair')} with {lock!r}; need at least 3")


def finetune_asked(plan: Any) -> list[str]:
    """The fine-tuning options the user gave (a learning rate or a WiSE-FT setting not the recipe's, an objective
    other than InfoNCE, an L2-SP or mixup weight above 0, the standard-error rule on the fine-tuning choices only,
    ``select_se_on="finetune"``):
    each acts only on fine-tuned epochs, so giving one asks for fine-tuning and recipe auto
    leaves ``finetune`` at its plain True (:func:`anybind.fitting.auto_select_se`).  So does an attention-phase
    setting (``attn_lr``, ``attn_epochs``) other than its default: the phase runs only before fine-tuning (a config object carries every
    field, so the default itself cannot be told from one given)."""
    from .train import TrainConfig

    own = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return ([k for k in ("lr", "wise") if k in plan.config and k not in plan.chosen]
            + [k for k in ("loss", "attn_lr", "attn_epochs") if plan.config.get(k, own[k]) != own[k]]
            + [k for k in ("l2sp", "mixup") if plan.config.get(k)]
            + (["select_se_on"] if plan.config.get("select_se_on", "all") != "all" else []))

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


#: A trained fit (``Space.fit``'s, progressive binding's) that makes its choices (start guard, kernel keep, ridge alpha,
#: epoch, WiSE-FT alpha) on its own val split warns below this many val pairs: at n = 100 the worst-case standard
#: error of a val R@1, sqrt(0.25 / n), is 0.05 (a 95 % interval of +-0.1, the size of the val margins those choices
#: are made on: e.g. kernel branch vs linear start 0.07 on Tux Paint, 0.05 on KTuberling).  Measured (BENCHMARKS.md,
#: transfer: four corpora ...): KTuberling's 36 val pairs (SE 0.083) chose a space that loses to the label bridge
#: off its domain on val; Tux Paint's 103 (0.049), emoji's 140 (0.042) and openclipart's 213 (0.034) did not.
VAL_WARN = 100


def small_val_rule(n: int, se_given: bool, finetune_given: bool, asked: bool) -> dict[str, Any]:
    """What recipe auto's standard-error rule sets for a fit from a ridge start choosing on its own val of ``n`` pairs
    (the fewest of a trained pair; :func:`anybind.fitting.auto_select_se`, progressive binding's
    :func:`anybind.progressive_fit.small_val_choice`): on 2 to :data:`VAL_WARN` - 1 pairs ``select_se=1`` and, unless
    the user gave ``finetune`` or a fine-tuning option (``asked``, :func:`finetune_asked`), ``finetune=False`` (the
    training-free start kept); nothing (``{}``) on fewer or more, or where the user gave ``select_se`` (0 included)."""
    if se_given or not 2 <= n < VAL_WARN:
        return {}
    return {"select_se": 1.0, **({} if finetune_given or asked else {"finetune": False})}


def finetune_asked(plan: Any) -> list[str]:
    """The fine-tuning options the user gave (a learning rate or a WiSE-FT setting not the recipe's, an objective
    other than InfoNCE, an L2-SP or mixup weight above 0, the standard-error rule on the fine-tuning choices only,
    ``select_se_on="finetune"``):
    each acts only on fine-tuned epochs, so giving one asks for fine-tuning and recipe auto
    leaves ``finetune`` at its plain True (:func:`anybind.fitting.auto_select_se`).  So does an attention-phase
    setting (``attn_lr``, ``attn_epochs``) other than its default: the phase runs only before fine-tuning (a config object carries every
    field, so the default itself cannot be told from one given)."""
    from .train import TrainConfig

    return fine_tuning_options(plan.config, plan.chosen, {f.name: f.default for f in dataclasses.fields(TrainConfig)})


def fine_tuning_options(config: Any, chosen: Any, own: Any) -> list[str]:
    """:func:`finetune_asked`'s rule on the options ``config`` (a mapping: what was given), ``chosen`` (those a recipe
    set, not the user's) and ``own`` (the config's defaults; an option it lacks counts at its absence): also
    progressive binding's (:class:`~anybind.progressive_fit.BindConfig`: ``lr`` or ``loss`` not its default)."""
    return ([k for k in ("lr", "wise") if k in config and k not in chosen]
            + [k for k in ("loss", "attn_lr", "attn_epochs") if config.get(k, own.get(k)) != own.get(k)]
            + [k for k in ("l2sp", "mixup") if config.get(k)]
            + (["select_se_on"] if config.get("select_se_on", "all") != "all" else []))

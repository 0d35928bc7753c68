"""``anybind fit``'s ridge-start options (``--init ridge``): what the start shrinks towards
(``--ridge-prior``), its guard, its kernel branch, its span and its standard-error rule (and ``--select-se``, the rule over every choice on val, with
``--select-se-on``, and ``--finetune/--no-finetune``), and their check;
``anybind bind`` shares ``--start-guard`` / ``--kernel-start`` / ``--finetune`` with help of its own,
``--bridge-anchors``, ``--base-gate`` and ``--select-se``.  Read by
:func:`anybind.cli.fit.fit` and :func:`anybind.cli.fit.bind`."""

from __future__ import annotations

import math
from typing import Any, Literal

import typer

from ._common import choice

RidgePrior = Literal["zero", "bridge", "residual"]

#: each ``--NAME/--no-NAME`` switch of the ridge start: its help in ``anybind fit`` and, where it has one, in
#: ``anybind bind``
SWITCH_HELPS: dict[str, tuple[str, ...]] = {
    "start-guard": (
        "With --ridge-prior bridge: keep the label bridge itself as the start when the ridge does not beat "
        "it on val (the recipe's default); --no-start-guard: the ridge always.",
        "As anybind fit's, where the new encoder's label bridge maps into the locked text space (on there by "
        "default): keep the bridge as the start when no ridge beats it on val."),
    "kernel-start": (
        "With --ridge-prior bridge: also a kernel branch on the bridge's residual, kept where it beats the "
        "linear start on val (recipe's).",
        "As anybind fit's, where the label bridge is the prior (on there by default): a kernel branch on the "
        "bridge's residual, kept where it beats the linear start on val."),
    "finetune": (
        "Fine-tune the training-free start with InfoNCE (epochs, WiSE-FT); --no-finetune: keep the start (its "
        "guard, ridge alpha and kernel still chosen on val). Default: the recipe's (no fine-tuning where recipe "
        "auto sets --select-se 1, an own val of 2-99 pairs, unless --lr, --loss, --wise, --l2sp, --mixup, "
        "--select-se-on finetune or an --attn-lr / --attn-epochs not its default is given; else fine-tuned).",
        "As anybind fit's: fine-tune the new projector's ridge start with InfoNCE; --no-finetune: keep the start "
        "(its guard, ridge alpha and kernel still chosen on val). Default: no fine-tuning where --select-se is "
        "left to the default and it is 1 (a ridge start choosing on 2-99 val pairs), unless --loss is not "
        "infonce; else fine-tuned)."),
    "ridge-span": (
        "With --ridge-prior bridge: the ridge start and its kernel branch only inside the training text's "
        "span, the bridge kept outside (off).",),
}


def switch_option(name: str, bind: bool = False) -> Any:
    """``--NAME/--no-NAME`` (None: the recipe's) with its help in ``fit`` (``bind``: in ``bind``)."""
    return typer.Option(None, f"--{name}/--no-{name}", help=SWITCH_HELPS[name][bind])


SelectSeOn = Literal["all", "finetune"]

#: ``anybind fit``'s options of the ridge start (each the default of one parameter of :func:`anybind.cli.fit.fit`;
#: None: the recipe's): ``--ridge-prior`` (TrainConfig.ridge_prior), ``--ridge-se K`` and ``--select-se K``
#: (TrainConfig.ridge_se / select_se, checked by :func:`check_ridge_se`), ``--select-se-on`` (select_se_on; "all")
RIDGE_PRIOR = choice(None, RidgePrior, "--ridge-prior",
                     help="What the ridge start shrinks towards: zero, or bridge (a label-bridge encoder's own "
                          "bridge into the locked space); residual: start at the bridge itself and learn a "
                          "zero-initialised residual.")
RIDGE_SE = typer.Option(None, "--ridge-se", metavar="K",
                        help="The ridge start's standard-error rule: the most shrunk alpha within K "
                             "standard errors of the best on val (default 0: the best; --init ridge).")
SELECT_SE = typer.Option(None, "--select-se", metavar="K",
                         help="The standard-error rule over every choice on val (start guard, ridge alpha, "
                              "kernel, epoch, WiSE-FT alpha): nearest the start within K SE (default: 1 for recipe "
                              "auto's in-memory fit from a ridge start choosing on its own val of 2-99 pairs, else 0).")
#: ``anybind bind``'s ``--select-se`` (BindConfig.select_se; ``anybind fit``'s: :data:`SELECT_SE`)
BIND_SELECT_SE = typer.Option(None, "--select-se", metavar="K",
                              help="As anybind fit's: the standard-error rule over every choice on the new "
                                   "projector's val pairs (start guard, ridge alpha, kernel, epoch): nearest the start "
                                   "within K SE (default: 1 for a ridge start choosing on 2-99 val pairs with its "
                                   "anchors, else 0).")
FIT_BRIDGE_ANCHORS = typer.Option(None, "--bridge-anchors", metavar="W",
                                  help="The label bridge's 1000 class anchors (its reading of each ImageNet class "
                                       "paired with the locked text of the class prompt) in the ridge start, weighted "
                                       "W x the training pairs (default 3 with the bridge prior; 0: none).")
#: ``anybind bind``'s ``--bridge-anchors`` (``anybind fit``'s: :data:`FIT_BRIDGE_ANCHORS`): BindConfig.bridge_anchors,
#: taken where the targets hold the locked text (:func:`anybind.progressive_start.check_anchor_targets`)
BRIDGE_ANCHORS = typer.Option(None, "--bridge-anchors", metavar="W",
                              help="The new encoder's label-bridge class anchors (its reading of each of the 1000 "
                                   "ImageNet classes paired with the locked text's embedding of the class prompt) in "
                                   "the new projector's ridge start, weighted W x its training pairs; only where its "
                                   "targets hold the locked text (--add with text among the anchors; --replace "
                                   "with --anchors text), a W given elsewhere is refused (default 3 where the new "
                                   "encoder's label bridge maps into the locked text space, else none; 0: none).")
VAL_HOLDOUT = typer.Option(None, "--val-holdout", metavar="F",
                           help="Where the data has no val split (fewer than 2 val pairs): hold this share of the "
                                "training records out as val (by a hash of their ids) for every choice made on val "
                                "(default 0.15 for recipe auto's fit from a ridge start; 0: train on all of them and "
                                "choose blind).")
BASE_GATE = typer.Option(None, "--base-gate", metavar="Q",
                         help="Fade a linear ridge start's base-encoder correction for inputs farther from the "
                              "training inputs than the nearest 1-Q of own val (default 0.2 with the bridge prior; 0: "
                              "off).")
#: ``anybind bind``'s ``--base-gate`` (BindConfig.base_gate; ``anybind fit``'s: :data:`BASE_GATE`)
BIND_BASE_GATE = typer.Option(None, "--base-gate", metavar="Q",
                              help="Fade the new projector's linear ridge start's base-encoder correction for inputs "
                                   "farther from its training inputs than the nearest 1-Q of its val pairs' inputs "
                                   "(default 0.2 where the new encoder's label bridge is the prior, else none; 0: off).")
SELECT_SE_ON = choice(None, SelectSeOn, "--select-se-on",
                      help="Which choices --select-se rules: all, or finetune (the epoch and WiSE-FT alpha only; the "
                           "start's guard, ridge alpha and kernel as without it).")


def check_ridge_se(se: float | None, option: str = "--ridge-se") -> None:
    """``--ridge-se`` or ``--select-se`` (``option``), a number of standard errors: refused in one line, before any
    work, unless a finite number >= 0 (or not given)."""
    if se is not None and not (math.isfinite(se) and se >= 0):  # typer has parsed a float: no huge int reaches here
        raise typer.BadParameter(f"a non-negative number of standard errors, got {se:g}", param_hint=option)


def check_anchor_weight(w: float | None) -> None:
    """``--bridge-anchors``: refused in one line, before any work, unless a finite number >= 0 (or not given)."""
    from ..bridge_start import anchor_weight_problem

    if w is not None and (problem := anchor_weight_problem(w)) is not None:  # a flag takes no None: not offered
        raise typer.BadParameter(problem, param_hint="--bridge-anchors")


def check_finetune_given(ctx: typer.Context, finetune: bool | None) -> None:
    """``--no-finetune`` beside a typed ``--lr`` / ``--wise`` / ``--loss`` other than ``infonce`` (they act on
    fine-tuned epochs only), and ``--finetune``
    beside ``--epochs 0``: refused in one line before any work, not left unused.  The library lets ``lr`` /
    ``wise='auto'`` pass beside ``finetune=False``, and ``finetune=True`` beside ``epochs=0`` (a saved config carries
    them and refits); here they were typed."""
    from .fit_free import given_options

    typed = given_options(ctx, {"lr", "wise", "loss"}) if finetune is False else []  # --epochs: a budget, typed anyway
    typed = [o for o in typed if (o != "--wise" or ctx.params["wise"].strip().lower() not in ("off", "none"))
             and (o != "--loss" or ctx.params["loss"].strip() != "infonce")]
    if typed:
        raise typer.BadParameter(f"{' / '.join(typed)} acts only on fine-tuned epochs and --no-finetune keeps the "
                                 "training-free start (no epoch): drop it or give --finetune", param_hint="--no-finetune")
    if finetune is True and ctx.params["epochs"] == 0:  # the library lets it pass: a saved epochs=0 config carries it
        raise typer.BadParameter("--finetune fine-tunes for --epochs > 0, and --epochs 0 keeps the training-free start "
                                 "(as --no-finetune): give --epochs > 0 or drop --finetune", param_hint="--finetune")


def check_base_gate(q: float | None) -> None:
    """``--base-gate``: refused in one line, before any work, unless a number in [0, 1] (or not given)."""
    from ..base_gate import gate_q_problem

    if q is not None and (problem := gate_q_problem(q)) is not None:
        raise typer.BadParameter(problem, param_hint="--base-gate")


def check_val_holdout(f: float | None) -> None:
    """``--val-holdout``: refused in one line, before any work, unless a number in [0, 0.5] (or not given)."""
    from ..holdout import holdout_problem

    if f is not None and (problem := holdout_problem(f)) is not None:
        raise typer.BadParameter(problem, param_hint="--val-holdout")

"""What ``Space.fit`` binds with when the user leaves a choice open: the best recipe the project knows.

Measured on Tux Paint (``anybind bench --task tuxpaint-ablation`` and ``--task defaults``, chosen on the val
split): with text among the bound modalities, the text encoder's own space *is* the shared space (``lock="text"``,
an identity projector, so the space has the text encoder's width), every other projector starts at a ridge regression onto it (``init="ridge"``; early
stopping keeps that start when fine-tuning does not raise the val score), and images carry their label bridge
(``image:efficientnet-lite0+bridge``: the image model's own ImageNet head mapped into the text space) when the
image encoder is left open and the text lock is one the bridge was measured with (``text:minilm``, the default, or
the MiniLM + e5-small ensemble below: the bridge then maps into it).

Robust fine-tuning (issue 16, chosen on the transfer matrix's *val* cells: ``anybind bench --task transfer``,
train on Tux Paint / emoji / openclipart / all, R@1 on every corpus): with the ridge start, a label-bridge image
projector shrinks towards the label bridge instead of zero (``ridge_prior="bridge"``, see :mod:`anybind.robust`),
fine-tuning runs at ``lr=1e-4`` (:data:`FINE_TUNE_LR`; the ridge weights are ~1e-4, Adam's 1e-3 per step wiped
the start out in one epoch) and is mixed back with its start, alpha chosen on val (``wise="auto"``, WiSE-FT).
Measured on the full matrix on branch h11, before the port to the shared loop (its command and numbers:
BENCHMARKS.md, section transfer, last note; the alternatives below with ``--opt systems=...``), old -> new:
held-out corpora, val R@1 minus the better of label bridge and Procrustes, mean over the 12 off-diagonal cells
of each / all: -0.002 (6/12 cells >=) -> +0.027 (12/12); test: -0.014 (5/12) -> +0.029 (10/12); the 18 cells with
leave-one-out too: -0.008 (10/18) -> +0.028 (15/18).  Diagonal, test text->image / image->text R@1: Tux Paint
0.321 / 0.203 -> 0.390 / 0.321, emoji 0.241 / 0.220 -> 0.259 / 0.248, openclipart 0.262 / 0.253 -> 0.241 / 0.237
(the one cell that dropped, inside its interval).  Fashion-MNIST zero-shot (10,000 test images, inductive), trained
on Tux Paint 0.301 -> 0.409, on all three 0.297 -> 0.347 (label bridge 0.212).  The bridge prior is what moved
them (the start alone: +0.028 val, +0.029 test); WiSE-FT with the gentle rate adds +0.013 to the diagonal on val.
Not taken: WiSE-FT at lr 1e-3 (alpha from in-domain val follows the fine-tuned weights, off-diagonal val +0.012,
9/12), a fixed alpha 0.5 (-0.003, 6/12), L2-SP (lambda 1e-4 or 1e-3 chosen on val: +0.001, 8/12; 0.01 to 1
kept the start: early stopping never left epoch 0) and inductive centring
(``center=True``: +0.000 on average over 126 val cells, each within +-0.03; Fashion-MNIST +0.001).
Also not taken (branch h32, Tux Paint + emoji, 300 train records, off-diagonal val minus the better baseline; BENCHMARKS.md,
section transfer): geodesic mixup (``mixup=0.5``: +0.030 vs +0.024 over three seeds, +0.024 vs +0.017 with openclipart as a third
corpus, each gap inside its interval; diagonal -0.005 / +0.002; test level: a candidate for the full matrix), selection on another corpus (``select_data``, openclipart's val: +0.036 vs +0.036, Tux
Paint's own val t->i 0.485 -> 0.437) and the bridge as a residual branch (``ridge_prior="residual"``: +0.009 vs +0.031
over two seeds).
Also not taken (branch h150, BENCHMARKS.md section transfer, held-out domain): for an emoji-trained space (300 pairs) selection
on emoji + Tux Paint val changes nothing (WiSE alpha already 0, ridge alpha at the grid's top); with ``ridge_prior="residual"``
it beats the label bridge on Fashion-MNIST train 0-899 in three seeds (balanced 0.326 -> 0.340-0.361) but costs the Tux
Paint-trained space 3-4 of 103 own-val queries each way: an opt-in (``select_data=`` + ``ridge_prior="residual"``).
The ridge grid's top (10) binds there; a longer grid lets defaults + ``select_data`` reach FM balanced 0.343 (measured, not
wired: it breaks ``select_data=<own data>`` = the plain fit, or, for every fit, needs the full matrix).
Also not taken (branch h86, BENCHMARKS.md section defaults-image-encoder): a larger image encoder,
``image:efficientnet-lite1+bridge`` / ``lite2+bridge``: Tux Paint's own val t->i 0.476 -> 0.495 / 0.495 (1-2 queries),
but every held-out measure lower: transfer matrix off-diagonal val +0.031 (4/4) -> +0.013 (2/4) / -0.023 (2/4),
Fashion-MNIST train 0-999 zero-shot 0.386 -> 0.254 / 0.296; encoding 1.5x slower.
Also not taken (branch h107, BENCHMARKS.md section defaults-image-ensemble): the feature ensemble
``image:concat(image:efficientnet-lite0,image:efficientnet-lite2)+bridge``: Tux Paint val t->i 0.466 -> 0.544 but i->t
0.408 -> 0.398, off-diagonal val +0.031 -> +0.038 (4/4 either way; one cell -1 query), the transfer's Tux Paint diagonal
i->t -5 queries, Fashion-MNIST selection set mixed; encoding 2.1x.  An option (Tux Paint test t->i 0.417 vs 0.385).
Re-measured on branch h135 (val only; BENCHMARKS.md, same section): Tux Paint val t->i 0.456 -> 0.544 (seed 0) and
0.476 -> 0.524 (seed 1), i->t -2 of 103 queries on both; the held-out transfer cells as h107's; but the
Fashion-MNIST selection set (train 0-299) inductive 0.383 -> 0.367 (-5 of 300 images), transductive 0.417 -> 0.403:
it loses the one zero-shot measure the default must not lose, so it stays an option.  Settled on branch h145 with
four more disjoint selection sets (train 300-599, 600-899, 2000-2299, 2300-2599; ``--opt offset``): it loses on all
five, pooled over 1,500 images 0.412 -> 0.383 (86 won, 129 lost; paired 95 % -0.046 to -0.009).  Beside it on Tux Paint val,
none moved t->i by more than a query: lr 1e-5 / 3e-5, a linear projector, more dropout (fine-tuning never beats
the ridge start at epoch 1), the bridge's softmax temperature or a drawing template, CSLS / QB-Norm at query time.
Also not taken (branch h158, BENCHMARKS.md section defaults-image-ensemble): ``concat(lite0,lite1)+bridge``
(Tux Paint val t->i +3 queries on two seeds, but Fashion-MNIST selection sets pooled 0.412 -> 0.355, paired
-0.077 to -0.037) and the lite2 ensemble with lite0's ImageNet head alone as its bridge (val i->t 0.417 -> 0.369;
FM 0-899 0.402 -> 0.372, as with the mean head): the extra model's features, not its head, cost Fashion-MNIST.
Re-measured on this code (BENCHMARKS.md, sections transfer, defaults, tuxpaint-ablation): a smaller matrix
(Tux Paint + emoji, 300 train records each, 1,000 Fashion-MNIST images), off-diagonal val R@1 minus the better
baseline -0.030 (2/4 cells >=) -> +0.045 with the bridge start alone -> +0.036 (4/4) with the defaults; Tux Paint
test text->image R@1 0.321 -> 0.390 (all train pairs).  In-domain Tux Paint val alone would not have chosen it
(mean R@1/5/10 0.649 -> 0.647, a tie): the choice rests on the held-out corpora's val cells.

An option, not the default (branch h158, BENCHMARKS.md section defaults-image-ensemble, val only): the lock
``text:concat(text:minilm,text:e5-small)`` with the bridge mapped into it,
``image:efficientnet-lite0+bridge(text:concat(text:minilm,text:e5-small))`` (the image rule above picks that bridge
itself when the lock is the ensemble, :data:`BRIDGED_IMAGE`; the bridge prior follows any bridge into the lock's text
encoder): Tux Paint val t->i / i->t 0.456 / 0.417 -> 0.485 / 0.417 (seed 0), 0.476 / 0.408 -> 0.515 / 0.437
(seed 1), Fashion-MNIST selection slices pooled 0.412 -> 0.418 (-0.011 to +0.021); but the transfer matrix's
held-out val cells (branch h172, trained on Tux Paint, emoji or openclipart, 300 pairs, seeds 0 and 1: ``--opt
text=``) are lower than the default's in 8 of 16 and higher in 5 (net -14 queries; emoji held out loses 6 of its 8),
off-diagonal val minus the better baseline (Tux Paint + emoji) +0.031 / +0.023 -> +0.011 / +0.015,
and e5-small's symmetric "query: " prefix is no better on val (+1 / -4 queries t->i).

The start guard (issue 16, helper h173; ``start_guard=True`` with the bridge prior, :mod:`anybind.robust`): the
ridge's shrinkage path goes on to 30, 100, 1000 and the label bridge itself, all scored on val, and the bridge is
kept as the start when no ridge beats it,
so training never falls below the training-free start on the val (or ``select_data``) pairs.  Where training
helps on val it changes nothing (own val picks the same shrinkage for Tux Paint, emoji and openclipart at 300
pairs: every transfer cell as before); with ``select_data`` on another corpus its longer path lifts the
openclipart-trained space (Tux Paint t->i test 0.160 -> 0.225, FM 0.194 -> 0.251) but not the emoji-trained one
(KTuberling as the held-out corpus: every cell lower), so selection stays an opt-in.  BENCHMARKS.md, section
transfer, "the start guard".

The kernel start (issue 16, helper h201 after h191's feature-level measurement; ``kernel_start=True``, on wherever
the recipe turns the bridge prior on): beside the linear ridge path and the bridge itself, the ridge start fits a
kernel branch on the bridge prior's residual (:mod:`anybind.ridge_kernel`, a small tau x alpha grid chosen on val) and
keeps whichever of the three scores best on val.  Tux Paint val, all train pairs, the defaults with and without it
in one run: the start's criterion 0.647 -> 0.715, t->i / i->t R@1 0.466 / 0.408 -> 0.524 / 0.408; the transfer
matrix (300 pairs each of Tux Paint, emoji, openclipart): off-diagonal val minus the better baseline +0.015 (11/12
cells >=) -> +0.035 (12/12), though the Tux Paint diagonal at 300 pairs loses 2 / 3 of 103 val queries; BENCHMARKS.md,
section defaults-kernel-start.  ``kernel_start=False`` turns it off.

The label bridge's class anchors (issue 16, session 25; ``bridge_anchors=``:data:`ANCHOR_WEIGHT`, wherever the recipe
turns the bridge prior on; :mod:`anybind.bridge_start`): the frozen classifier's reading of each ImageNet class, paired
with the locked text of its class prompt, enters the ridge start's normal equations beside the training pairs (total
weight 3 x their count).  On the five-corpus transfer matrix's val cells (each corpus' own space, all its pairs) the
weight was screened at 0, 0.1, 0.3, 1, 3, 10, 30, 100 and the bench run with and without it: it moves only the spaces
whose start is linear (KTuberling, icons: the kernel branch the three larger corpora keep is fitted on the bridge's
residual and still wins), the icons space's row off its domain from 0 to 5 of 8 cells >= the better baseline, its own
val up (0.480 -> 0.517); BENCHMARKS.md, transfer: the label bridge's class anchors.  ``bridge_anchors=0`` turns it off.

The base-encoder block's gate (issue 16, session 26; ``base_gate=``:data:`BASE_GATE` wherever the recipe turns the
bridge prior on; :mod:`anybind.base_gate`): a linear start's correction on the base encoder's features -- what the
training domain needs, and what ranks other domains' pictures worse for a caption -- fades for inputs farther from the
training inputs than the nearest 80 % of own val; chosen at 0.2 on the five-corpus matrix's val cells (30 -> 32 of 40
>= the better baseline); BENCHMARKS.md, transfer: the base-encoder block's gate.  ``base_gate=0`` turns it off.

``recipe="auto"`` (the default) applies each rule only where the user chose nothing: an explicit encoder,
``lock``, ``init``, ``dim`` (a projected width rules out locking), ``ridge_prior``, ``start_guard``, ``kernel_start``, ``bridge_anchors``, ``base_gate``, ``wise``, ``lr``, ``select_se`` or ``finetune`` always
wins, as a keyword or in a :class:`~anybind.train.TrainConfig`, whose defaults for these fields are :data:`AUTO`
(the plain default or None given there is a choice too); a field still AUTO after the recipe is its plain default
(:data:`PLAIN`, :func:`resolved`).  ``recipe="plain"`` is the bare default (random init, nothing locked, plain
encoders), kept for comparisons.
The choices made are returned so they are logged and saved in the space.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Self

from .encoders.registry import default_spec
from .errors import DataError

log = logging.getLogger(__name__)

RECIPES = ("auto", "plain")


class Auto:
    """The type of :data:`AUTO`: a training field left open, for the recipe to decide (one instance; it pickles,
    copies and compares as itself, and refuses to be read as a truth value, so an unresolved config fails loudly)."""

    _one: Auto | None = None

    def __new__(cls) -> Self:
        if cls._one is None:
            cls._one = super().__new__(cls)
        return cls._one

    def __repr__(self) -> str:
        return "AUTO"

    def __reduce__(self) -> str:
        return "AUTO"  # pickled by name: the one instance in the process that loads it (a Ray worker)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: Any) -> Self:
        return self

    def __bool__(self) -> bool:
        raise TypeError("a training option is still AUTO (left to the recipe): resolve the config first "
                        "(anybind.train.TrainConfig.resolved, or Space.fit)")


#: the default of every :class:`~anybind.train.TrainConfig` field the recipe chooses (:data:`PLAIN`): "the recipe
#: decides".  Any other value given, the field's plain default or None included, is the user's choice and wins.
AUTO = Auto()

#: what each field left at :data:`AUTO` is when no rule of the recipe chose it (``recipe="plain"``, another
#: method, a modality set no rule applies to, or a trainer called with a config directly)
PLAIN: dict[str, Any] = {"dim": 256, "lr": 1e-3, "init": "random", "lock": None, "wise": None,
                         "ridge_prior": "zero", "start_guard": False, "kernel_start": False, "bridge_anchors": 0.0, "base_gate": 0.0,
                         "select_se": 0.0, "val_holdout": 0.0,
                         "finetune": True}


def check_flags(cfg: Any, flags: Mapping[str, tuple[Any, ...]]) -> None:
    """Refuse a boolean field of ``cfg`` (a config dataclass) holding anything but True or False, or one of the
    values ``flags[name]`` also allows (:data:`AUTO`, None), in one line naming the field: ``1 in (True,)`` holds,
    so a 1, a 1.0 or a numpy bool would pass a membership test and act as a truth value."""
    for name, also in flags.items():
        v = getattr(cfg, name)
        if not isinstance(v, bool) and not any(v is a for a in also):
            names = ["True", "False", *map(repr, also)]
            raise DataError(f"{type(cfg).__name__}.{name} must be {', '.join(names[:-1])} or {names[-1]}, got {v!r}")


#: the largest seed a config takes: numpy's seed sequences take no negative entropy, torch.manual_seed nothing
#: past 2**64 - 1
MAX_SEED = 2**63 - 1


#: scikit-learn's random_state (numpy's legacy RandomState) takes no seed past this
SKLEARN_MAX_SEED = 2**32 - 1


def sklearn_seed(seed: int) -> int:
    """A seed in [0, :data:`MAX_SEED`] as a ``random_state`` scikit-learn takes: itself up to
    :data:`SKLEARN_MAX_SEED` (the draws made so far are kept), else a 32-bit draw of its own seed sequence (so that
    ``2**32 + k`` does not fold onto ``k``)."""
    seed = int(seed)
    if 0 <= seed <= SKLEARN_MAX_SEED:
        return seed
    import numpy as np

    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def check_seed(cfg: Any) -> None:
    """Refuse ``cfg.seed`` (a config dataclass's) unless a whole number in [0, :data:`MAX_SEED`], in one line naming
    the field: a negative seed reached ``np.random.default_rng([seed, ...])`` deep in a fit and failed there."""
    v = cfg.seed
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v <= MAX_SEED:
        raise DataError(f"{type(cfg).__name__}.seed must be a whole number in [0, {MAX_SEED}], got {v!r}")


def check_counts(cfg: Any, least: Mapping[str, int]) -> None:
    """Refuse each field ``name`` of ``cfg`` (a config dataclass) unless a whole number >= ``least[name]``, in one line
    naming it: ``epochs=-1`` fitted the start silently (no epoch ran), ``epochs=2.5`` failed deep in the loop."""
    for name, low in least.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise DataError(f"{type(cfg).__name__}.{name} must be a whole number >= {low}, got {v!r}")


def chosen_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without the fields left at :data:`AUTO` (what the user chose)."""
    return {k: v for k, v in config.items() if v is not AUTO}


def resolved(cfg: Any) -> Any:
    """A config object (:class:`~anybind.train.TrainConfig`) with every field still at :data:`AUTO` at its plain
    default: what each trainer and robust-fine-tuning helper reads (``cfg`` itself when none is)."""
    auto = {k: v for k, v in PLAIN.items() if getattr(cfg, k, None) is AUTO}
    return dataclasses.replace(cfg, **auto) if auto else cfg


#: the learning rate of fine-tuning from a training-free start (the ridge weights are ~1e-4: Adam's default
#: 1e-3 per step wipes the start out in one epoch; see the module docstring)
FINE_TUNE_LR = 1e-4

#: the weight (x the training pairs) of the label bridge's class anchors in the ridge start wherever the recipe
#: turns the bridge prior on (issue 16; chosen on the five-corpus transfer matrix's val cells: 0 -> 3 lifted the
#: off-diagonal cells >= the better baseline from 27 to 30 of 40, BENCHMARKS.md, transfer: the class anchors)
ANCHOR_WEIGHT = 3.0

#: the own-val quantile below which a linear start's base-encoder correction fades (:mod:`anybind.base_gate`) wherever
#: the recipe turns the bridge prior on (issue 16, session 26; chosen on the five-corpus transfer matrix's val cells:
#: 0 -> 0.2 lifted the off-diagonal cells >= the better baseline from 30 to 32 of 40, BENCHMARKS.md, transfer: the
#: base-encoder block's gate)
BASE_GATE = 0.2

#: the share of the training records recipe auto holds out as val where the data has no val split (fewer than 2 val
#: pairs; :mod:`anybind.holdout`): chosen on the five corpora's own val splits with those records dropped from the fit
#: (10 / 15 / 20 / 25 %; BENCHMARKS.md, transfer: a fit with no val split)
HOLDOUT = 0.15

#: the label bridge is built from these two encoders (see encoders/bridge.py)
BRIDGE_IMAGE, BRIDGE_TEXT = "image:efficientnet-lite0", "text:minilm"

#: the text ensemble measured as the lock (module docstring): MiniLM's and e5-small's embeddings side by side
TEXT_ENSEMBLE = "text:concat(text:minilm,text:e5-small)"

#: text locks the automatic image choice maps the label bridge into (measured with it; any other text encoder
#: gets the plain image default, as before): lock spec -> image spec
BRIDGED_IMAGE = {BRIDGE_TEXT: BRIDGE_IMAGE + "+bridge", TEXT_ENSEMBLE: f"{BRIDGE_IMAGE}+bridge({TEXT_ENSEMBLE})"}


def resolve_recipe(
    recipe: str,
    modalities: Sequence[str],
    encoders: Mapping[str, str] | None,
    config: Mapping[str, Any],
    method: str = "contrastive",
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """``(encoder specs, training config, choices made)`` for binding ``modalities`` with ``recipe``."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    given = dict(encoders or {})
    specs = {m: given.get(m) or default_spec(m) for m in modalities}
    cfg = chosen_options(config)  # a field at AUTO is open, as one left out
    chosen: dict[str, Any] = {}
    loss = str(cfg.get("loss", "infonce"))
    if recipe == "plain" or method != "contrastive" or loss.startswith("symile"):
        return specs, cfg, chosen
    if "text" in modalities:
        # an explicit width (dim=...) asks for a projected space: the locked text space has the text encoder's
        if "lock" not in cfg and "dim" not in cfg:
            cfg["lock"] = chosen["lock"] = "text"
        if cfg.get("init") is None and cfg.get("lock"):
            cfg["init"] = chosen["init"] = "ridge"
        if "image" in modalities and "image" not in given and specs["text"] in BRIDGED_IMAGE:
            specs["image"] = chosen["encoders.image"] = BRIDGED_IMAGE[specs["text"]]
        # a label bridge into the lock's own text encoder (text:minilm's, or +bridge(<text spec>)'s)
        from .encoders.bridge import bridge_text  # lazy: `import anybind` loads no model family

        bridged = [m for m in modalities if m != "text" and bridge_text(specs[m]) == specs["text"]]
        if (bridged and "ridge_prior" not in cfg and cfg.get("init") == "ridge"
                and cfg.get("lock") == "text"):  # shrink towards the label bridge, not towards nothing
            cfg["ridge_prior"] = chosen["ridge_prior"] = "bridge"
        if cfg.get("ridge_prior") == "bridge" and "start_guard" not in cfg:  # never below the bridge on val
            cfg["start_guard"] = chosen["start_guard"] = True
        if cfg.get("ridge_prior") == "bridge" and "kernel_start" not in cfg:  # the kernel family on its residual
            cfg["kernel_start"] = chosen["kernel_start"] = True
        if cfg.get("ridge_prior") == "bridge" and "bridge_anchors" not in cfg:  # the bridge's class anchors
            cfg["bridge_anchors"] = chosen["bridge_anchors"] = ANCHOR_WEIGHT
        if cfg.get("ridge_prior") == "bridge" and "base_gate" not in cfg:  # the base-encoder correction, local
            cfg["base_gate"] = chosen["base_gate"] = BASE_GATE
    if cfg.get("init") == "ridge":  # fine-tuning from the training-free ridge start: gently, and mixed back
        if "wise" not in cfg:
            cfg["wise"] = chosen["wise"] = "auto"
        if "lr" not in cfg:
            cfg["lr"] = chosen["lr"] = FINE_TUNE_LR
    if cfg.get("init") is None:
        cfg.pop("init", None)
    if chosen:
        log.info("recipe auto: %s (explicit choices override these)", ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return specs, cfg, chosen

"""One fit orchestration for every trainer (``Space.fit``, ``anybind fit``, ``--stream``, ``--ray-workers``).

:func:`plan_fit` loads the manifests, refuses a corpus marked evaluation-only, and resolves the
recipe (:func:`anybind.recipe.resolve_recipe`: the encoders and training choices the user left
open); :meth:`FitPlan.lineage` is the lineage entry the fitted space records.  :func:`fit_space` (what
``Space.fit`` runs) is :func:`plan_fit` then :func:`fit_in_memory` (encode through the feature cache, train
in memory or fit a training-free map, record); it returns a :class:`~anybind.space_core.SpaceCore`, which
``Space.fit`` hands to the user as an :class:`anybind.Space`.  The streaming / Ray Train fit
(:func:`anybind.scale.sharded.fit_sharded`) follows the same plan with training shards instead of in-memory
features, except recipe auto's standard-error rule on a small own val (:func:`auto_select_se`; it has none).  Both first check the val split the fit chooses on (:func:`check_val_size`): a trained fit without
``select_data`` whose own val split holds fewer than :data:`VAL_WARN` pairs of a trained modality pair (the one
with the fewest), or none, warns in one line and records it in the lineage (``val_warning``).  Both end in
:func:`finish_fit`: the lineage entry, then the calibration on the val split.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import FeatureCache
from .data.manifest import Manifest
from .errors import DataError
from .fit_checks import VAL_WARN, check_before_encoding, finetune_asked, small_val_rule  # VAL_WARN re-exported
from .recipe import chosen_options, resolve_recipe
from .wording import counted

if TYPE_CHECKING:
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

METHODS = ("contrastive", "procrustes", "cca")



def check_method(method: str) -> None:
    """Refuse a fitting method not in :data:`METHODS`, in one line naming it and the methods there are."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use {', '.join(map(repr, METHODS[:-1]))} or {METHODS[-1]!r}")


def check_recipe(recipe: str | None, method: str) -> str | None:
    """The recipe a fit with ``method`` follows: ``recipe`` (None: ``"auto"``) for trained projectors; none for a
    training-free method, which refuses one given (a recipe chooses encoders and training options for trained
    projectors only: it was dropped without a word), in one line naming it."""
    if method == "contrastive":
        return "auto" if recipe is None else recipe
    if recipe is not None:
        raise DataError(f"method={method!r} is training-free: it uses no recipe={recipe!r} (a recipe chooses the "
                        "encoders and training options of trained projectors): drop it or use method='contrastive'")
    return None


@dataclass
class FitPlan:
    """What a fit binds: the loaded manifests, the modalities, their encoders and the training config."""

    manifests: list[Manifest]
    method: str  # "contrastive" | "procrustes" | "cca"
    modalities: list[str]
    specs: dict[str, str]  # modality -> encoder spec (the recipe's where the user gave none)
    config: dict[str, Any]  # training options (the recipe's where the user gave none)
    recipe: str | None  # None: a training-free method (it follows no recipe)
    chosen: dict[str, Any]  # what the recipe chose
    val_warning: dict[str, Any] | None = None  # :func:`check_val_size`'s record: a val too small to choose on
    holdout: dict[str, Any] | None = None  # :func:`anybind.holdout.hold_out_val`'s record: val held out of train

    def lineage(self, space: "SpaceCore | None" = None, **extra: Any) -> dict[str, Any]:
        """The space's lineage entry for this fit (``extra``: e.g. the trainer; ``space``: the fitted space, whose
        ridge start, each modality's shrinkage ``alpha`` and ``prior``, is recorded, and with ``select_se`` what the
        standard-error rule chose for the epoch and the WiSE-FT alpha, ``se_rule``)."""
        from .version import __version__

        mods = self.modalities
        tr = (space.info.get("training") or {}) if space is not None else {}
        ridge = (tr.get("robust") or {}).get("ridge")
        rule = {k: v for k, v in (("epoch", tr.get("epoch_se_rule")),  # select_se: the epoch's and WiSE-FT's choice
                                  ("wise", (tr.get("robust") or {}).get("wise_se_rule"))) if v}
        return {
            "event": "fit",
            "method": self.method,
            "recipe": {"name": self.recipe, "chosen": self.chosen},
            "modalities": mods,
            **extra,
            **({"ridge_start": ridge} if ridge else {}),
            **({"se_rule": rule} if rule else {}),
            **({"val_warning": self.val_warning} if self.val_warning else {}),
            **({"val_holdout": self.holdout} if self.holdout else {}),
            "data": [{"manifest": str(man.path), "fingerprint": man.fingerprint(mods), "records": len(man.records)}
                     for man in self.manifests],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "anybind": __version__,
        }


def fit_options(config: Any, options: Mapping[str, Any], method: str = "contrastive") -> dict[str, Any]:
    """One options dict from ``config`` (a config object such as :class:`~anybind.train.TrainConfig`, a
    mapping, or None) and keyword ``options`` (which win): what the user chose.  A field at
    :data:`~anybind.recipe.AUTO` (a config object's default for what the recipe chooses) is left out, for the
    recipe to fill as a keyword left out; any other value, its plain default or None included, is chosen."""
    check_method(method)  # before the options: a misspelt method is not "training-free"
    if config is None:
        out: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        out = dict(config)
        saved = out.pop("method", method)  # a saved space's config records its method: the same one refits
        if saved != method:
            raise DataError(f"config records method={saved!r} (a saved space's config?) but this fit's method is "
                            f"{method!r}: pass method={saved!r}, or drop 'method' from the config")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        if method != "contrastive":
            raise ValueError(
                f"config={type(config).__name__}(...) configures trained projectors, not method={method!r}: "
                "pass the training-free options (dims, dim, anchor, ridge) as keywords or a dict"
            )
        out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    else:
        raise TypeError(f"config must be a TrainConfig, a dict or None, not {type(config).__name__}")
    out.update(options)
    out = chosen_options(out)
    if method != "contrastive":  # a training option would be dropped (or fail late): refused, by name
        from .align import TRAINING_FREE_OPTIONS

        unused = sorted(set(out) - set(TRAINING_FREE_OPTIONS))
        if unused:
            raise DataError(f"method={method!r} is training-free: it uses no {', '.join(map(repr, unused))} "
                            f"(its options: {', '.join(TRAINING_FREE_OPTIONS)})")
    return out


def plan_fit(
    manifest: str | Path | Manifest | Sequence[str | Path | Manifest],
    modalities: Iterable[str] | None = None,
    *,
    encoders: Mapping[str, str] | None = None,
    method: str = "contrastive",
    recipe: str | None = None,
    config: Mapping[str, Any] | None = None,
    strict: bool = False,
    progress: bool = True,
    allow_eval_only: bool = False,
) -> FitPlan:
    """Load the data and decide what the fit binds with (see the module doc; ``recipe``: :func:`check_recipe`)."""
    from .manifests import fit_manifests

    check_method(method)
    recipe = check_recipe(recipe, method)  # before any record is loaded
    modalities = list(modalities) if modalities is not None else None
    if encoders:  # a relative model folder / file made absolute here, before any encoder (and its identity) is
        # built from it, so that the saved space finds it from any working directory (as the CLI's -e did alone)
        from .encoders.registry import absolute_spec

        encoders = {m: absolute_spec(s) for m, s in encoders.items()}
    # only the fields it binds are loaded: those named, else the base modalities (language variants are listed)
    manifests, bound = fit_manifests(manifest, modalities, encoders, strict, progress)
    if not allow_eval_only:
        from .corpora import is_eval_only

        held_out = [str(m.path) for m in manifests if is_eval_only(m.path)]
        if held_out:
            raise DataError(
                f"{', '.join(held_out)}: corpus marked evaluation-only (corpus.json \"eval_only\": true); "
                "training on it would leak the benchmark. Pass allow_eval_only=True (--allow-eval-only) "
                "if you really mean to."
            )
    mods = sorted(bound)
    if not mods:
        raise DataError("nothing to bind: the manifest has no modality fields")
    specs, cfg, chosen = resolve_recipe(recipe or "plain", mods, encoders, dict(config or {}), method)
    return FitPlan(manifests, method, mods, specs, cfg, recipe, chosen)


def val_pairs(plan: FitPlan) -> tuple[tuple[str, ...] | None, int]:
    """The trained pair with the fewest val records holding it, and that count: what the fit's choices on its own val
    split are scored on at worst (each modality's ridge alpha, start guard and kernel keep on its pair with the locked
    one alone; the epoch and WiSE-FT score, a mean over the pairs, each pair's recall alike).  The pairs trained are
    ``config["pairs"]``, else those with 2 or more training records (:func:`anybind.train.pairs_with_training`); the
    pair is None with a single one trained (nothing to tell apart); ``(None, -1)`` with none (one bound modality: the
    trainer refuses it).  One pass over the records; a fit counts once and hands the result to :func:`auto_select_se`
    and :func:`check_val_size`."""
    from .train import pairs_with_training

    every = list(itertools.combinations(plan.modalities, 2))
    given = [tuple(p) for p in plan.config.get("pairs") or []]
    wanted = list(dict.fromkeys(every + given))  # each pair counted once
    counted = sorted({m for p in wanted for m in p})
    counts: dict[str, dict[tuple[str, ...], int]] = {"train": {}, "val": {}}
    for r in (r for man in plan.manifests for r in man.records if r.split in counts):
        has = {m for m in counted if r.has(m)}
        for p in wanted:
            if has.issuperset(p):
                counts[r.split][p] = counts[r.split].get(p, 0) + 1
    pairs = given or pairs_with_training(plan.modalities, lambda a, b: counts["train"].get((a, b), 0)) or every
    if not pairs:
        return None, -1
    n, pair = min((counts["val"].get(p, 0), p) for p in pairs)
    return (pair if len(pairs) > 1 else None), n


def auto_select_se(plan: FitPlan, select_data: Any = None,
                   val: tuple[tuple[str, ...] | None, int] | None = None) -> float | None:
    """Recipe ``auto``'s standard-error rule: ``select_se=1`` where a trained fit from a ridge start chooses on its own
    val split and that split has 2 to :data:`VAL_WARN` - 1 pairs (:func:`val_pairs`): each choice on val (start
    guard, ridge alpha, kernel keep, epoch, WiSE-FT alpha) then takes the candidate nearest the training-free start
    within one standard error of the best.  Chosen on val across the transfer matrix (BENCHMARKS.md, transfer: the
    standard-error rule by default on a small val): the KTuberling (36 val pairs) and icons (28) spaces stop losing to
    the label bridge off their domain; a corpus with 100 val pairs or more is not touched.  In the same branch
    ``finetune=False`` unless the user gave ``finetune`` or a fine-tuning option (:func:`finetune_asked`): the
    training-free start is kept (no InfoNCE epochs, no
    WiSE-FT mix; on 24-36 val pairs the fine-tuning choice was seed-dependent and never helped off the domain:
    BENCHMARKS.md, transfer: which default on a small own val).  A ``select_se`` the user gave (0 included),
    ``select_data``, another recipe or method, or a random start: nothing (None); else the value set in
    ``plan.config`` and recorded in ``plan.chosen``.  ``val``: :func:`val_pairs` already counted (None: counted
    here)."""
    if (plan.recipe != "auto" or plan.method != "contrastive" or select_data is not None
            or "select_se" in plan.config or plan.config.get("init") != "ridge"):
        return None
    pair, n = val or val_pairs(plan)
    rule = small_val_rule(n, False, "finetune" in plan.config, bool(finetune_asked(plan)))
    if not rule:
        return None
    plan.config.update(rule)  # select_se=1; finetune=False (the start kept: no epochs, no WiSE-FT mix) unless asked
    plan.chosen.update(rule)
    ft = ", finetune=False" if plan.chosen.get("finetune") is False else ""
    of = f" of {'-'.join(pair)}" if pair else ""
    log.info("recipe auto: select_se=1%s (only %s%s, fewer than %d: each choice on val takes the candidate "
             "nearest the training-free start within one standard error of the best%s; select_se=0 chooses the best "
             "val mean, select_data=<manifest> chooses on another corpus' val)", ft, counted(n, "val pair"), of,
             VAL_WARN,
             ", and the start is kept without fine-tuning (finetune=True fine-tunes it)" if ft else "")
    return 1.0


def check_val_size(plan: FitPlan, select_data: Any = None, trainer: str = "in-memory",
                   val: tuple[tuple[str, ...] | None, int] | None = None) -> dict[str, Any] | None:
    """Warn in one line when a trained fit makes its choices (start guard, kernel keep, ridge alpha, epoch, WiSE-FT
    alpha) on its own val split and that split has fewer than :data:`VAL_WARN` pairs (:func:`val_pairs`), or none
    (fewer than 2: every choice falls back to its default); the record, also kept as ``plan.val_warning`` for the
    lineage, or None.  Nothing for a training-free method, with ``select_data`` (the choices are made on another
    corpus' val), or, for a val split that is small but there, with ``select_se`` > 0 (the candidate nearest the
    training-free start within that many standard errors of the best: the fix this warning names).  ``val``:
    :func:`val_pairs` already counted (None: counted here)."""
    if plan.method != "contrastive" or select_data is not None:
        return None
    pair, n = val or val_pairs(plan)
    rule = plan.config.get("select_se")  # not checked yet: a value that is no number is the trainer's to refuse
    rule_on = isinstance(rule, (int, float)) and not isinstance(rule, bool) and rule > 0
    if n < 0 or n >= VAL_WARN or (n >= 2 and rule_on):
        return None
    where = ", ".join(str(m.path) for m in plan.manifests)
    other = "choose on another corpus' val with select_data=<manifest> (anybind fit --select-data OTHER.jsonl)"
    needs = "" if trainer == "in-memory" else ", in the in-memory fit (drop --stream / --ray-workers)"
    of = f" of {'-'.join(pair)}" if pair else ""  # several pairs trained: the one with the fewest
    if n < 2:
        se = None
        it = " for it" if pair else ""
        msg = (f"{where}: no val split{of} ({counted(n, 'val pair')}): every choice this fit makes on val{it} falls "
               "back to its default (the ridge start's least-shrunk alpha, not checked against the label bridge, no kernel "
               "branch; the last epoch, no early stopping; no WiSE-FT mix); give the data val records "
               f"(\"split\": \"val\", at least {VAL_WARN} pairs), hold some training records out as val "
               f"(val_holdout=0.15, --val-holdout 0.15) or {other}{needs} (BENCHMARKS.md, transfer)")
    else:
        se = round(math.sqrt(0.25 / n), 3)  # sqrt(p (1 - p) / n) at p = 0.5: the worst case
        msg = (f"{where}: only {counted(n, 'val pair')}{of} (fewer than {VAL_WARN}): a val R@1 has a standard error "
               f"up to {se:.3f} (sqrt(p(1-p)/n) at p=0.5), and every choice this fit makes on them (start guard, kernel "
               "keep, ridge alpha, epoch, WiSE-FT alpha) may follow this corpus' look and lose to the training-free "
               f"label bridge off its domain; {other}, or take the candidate nearest the training-free start with "
               f"select_se=1 (--select-se 1){needs} (BENCHMARKS.md, transfer: the KTuberling-trained space chosen "
               "on a held-out corpus; the standard-error rule)")
    log.warning("%s", msg)
    plan.val_warning = {"val_pairs": n, **({"pair": list(pair)} if pair else {}), "threshold": VAL_WARN,
                        "r1_se_max": se, "message": msg}
    return plan.val_warning


def fit_space(
    manifest: str | Path | Manifest | Sequence[str | Path | Manifest],
    modalities: Iterable[str] | None = None,
    *,
    encoders: Mapping[str, str] | None = None,
    method: str = "contrastive",
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    weights: Sequence[float] | None = None,
    allow_eval_only: bool = False,
    recipe: str | None = None,
    config: Any = None,
    select_data: Any = None,
    select_split: str | None = "val",
    **options: Any,
) -> "SpaceCore":
    """``Space.fit`` (see it for the parameters) below the public class: :func:`plan_fit`, then
    :func:`fit_in_memory`."""
    if select_data is None and select_split != "val":  # said, not dropped: it only steers select_data
        raise DataError(f"select_split={select_split!r} says which split of select_data chooses; no select_data "
                        "was given: drop select_split or pass select_data")
    plan = plan_fit(manifest, modalities, encoders=encoders, method=method, recipe=recipe,
                    config=fit_options(config, options, method),
                    strict=strict, progress=progress, allow_eval_only=allow_eval_only)
    return fit_in_memory(plan, cache=cache, weights=weights, progress=progress, select_data=select_data,
                         select_split=select_split)


def fit_in_memory(plan: FitPlan, *, cache: FeatureCache | str | Path | None = None,
                  weights: Sequence[float] | None = None, progress: bool = True,
                  select_data: Any = None, select_split: str | None = "val") -> "SpaceCore":
    """``Space.fit`` after :func:`plan_fit`: encode (through the feature cache), train in memory or fit a
    training-free map, record the lineage.  ``select_data``: manifests whose ``select_split`` records
    replace the val split for every choice made on val (:func:`anybind.featureset.selection_set`)."""
    from .manifests import as_manifests
    from .featureset import encode_selection, selection_records
    from .holdout import hold_out_val
    from .train import FeatureSet

    if weights is not None and plan.method != "contrastive":  # procrustes / cca: every pair alike (not dropped)
        raise DataError(f"weights steer the sampling of trained projectors; method={plan.method!r} fits "
                        "every training pair alike: drop them or use method='contrastive'")
    if select_data is not None and plan.method != "contrastive":  # refused before any record is encoded
        raise DataError(f"select_data chooses epochs and WiSE-FT alphas of trained projectors, not "
                        f"method={plan.method!r}")
    check_before_encoding(plan)  # what the trainer would refuse after encoding, refused before
    plan.holdout = hold_out_val(plan, select_data, lambda p: val_pairs(p)[1])  # no val split: some train held out
    # the val pairs each of the two checks reads, counted once (neither reads them for another method or select_data)
    val = val_pairs(plan) if plan.method == "contrastive" and select_data is None else None
    auto_select_se(plan, select_data, val)  # recipe auto on a small own val: the standard-error rule
    check_val_size(plan, select_data, val=val)  # a val split too small (or none) to choose on: said before encoding
    picked = None  # the selection records, read and checked (split, count) before any record is encoded
    if select_data is not None:
        smans = as_manifests(select_data, plan.modalities, plan.specs, False, progress)
        picked = selection_records(smans, plan.specs, select_split)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    fs = FeatureSet.from_manifests(plan.manifests, plan.specs, fc, progress=progress, weights=weights)
    select = None if picked is None else encode_selection(picked, plan.specs, fc, progress)
    space = fit_features(fs, plan.method, plan.config, progress=progress, select=select)
    if select is not None:
        space.info["training"]["select_data"] = {"data": select.sources, "split": select_split,
                                               "records": len(select.records)}
    return finish_fit(plan, space, "in-memory" if plan.method == "contrastive" else "training-free", fc)


def finish_fit(plan: FitPlan, space: "SpaceCore", trainer: str, cache: FeatureCache) -> "SpaceCore":
    """The end every fit of a plan shares (in memory, streaming, Ray Train, torchrun's rank 0): the lineage entry
    naming ``trainer``, then the calibration on the first of the plan's manifests with a val split (issue 20: match
    probabilities; :func:`anybind.calibration.calibrate_after_fit`, which logs what it fitted; none without a val
    split).  Returns ``space``."""
    from .calibration import calibrate_after_fit

    space.info["lineage"].append(plan.lineage(space, trainer=trainer))
    calibrate_after_fit(space, plan.manifests, cache=cache)
    return space


def fit_features(fs: Any, method: str = "contrastive", config: Any = None, *, progress: bool = True,
                 select: Any = None) -> "SpaceCore":
    """A space fitted on features already encoded (a :class:`~anybind.featureset.FeatureSet`): trained projectors
    (:func:`anybind.train.train_space`, ``config``: a :class:`~anybind.train.TrainConfig` or its fields) or a
    training-free map (:func:`anybind.align.fit_training_free`, ``config``: ``dims``, ``dim``, ``anchor``,
    ``ridge``, ``seed``).  ``select``: the selection set for every choice made on val (contrastive only).

    A building block below the public class: it returns a :class:`~anybind.space_core.SpaceCore` and records no
    lineage.  Users call ``Space.from_features``, which hands out the public :class:`anybind.Space`."""
    from .train import TrainConfig, train_space

    check_method(method)
    if method == "contrastive":
        cfg = config if isinstance(config, TrainConfig) else TrainConfig(**fit_options(config, {}))
        return train_space(fs, cfg, progress=progress, select=select)
    if select is not None:
        raise DataError(f"a selection set chooses epochs and WiSE-FT alphas of trained projectors, not "
                        f"method={method!r}")
    from .align import fit_training_free

    return fit_training_free(fs, method=method, **fit_options(config, {}, method))

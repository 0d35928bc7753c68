"""Continual update of a bound space on new pairs, without forgetting (WiSE-FT with the parent; Mod-X).

A space is not trained once: new pairs arrive.  :func:`update_space` (``Space.update``, CLI ``anybind update``)
fine-tunes the projectors of a saved space on new paired records, starting from where they are (their feature
standardisation kept), with the space's own pairwise objective, at the recipe's gentle rate (``lr=1e-4``), and
keeps the old space in one of these ways:

* ``method="wise"`` (default): WiSE-FT with the parent (Wortsman et al. 2022): the fine-tuned projectors
  (early stopping's epoch) are mixed back with the parent's in weight space, ``(1 - a) x old + a x new``, ``a``
  chosen from :data:`~anybind.robust.WISE_GRID` on the update's val pairs (``wise="auto"``; ties: the smaller
  ``a``, nearer the old space; ``wise=a`` fixes it; :class:`~anybind.robust.RobustFit`, the mechanism
  ``Space.fit``'s recipe mixes with its training-free start).  Chosen on val (issue 19, BENCHMARKS.md, continual,
  Tux Paint -> emoji): the Mod-X term below kept the old domain only by learning less of the new one.  New data
  without val pairs: nothing chooses alpha, the fine-tuned projectors are kept as they are (a warning says so).
* ``method="modx"`` (the default when ``distill`` or ``old_val`` is given): also Mod-X's off-diagonal distillation
  (Ni et al. 2023, "Continual vision-language representation learning with off-diagonal information").  For every
  batch of new pairs the *old* space (frozen) and the new one each score every item against every other; the KL
  divergence between the rows of the two softmax(similarity / temperature) matrices, both directions, is added to
  the loss (weight ``distill``).  The old space's rows are first *screened*: where it ranked a wrong item first,
  that item's score and the true pair's are swapped, so the new space is never taught the old space's mistakes.
  The whole similarity structure (not only the diagonal the contrastive loss sees) stays close to the old space's.
  Mixed back like ``wise`` unless ``wise=None``.
* ``method="naive"``: plain fine-tuning, nothing kept (the baseline; ``wise`` off unless given).

More terms, off by default (tried on val, not taken): ``intra_distill`` (the same KL over each modality's own
batch similarities, image-image and text-text), ``feature_distill`` (the squared distance between the new and the
old unit embeddings of each batch item), ``l2sp`` (L2-SP towards the parent's weights).

No old data is needed; ``replay=`` adds a small buffer of old pairs when the user has one.  Training is
:func:`anybind.loop.fit_loop` (the one loop): batches per modality pair, early stopping on the val pairs of the
data given (the space as it was competes as epoch 0, so an update that helps nothing changes nothing).  The result
is a new :class:`~anybind.space.Space` (the original is not modified) whose lineage ends with an ``update`` entry:
the parent's identity, the data (manifest, fingerprint, records), the replay buffer, the settings, how it trained
and how it was mixed back (``robust``: ``wise_alpha`` and each alpha's val score).  Indexes built with the parent learn they are stale (:mod:`anybind.index.refresh`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import FeatureCache
from .data.manifest import Manifest
from .errors import DataError, SpaceError
from .loop import IndexSampler, fit_loop, make_optimizer, make_temperature, training_threads
from .recipe import FINE_TUNE_LR, check_seed
from .robust import RobustFit, check_robust
from .update_distill import DistillBinder, offdiag_distillation, screen  # noqa: F401 (public here as before)
from .vocabulary import carry_vocabulary
from .wording import counted

if TYPE_CHECKING:
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

METHODS = ("wise", "modx", "naive")
VAL_METRIC = "mean (R@1+R@5+R@10)/3 over pairs, both directions, on the update's val records (replay included)"


@dataclass
class UpdateConfig:
    """How a space is updated (recorded in the lineage entry)."""

    method: str = "wise"  # "wise" | "modx" | "naive" (see the module doc)
    distill: float | str = 1.0  # weight of the off-diagonal distillation term (modx); "auto": chosen on val
    # (update_space: "auto" when held-out old data is given, old_val=, and no weight is)
    distill_tradeoff: float = 0.5  # auto: the choice's score is (1 - t) x new data's val score + t x the old data's
    distill_temperature: float | None = None  # temperature of both similarity distributions (default: the space's)
    screening: bool = True  # correct the old space's wrongly ranked rows before distilling them
    intra_distill: float = 0.0  # weight of the same KL over each modality's own batch similarities (image-image...)
    feature_distill: float = 0.0  # weight of the squared distance between new and old unit embeddings of the batch
    wise: float | str | None = "auto"  # WiSE-FT with the parent: (1 - a) x its projectors + a x the fine-tuned; "auto":
    # a chosen on the update's val pairs from robust.WISE_GRID; None: the fine-tuned projectors as they are (naive's
    # default: naive fine-tuning mixes nothing back unless wise is given)
    l2sp: float = 0.0  # L2-SP: weight x the squared distance of the projectors' weights from the parent's
    epochs: int = 50
    lr: float = FINE_TUNE_LR  # the recipe's gentle rate (3e-4 until issue 19's val study: it forgot twice as much)
    weight_decay: float = 0.0  # decay pulls weights towards zero, away from the old space: off by default
    batch_size: int = 128
    patience: int = 10
    replay_weight: float = 1.0  # sampling weight of each replay manifest relative to the new data
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_seed(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _robust_cfg(cfg: UpdateConfig) -> SimpleNamespace:
    """What :class:`~anybind.robust.RobustFit` reads: WiSE-FT / L2-SP around the parent's projectors (a trained
    start, never a random one); no mixup, no ridge start (so no start guard) in an update."""
    return SimpleNamespace(wise=cfg.wise, l2sp=cfg.l2sp, mixup=0.0, mixup_alpha=1.0, ridge_prior="zero",
                           start_guard=False, kernel_start=False, ridge_span=False, ridge_se=0.0, select_se=0.0,
                           select_se_on="all", init="parent", finetune=True)


def update_config(config: Mapping[str, Any]) -> UpdateConfig:
    """Checked :class:`UpdateConfig` from keyword options (an unknown one is a TypeError naming the known).  A
    ``distill_tradeoff`` beside a fixed weight is refused by :func:`update_space`, which sees whether it was given
    (here its default's value cannot be told from a given 0.5)."""
    known = set(UpdateConfig.__dataclass_fields__)
    bad = sorted(set(config) - known)
    if bad:
        raise TypeError(f"unknown option(s) {bad} for a space update (known: {', '.join(sorted(known))})")
    if "distill" in config and "method" not in config:
        config = {**config, "method": "modx"}  # a distillation weight asks for Mod-X
    if config.get("method") == "naive" and "wise" not in config:
        config = {**config, "wise": None}  # naive fine-tuning, the baseline: nothing mixed back unless asked
    cfg = UpdateConfig(**config)
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if "distill" in config and cfg.method != "modx" and config["distill"] != "auto":  # auto: refused below
        raise ValueError(f"distill={config['distill']!r} weighs Mod-X's term: it needs method='modx', not "
                         f"{cfg.method!r} (nothing would read it)")
    check_robust(_robust_cfg(cfg))  # wise / l2sp: one line when bad
    if not 0.0 <= cfg.distill_tradeoff <= 1.0:
        raise ValueError(f"distill_tradeoff must be in [0, 1] (0: only the new data's val score counts, 1: only the "
                         f"old data's), got {cfg.distill_tradeoff!r}")
    if isinstance(cfg.distill, str):
        if cfg.distill != "auto":
            raise ValueError(f"distill must be a number >= 0 or 'auto', got {cfg.distill!r}")
        if cfg.method != "modx":
            raise ValueError("distill='auto' chooses Mod-X's distillation weight: it needs method='modx'")
        return cfg
    if min(cfg.distill, cfg.intra_distill, cfg.feature_distill, cfg.epochs) < 0 or cfg.batch_size < 2 \
            or cfg.replay_weight <= 0:
        raise ValueError(f"distill, intra_distill, feature_distill and epochs must be >= 0, batch_size >= 2 and "
                         f"replay_weight > 0, got distill={cfg.distill!r}, intra_distill={cfg.intra_distill!r}, "
                         f"feature_distill={cfg.feature_distill!r}, epochs={cfg.epochs!r}, "
                         f"batch_size={cfg.batch_size!r}, replay_weight={cfg.replay_weight!r}")
    return cfg


# ----------------------------------------------------------------------------- the update
def update_space(
    space: "SpaceCore",
    data: str | Path | Manifest | Sequence[str | Path | Manifest],
    *,
    replay: str | Path | Manifest | Sequence[str | Path | Manifest] | None = None,
    old_val: str | Path | Manifest | Sequence[str | Path | Manifest] | None = None,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    **config: Any,
) -> "SpaceCore":
    """A new Space: ``space`` fine-tuned on the pairs of ``data`` (see the module doc); ``space`` is not modified.

    ``replay``: manifest(s) of old pairs trained on alongside (sampling weight ``replay_weight``);
    ``**config``: :class:`UpdateConfig` fields (``method``, ``distill``, ``epochs``, ``lr``, ``seed``...).
    ``distill="auto"``: Mod-X's weight is chosen from :data:`DISTILL_GRID` by ``(1 - distill_tradeoff)`` x the
    val score on the new data's val pairs + ``distill_tradeoff`` x the score on the old data's (``old_val`` and
    ``replay`` manifests' val splits): what the old space could do and what the new data asks, weighed equally by
    default (:func:`choose_distill`).  ``old_val`` given and no ``distill``: ``"auto"``; no ``old_val`` and no
    ``distill``: the default weight (1.0).  ``old_val`` with a fixed weight (or ``method="naive"``) is refused:
    nothing would read it.
    """
    if old_val is not None and "distill" not in config and config.get("method", "modx") == "modx":
        config = {"method": "modx", **config, "distill": "auto"}  # held-out old data: Mod-X's weight chosen on val
    if "distill_tradeoff" in config and config.get("distill") != "auto":  # at any value: 0.5 is no default here
        update_config(config)  # a bad option is named first
        raise ValueError(f"distill_tradeoff={config['distill_tradeoff']} weighs the choice of distill='auto' (give "
                         f"old_val=, --old-val), but distill is {config.get('distill', 1.0)!r}: nothing would read it")
    if old_val is not None and config.get("distill") != "auto":
        update_config(config)  # a bad option is named first
        raise ValueError(f"old_val is read only to choose Mod-X's weight on val (distill='auto', method='modx'), "
                         f"but distill is {config.get('distill', 1.0)!r} and method {config.get('method', 'modx')!r}: "
                         "drop old_val or the fixed weight")
    if config.get("distill") == "auto":
        update_config(config)  # the other options are checked before any training
        return choose_distill(space, data, replay=replay, old_val=old_val, cache=cache, strict=strict,
                              progress=progress, **config)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    out = _update_once(space, data, replay=replay, cache=fc, strict=strict, progress=progress, **config)
    return carry_vocabulary(space, out, cache=fc, progress=progress)  # embedded again if the text projector moved


def _update_once(space: "SpaceCore", data, *, replay, cache: FeatureCache, strict: bool, progress: bool,
                 **config: Any) -> "SpaceCore":
    """One update with one weight (no vocabulary carried: :func:`update_space` and :func:`choose_distill` carry
    it onto the space they return, not onto every candidate)."""
    from .losses import build_loss, is_multimodal
    from .manifests import as_manifests
    from .train import FeatureSet, featureset_batches, val_score
    from .version import __version__

    t0 = time.perf_counter()
    cfg = update_config(config)
    if space.scorer.kind != "cosine":
        raise SpaceError("a Symile (multilinear) space cannot be updated yet: update supports pairwise-objective spaces")
    loss_fn = build_loss(str(space.config.get("loss", "infonce")),
                         label_smoothing=float(space.config.get("label_smoothing", 0.0)))
    if is_multimodal(loss_fn):
        raise SpaceError(f"the space's objective {space.config.get('loss')!r} is multimodal: update needs a pairwise one")
    fc = cache
    bound = space.modalities
    new_mans = as_manifests(_listed(data), bound, space.encoders, strict, progress)
    old_mans = as_manifests(_listed(replay), bound, space.encoders, strict, progress)
    where = ", ".join(str(m.path) for m in new_mans)
    present = sorted({m for man in new_mans + old_mans for r in man.records for m in r.values} & set(bound))
    for m in present:
        space.encoder(m)  # the encoder must be the one the space was trained with
    weights = [1.0] * len(new_mans) + [cfg.replay_weight] * len(old_mans)
    fs = FeatureSet.from_manifests(new_mans + old_mans, {m: space.encoders[m] for m in present}, fc,
                                   progress=progress, weights=weights)
    train_idx, val_idx = fs.split_idx("train"), fs.split_idx("val")
    trainable = {m for m in present if space.projectors[m].cfg.kind != "identity"}
    pairs = [(a, b) for a, b in itertools.combinations(present, 2)
             if (a in trainable or b in trainable) and len(fs.with_pair(train_idx, a, b)) >= 2]
    if not pairs:
        raise DataError(f"{where}: no two bound modalities ({', '.join(bound)}) occur together in 2 or more "
                        "training records (check the fields and the 'split' values): nothing to update on")

    with training_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        projectors = {m: copy.deepcopy(p) for m, p in space.projectors.items()}
        old = {m: copy.deepcopy(p).eval().requires_grad_(False) for m, p in space.projectors.items()}
        logit_scale = make_temperature(space.temperature, bool(space.config.get("learn_temperature", True)))
        params = [p for m in sorted(trainable) for p in projectors[m].parameters()]
        opt = make_optimizer(params, logit_scale, loss_fn.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sampler = IndexSampler({}, cfg.batch_size, rng)
        for p in pairs:
            mem = fs.with_pair(train_idx, *p)
            w = fs.weights[fs.corpus[mem]]
            sampler.add(p, mem, w / w.sum() if old_mans else None)
        weight = cfg.distill if cfg.method == "modx" else 0.0  # the Mod-X term is modx's own
        tau = cfg.distill_temperature or space.temperature
        model = DistillBinder({m: projectors[m] for m in present}, old, logit_scale, loss_fn, weight=weight,
                              temperature=tau, screening=cfg.screening, intra=cfg.intra_distill,
                              feature=cfg.feature_distill)
        feats_t = {m: torch.from_numpy(fs.feats[m]) for m in present}
        use_val = any(len(fs.with_pair(val_idx, *p)) >= 2 for p in pairs)
        if not use_val and cfg.wise == "auto" and cfg.epochs > 0:
            log.warning("%s: no val pairs, so neither WiSE-FT's alpha (wise='auto') nor an epoch can be chosen: the "
                        "projectors fine-tuned for %s are kept, not mixed back (naive fine-tuning); give "
                        "the data val records or a fixed wise=<alpha in [0, 1]>", where, counted(cfg.epochs, "epoch"))
        rob = RobustFit(_robust_cfg(cfg), {m: projectors[m] for m in present}, logit_scale)  # start: the parent's

        def score(epoch: int) -> float:
            return val_score(projectors, fs, val_idx, pairs)

        res = fit_loop(model, featureset_batches(fs, feats_t, pairs, sampler), opt, logit_scale,
                       epochs=cfg.epochs, steps=sampler.steps(pairs), use_val=use_val, patience=cfg.patience,
                       score=score, keep={"projectors": model.projectors}, start=True, penalty=rob.penalty,
                       on_epoch=rob.on_epoch, progress=progress, label=f"updating ({cfg.method})")
        final_logit, rob_rec = rob.finish(res.logit_scale, (lambda: score(1)) if use_val else None)
    for p in projectors.values():
        p.eval()
    info = copy.deepcopy(space.info)
    info.setdefault("lineage", []).append({
        "event": "update",
        "method": cfg.method,
        "parent": space.identity(),
        "modalities": present,
        "pairs": {f"{a}-{b}": {"train": int(len(fs.with_pair(train_idx, a, b))),
                               "val": int(len(fs.with_pair(val_idx, a, b)))} for a, b in pairs},
        "data": _describe(new_mans, present),
        "replay": _describe(old_mans, present),
        "config": _used(cfg, tau),
        "training": {**res.record(VAL_METRIC), "seconds": round(time.perf_counter() - t0, 2)},
        "robust": rob_rec,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "anybind": __version__,
    })
    alpha = rob_rec.get("wise_alpha")
    if (res.best_epoch == 0 and cfg.wise is None) or alpha == 0:
        log.info("update: %s: the projectors are unchanged (the parent's)", "no epoch beat the space as it was on "
                 "the val pairs" if alpha is None else "mixed back at alpha 0.0")
    log.info("update: method %r at lr %g%s", cfg.method, cfg.lr, "" if alpha is None else
             f", mixed back with the parent at alpha {alpha} (wise={cfg.wise!r})")
    return space.derived(space.encoders, projectors, final_logit, identities=space.identities,
                         config=copy.deepcopy(space.config), info=info, format_version=space.format_version)


DISTILL_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
DISTILL_METRIC = ("(1 - tradeoff) x the new data's val score + tradeoff x the old data's, each (R@1+R@5+R@10)/3 "
                  "over pairs, both directions")


def choose_distill(space: "SpaceCore", data, *, replay=None, old_val=None, cache=None, strict: bool = False,
                   progress: bool = False, **config: Any) -> "SpaceCore":
    """:func:`update_space` with every weight of :data:`DISTILL_GRID`; the one whose update scores best on val
    (:data:`DISTILL_METRIC`, ``tradeoff``: ``distill_tradeoff``; ties: the smaller weight) is returned, its
    lineage entry recording the search.  Deterministic (each candidate trains with the same seed); only val
    records of ``old_val`` / ``replay`` and of ``data`` are scored; no val records in either: one-line DataError."""
    from .manifests import as_manifests

    olds = _listed(old_val) + _listed(replay)
    if not olds:
        raise DataError("distill='auto' chooses the weight on val pairs of the old data as well as the new: give the "
                        "old data's manifest (old_val=, --old-val) or a replay buffer with a val split")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    new_mans = as_manifests(_listed(data), space.modalities, space.encoders, strict, progress)
    old_mans = as_manifests(olds, space.modalities, space.encoders, strict, progress)
    for name, mans in (("new data", new_mans), ("old data", old_mans)):
        if not any(r.split == "val" for m in mans for r in m.records):
            raise DataError(f"{', '.join(str(m.path) for m in mans)}: the {name} has no val records to choose "
                            "distill='auto' on")
    t = update_config({**config, "distill": "auto"}).distill_tradeoff
    best, scores = None, {}
    for w in DISTILL_GRID:
        cand = _update_once(space, new_mans, replay=replay, cache=fc, strict=strict, progress=progress,
                            **{**config, "distill": w})  # each trained alike; t chooses among them
        new, old = _val_score(cand, new_mans, fc), _val_score(cand, old_mans, fc)
        scores[str(w)] = {"new": new, "old": old, "score": (1 - t) * new + t * old if 0 < t < 1 else old if t else new}
        log.info("update: distill %g: val new %.3f old %.3f", w, new, old)
        score = scores[str(w)]["score"]
        if score == score and (best is None or score > best[0] + 1e-9):  # a NaN score (no scorable pair) never wins
            best = (score, w, cand)
    if best is None:
        raise DataError("distill='auto': no weight could be scored on the val pairs of the old and the new data "
                        "(every score is NaN: do their val records pair the space's modalities?)")
    chosen = best[2]
    chosen.info["lineage"][-1]["distill_search"] = {"grid": list(DISTILL_GRID), "chosen": best[1], "scores": scores,
                                                    "tradeoff": t, "metric": DISTILL_METRIC}
    return carry_vocabulary(space, chosen, cache=fc, progress=progress)  # onto the chosen space only


def _val_score(space: "SpaceCore", mans: Sequence[Manifest], cache: FeatureCache) -> float:
    from .evaluate import embed_records
    from .metrics import retrieval_from_embeddings

    records = [r for m in mans for r in m.split("val")]
    mods = sorted({m for r in records for m in r.values} & set(space.modalities))
    res = retrieval_from_embeddings(embed_records(space, records, mods, cache=cache), scorer=space.scorer)
    vals = [(res[f"{d}/R@1"] + res[f"{d}/R@5"] + res[f"{d}/R@10"]) / 3
            for d in sorted({k.rsplit("/", 1)[0] for k in res if k.endswith("/R@1")})]
    return float(np.mean(vals)) if vals else float("nan")


def _used(cfg: UpdateConfig, tau: float) -> dict[str, Any]:
    """The lineage's settings: only what the method reads (Mod-X's weight, tradeoff and screening only for modx;
    the similarities' temperature for modx or intra_distill)."""
    out = {**cfg.to_dict(), "distill_temperature": tau}
    drop = {"distill", "distill_tradeoff", "screening"} if cfg.method != "modx" else set()
    if cfg.method != "modx" and cfg.intra_distill <= 0:
        drop.add("distill_temperature")
    return {k: v for k, v in out.items() if k not in drop}


def _listed(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def _describe(mans: Sequence[Manifest], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """The lineage's account of the manifests an update read."""
    return [{"manifest": str(m.path), "fingerprint": m.fingerprint(modalities), "records": len(m.records)} for m in mans]

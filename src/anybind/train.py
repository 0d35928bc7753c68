"""Training projectors on cached features.

Features are encoded once (through the :class:`~anybind.cache.FeatureCache`)
and training only ever touches them, so an epoch over thousands of pairs
takes milliseconds.  Every modality pair present in the data is trained with
its own batches drawn from the records that have both modalities: a record
missing a modality still serves the pairs it has, and a rare modality (sound)
still sees full batches of negatives.  The model is :class:`~anybind.binders.PairBinder`
(or :class:`~anybind.binders.MultiBinder` for Symile) trained by :func:`anybind.loop.fit_loop`,
the loop progressive binding and the streaming / Ray trainers share.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .encoders.video import temporal_frames
from .binders import MultiBinder, PairBinder, missing_embeddings
from .binders import pair_terms  # noqa: F401  (re-exported: it was defined here)
from .featureset import FeatureSet, featureset_pairs, selection_set  # noqa: F401  (FeatureSet re-exported: it was defined here)
from .attention import attention_start, check_attention
from .epochs import describe_se_rule
from .errors import DataError
from .loop import IndexSampler, fit_loop, make_optimizer, make_temperature, training_threads
from .losses import MissingPlaceholders, build_loss, is_multimodal
from .metrics import pair_recalls, query_ranks
from .projectors import Projector, ProjectorConfig, attention_parameters, project
from .recipe import AUTO, Auto, check_counts, check_flags, check_seed, resolved
from .scoring import Scorer
from . import robust

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a trained space (saved in ``space.json``).

    The fields the recipe chooses (:data:`anybind.recipe.PLAIN`: ``dim``, ``lr``, ``init``, ``lock``, ``wise``,
    ``ridge_prior``, ``start_guard``, ``kernel_start``, ``bridge_anchors``, ``base_gate``, ``select_se``, ``finetune``, ``val_holdout``) default to :data:`~anybind.recipe.AUTO`, "the recipe decides": with
    ``Space.fit(config=...)`` any value given, even the plain default or None, is the user's choice and wins over
    ``recipe="auto"``.  Every trainer first takes :meth:`resolved` (AUTO -> the plain default, the value in the
    comments below), so what is trained and saved is never AUTO."""

    dim: int | Auto = AUTO  # 256
    projector: str = "mlp"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    standardize: bool = True
    loss: str = "infonce"  # spec, e.g. "infonce+uniformity:0.1+intra:0.5", "siglip", "symile-n2" (see anybind.losses)
    missing: str = "learned"  # multimodal losses (Symile): "learned" | "mean" placeholder for a missing modality
    label_smoothing: float = 0.0
    temperature: float = 0.05  # initial; learnt unless learn_temperature=False
    learn_temperature: bool = True
    batch_size: int = 128
    epochs: int = 200
    lr: float | Auto = AUTO  # 1e-3
    weight_decay: float = 0.05
    patience: int = 25  # epochs without val improvement before stopping (no val split: every epoch runs)
    seed: int = 0
    pairs: list[list[str]] | None = None  # default: every pair of bound modalities
    feature_noise: float = 0.0  # gaussian noise on standardised inputs during training
    init: str | Auto = AUTO  # "random" | "procrustes" | "cca" | "ridge": start from a training-free alignment
    lock: str | None | Auto = AUTO  # None | a modality whose encoder space *is* the shared space (identity projector)
    # robust fine-tuning (anybind.robust): WiSE-FT with the training-free start ("auto": alpha on val | alpha),
    # L2-SP towards it, what the ridge start shrinks towards ("zero" | "bridge"), inductive centring
    wise: str | float | None | Auto = AUTO  # None
    l2sp: float = 0.0
    ridge_prior: str | Auto = AUTO  # "zero"
    start_guard: bool | Auto = AUTO  # False; ridge_prior="bridge": keep the label bridge itself as the start when
    # the ridge does not beat it on val (anybind.robust); the recipe turns it on
    kernel_start: bool | Auto = AUTO  # False; ridge_prior="bridge": also fit a kernel branch on the bridge's residual,
    # kept where it beats the linear start on val (anybind.ridge_kernel); the recipe turns it on with the bridge prior
    bridge_anchors: float | Auto = AUTO  # 0.0; ridge_prior="bridge": the label bridge's 1000 class anchors (its
    # reading of each ImageNet class paired with the locked text of the class prompt) in the ridge start, with this
    # weight x the training pairs (anybind.bridge_start); the recipe sets ANCHOR_WEIGHT with the bridge prior
    base_gate: float | Auto = AUTO  # 0.0; ridge_prior="bridge": a linear start's base-encoder correction faded below
    # this quantile of own val's nearness to the training inputs (anybind.base_gate); the recipe sets BASE_GATE
    ridge_span: bool = False  # ridge_prior="bridge": restrict the ridge start and its kernel branch to the span of
    # the training targets, keeping the prior's output outside it (anybind.ridge.locked_ridge_start's span; issue 16)
    ridge_se: float = 0.0  # the ridge start's standard-error rule: the most shrunk alpha within this many SE of the
    # best on val (0: the best; anybind.ridge.ridge_select)
    select_se: float | Auto = AUTO  # 0.0; the standard-error rule over every choice on val (start guard, ridge alpha
    # unless ridge_se > 0, kernel keep, epoch, WiSE-FT alpha): the one nearest the start within this many SE of the
    # best; recipe auto sets 1 where the fit chooses on its own val of fewer than VAL_WARN pairs (anybind.fitting)
    finetune: bool | Auto = AUTO  # True; False: keep the training-free start (no fine-tuning epochs, no WiSE-FT
    # mix; the start's own choices on val still made): recipe auto sets it where it sets select_se=1 (anybind.fitting)
    val_holdout: float | Auto = AUTO  # 0.0; where the data has no val split (fewer than 2 val pairs), this share of
    # the training records (by a hash of their ids) is held out as val for every choice on val; recipe auto sets
    # HOLDOUT for a fit from a ridge start (anybind.holdout)
    select_se_on: str = "all"  # "finetune": the rule on the epoch and WiSE-FT alpha only, the start's choices as at 0
    center: bool = False
    mixup: float = 0.0  # weight of the geodesic multi-modal mixup term (m^2-mix hard negatives; 0: off)
    mixup_alpha: float = 0.5  # its mixing coefficient ~ Beta(mixup_alpha, mixup_alpha)
    # a frame-pooling (pool=attn video) projector's attention scorer: its learning rate (None: lr) and the
    # epochs it first trains alone on top of a frozen warm start (0: none), see attention_phase
    attn_lr: float | None = 3e-3
    attn_epochs: int = 30
    threads: int = 1  # torch threads while training: small projectors gain nothing from more,
    # and a busy machine makes multi-threaded OpenMP spin (5x slower measured on 2 shared cores)

    def __post_init__(self) -> None:
        check_flags(self, {"standardize": (), "learn_temperature": (), "start_guard": (AUTO,), "kernel_start": (AUTO,),
                           "center": (), "ridge_span": (), "finetune": (AUTO,)})
        check_seed(self)
        check_counts(self, {"epochs": 0})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """This config with every field left at AUTO at its plain default (itself when none is)."""
        return resolved(self)


def choose_pairs(
    cfg: TrainConfig, modalities: Sequence[str], train_count: Callable[[str, str], int]
) -> list[tuple[str, str]]:
    """The modality pairs trained: ``cfg.pairs`` (checked against ``modalities``), else every pair with
    at least 2 training records (``train_count(a, b)``).  Shared by the in-memory and streaming trainers."""
    if cfg.pairs:
        out = []
        for p in cfg.pairs:
            if len(p) != 2 or any(m not in modalities for m in p):
                raise DataError(f"bad pair {p}: both must be bound modalities ({list(modalities)})")
            out.append((p[0], p[1]))
        return out
    return pairs_with_training(modalities, train_count)


def pairs_with_training(modalities: Sequence[str], train_count: Callable[[str, str], int]) -> list[tuple[str, str]]:
    """The modality pairs with at least 2 training records (``train_count(a, b)``): the pairs trained where
    ``TrainConfig.pairs`` names none (:func:`choose_pairs`; :func:`anybind.fitting.val_pairs` on manifests)."""
    return [(a, b) for a, b in itertools.combinations(modalities, 2) if train_count(a, b) >= 2]


VAL_METRIC = "mean (R@1+R@5+R@10)/3 over pairs, both directions"


def val_score(
    projectors: Mapping[str, Projector], fs: FeatureSet, idx: np.ndarray, pairs, scorer: Scorer | None = None,
    items: bool = False,
) -> float | np.ndarray:
    """Mean of (R@1 + R@5 + R@10)/3 over every pair, both directions (the early-stopping score).  ``items``: the
    per-record scores instead (each val record of each modality pair: its hits at 1, 5, 10, both directions, mean),
    for the standard-error rule (``TrainConfig.select_se``); NaN (one item) without any.

    ``scorer`` (multimodal objectives): the space's :class:`~anybind.scoring.Scorer` with the learnt "missing"
    embeddings; pairs are then scored as the space scores them, by the multilinear inner product
    ``MIP(a, b, missing...)`` (``None``: cosine).
    """
    scores = []
    with torch.no_grad():
        for a, b in pairs:
            if a not in fs.rows or b not in fs.rows:  # a selection set without this pair
                continue
            sel = fs.with_pair(idx, a, b)
            if len(sel) < 2:
                continue
            ea = F.normalize(project(projectors[a], fs.get(a, sel)), dim=-1).numpy()
            eb = F.normalize(project(projectors[b], fs.get(b, sel)), dim=-1).numpy()
            qa, qb = (ea, eb) if scorer is None else (scorer.weigh(ea, a, b), scorer.weigh(eb, b, a))
            fa, fb = fs.get(a, sel), fs.get(b, sel)  # frozen inputs: identical content, identical rows
            if items:
                ranks = [query_ranks(q @ g.T, query_keys=kq, gallery_keys=kg)
                         for q, g, kq, kg in ((qa, eb, fa, fb), (qb, ea, fb, fa))]
                scores.append(sum((r <= k).astype(np.float64) for r in ranks for k in (1, 5, 10)) / 6)
                continue
            for q, g, kq, kg in ((qa, eb, fa, fb), (qb, ea, fb, fa)):
                r = pair_recalls(q, g, query_keys=kq, gallery_keys=kg)
                scores.append((r["R@1"] + r["R@5"] + r["R@10"]) / 3)
    if items:
        return np.concatenate(scores) if scores else np.array([np.nan])
    return float(np.mean(scores)) if scores else float("nan")


def warm_start(projectors: Mapping[str, Projector], fs: FeatureSet, cfg: TrainConfig,
               select: FeatureSet | None = None) -> dict[str, Any] | None:
    """Start every projector at a training-free alignment (Procrustes or CCA, dim chosen on val).

    The linear path gets the training-free map (zero-padded to the space width)
    and the MLP's output layer starts at zero, so epoch 0 *is* the
    training-free space and training can only move away from it where the
    validation score says so.  ``init="ridge"``: :func:`ridge_start` (returns its record; its shrinkage chosen
    on ``select``'s val records when given).
    """
    from .align import fit_training_free

    cfg = cfg.resolved()  # called on its own with a config left at AUTO: the plain defaults, as train_space
    if cfg.init == "ridge":
        return ridge_start(projectors, fs, cfg, select)
    if cfg.init not in ("procrustes", "cca"):
        raise DataError(f"init must be 'random', 'ridge', 'procrustes' or 'cca', got {cfg.init!r}")
    if cfg.lock:
        raise DataError("with a locked modality use init='ridge' (procrustes/cca build their own subspace)")
    if temporal := [m for m, pr in projectors.items() if pr.cfg.frames]:  # a pool=attn video spec
        raise DataError(f"init={cfg.init!r} cannot start the frame-pooling projector of {', '.join(temporal)}; "
                        "use init='ridge' or 'random'")
    dims = [d for d in (16, 32, 64, 128, 256, 512) if d <= cfg.dim] or [cfg.dim]
    tf = fit_training_free(fs, method=cfg.init, dims=dims, seed=cfg.seed)
    with torch.no_grad():
        for m, pr in projectors.items():
            src = tf.projectors[m]
            k = src.cfg.out_dim
            pr.mean.copy_(src.mean)
            pr.scale.copy_(src.scale)
            pr.linear.weight.zero_()
            pr.linear.weight[:k].copy_(src.linear.weight)
            pr.linear.bias.zero_()
            if pr.mlp is not None:
                pr.mlp[-1].weight.zero_()
                pr.mlp[-1].bias.zero_()
    return None


def ridge_start(projectors: Mapping[str, Projector], fs: FeatureSet, cfg: TrainConfig,
                select: FeatureSet | None = None) -> dict[str, Any]:
    """Start every unlocked projector at the ridge regression onto the locked modality's space
    (:func:`anybind.ridge.locked_ridge_start` over the training pairs, shrinkage chosen on the val pairs,
    shrunk towards ``cfg.ridge_prior``: :func:`anybind.robust.ridge_start`); each modality's alpha and prior."""
    return robust.ridge_start(projectors, cfg, fs.specs, featureset_pairs(fs, "train", cfg.lock),
                              featureset_pairs(select or fs, "val", cfg.lock),
                              own_val=None if select is None else featureset_pairs(fs, "val", cfg.lock))  # the gate's


def train_space(fs: FeatureSet, cfg: TrainConfig, *, progress: bool = True, select: FeatureSet | None = None):
    """Train one projector per modality with the configured objective; early stopping on val.

    ``select`` (:func:`~anybind.featureset.selection_set`): the val records every choice on val is made on
    (epoch, WiSE-FT alpha, ridge shrinkage) instead of ``fs``'s own, e.g. another corpus'.

    A building block below the public class: it returns a :class:`~anybind.space_core.SpaceCore`.  Users call
    ``Space.from_features(fs, cfg)`` (or ``Space.fit``), which hands out the public :class:`anybind.Space`."""
    robust.check_select_se_on(cfg)  # before resolving: a select_se the user gave 0 is not the recipe's
    cfg = cfg.resolved()  # what the recipe left open: the plain defaults
    with training_threads(cfg.threads):
        return _train_space(fs, cfg, progress=progress, select=select)


def _train_space(fs: FeatureSet, cfg: TrainConfig, *, progress: bool = True, select: FeatureSet | None = None):
    from .space_core import SpaceCore

    check_attention(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vfs = select if select is not None else fs  # where every choice on val is made
    train_idx, val_idx = fs.split_idx("train"), vfs.split_idx("val")
    if len(train_idx) < 2:
        raise DataError(f"need at least 2 training records, found {len(train_idx)} (check the 'split' fields)")
    pairs = choose_pairs(cfg, fs.modalities, lambda a, b: len(fs.with_pair(train_idx, a, b)))
    if cfg.lock is not None and cfg.lock not in fs.feats:
        raise DataError(f"lock={cfg.lock!r} is not a bound modality ({', '.join(fs.modalities)})")
    if not pairs:
        raise DataError("no two modalities occur together in the training records: nothing to align")
    projectors: dict[str, Projector] = {}
    for m in fs.modalities:
        out_dim = fs.feats[cfg.lock].shape[1] if cfg.lock else cfg.dim
        pc = ProjectorConfig(
            in_dim=fs.feats[m].shape[1],
            out_dim=out_dim,
            kind="identity" if m == cfg.lock else cfg.projector,
            hidden=cfg.hidden,
            dropout=cfg.dropout,
            input_dropout=cfg.input_dropout,
            standardize=cfg.standardize,
            frames=temporal_frames(fs.specs.get(m, "")),
        )
        tr = train_idx[fs.rows[m][train_idx] >= 0]
        projectors[m] = Projector(pc).fit_stats(fs.feats[m][fs.rows[m][tr]] if len(tr) else fs.feats[m], m)
    ridge = warm_start(projectors, fs, cfg, select) if cfg.init != "random" else None
    logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
    loss_fn = robust.with_mixup(build_loss(cfg.loss, label_smoothing=cfg.label_smoothing), cfg)
    multimodal = is_multimodal(loss_fn)
    if cfg.missing not in ("learned", "mean"):
        raise ValueError(f"missing must be 'learned' or 'mean', got {cfg.missing!r}")
    placeholders = MissingPlaceholders({m: fs.feats[m].shape[1] for m in fs.modalities}, learn=cfg.missing == "learned")

    def add(key, mem: np.ndarray) -> None:  # with per-corpus sampling weights, if any
        w = fs.weights[fs.corpus[mem]]
        sampler.add(key, mem, w / w.sum() if len(fs.weights) > 1 else None)

    sampler = IndexSampler({}, cfg.batch_size, rng)
    for p in pairs:
        add(p, fs.with_pair(train_idx, *p))
    mods_multi: list[str] = sorted({m for p in pairs for m in p})
    if multimodal:  # one batch of every record with >= 2 of the modalities (with 2 modalities: the pair's key)
        have = np.stack([fs.rows[m][train_idx] >= 0 for m in mods_multi], 1)
        add(tuple(mods_multi), train_idx[have.sum(1) >= 2])
    feats_t = {m: torch.from_numpy(fs.feats[m]) for m in fs.modalities}
    model: torch.nn.Module
    if multimodal:
        model = MultiBinder(projectors, placeholders, logit_scale, loss_fn, mods_multi, feats_t, fs.rows,
                            noise=cfg.feature_noise)
        batches: Iterator = (sampler.next(tuple(mods_multi)) for _ in itertools.count())
        steps = sampler.steps([tuple(mods_multi)])
    else:
        model = PairBinder(projectors, logit_scale, loss_fn, noise=cfg.feature_noise)
        batches = featureset_batches(fs, feats_t, pairs, sampler)
        steps = sampler.steps(pairs)

    def score(epoch: int, items: bool = False) -> float | np.ndarray:
        # a multimodal space is scored by the multilinear product with the learnt missing embeddings (the warm
        # start, epoch 0, by cosine); items: per-record scores (the standard-error rule's)
        scorer = None
        if multimodal and epoch > 0:
            scorer = Scorer(missing_embeddings(projectors, placeholders, mods_multi))
        return val_score(projectors, vfs, val_idx, pairs, scorer, items)

    per_item = (lambda epoch: score(epoch, True)) if cfg.select_se > 0 else score

    use_val = len(val_idx) >= 2 and any(len(vfs.with_pair(val_idx, *p)) >= 2
                                        for p in pairs if set(p) <= set(vfs.feats))
    ft = robust.loop_config(cfg)  # finetune=False: epochs=0, the start itself is what is kept
    phase = attention_start(projectors, model, batches, steps, logit_scale, ft, use_val=use_val, score=score,
                            refit=lambda: warm_start(projectors, fs, cfg, select), progress=progress)
    ridge = (phase or {}).get("ridge") or ridge  # the start fine-tuning leaves
    rob = robust.RobustFit(cfg, projectors, logit_scale)  # WiSE-FT / L2-SP around the loop (from here)
    opt = make_optimizer([p for pr in projectors.values() for p in pr.parameters()], logit_scale,
                         list(loss_fn.parameters()) + list(placeholders.parameters()),
                         lr=cfg.lr, weight_decay=cfg.weight_decay, own_lr=cfg.attn_lr,
                         own_rate=attention_parameters(projectors))
    res = fit_loop(model, batches, opt, logit_scale, epochs=ft.epochs, steps=steps, use_val=use_val,
                   patience=cfg.patience, score=per_item, start=cfg.init != "random", progress=progress,
                   keep={"projectors": model.projectors, "placeholders": placeholders},
                   penalty=rob.penalty, on_epoch=rob.on_epoch, select_se=cfg.select_se)
    rob.keep(res)  # select_se: WiSE-FT's endpoint is the epoch the rule kept
    final_logit, rob_rec = rob.finish(res.logit_scale, (lambda: per_item(1)) if use_val else None)
    if ridge:
        rob_rec["ridge"] = ridge
    if cfg.select_se > 0:  # what the standard-error rule chose, said in one line (the lineage holds each record)
        log.info("select_se=%g: %s", cfg.select_se, describe_se_rule(ridge, res.se_rule, rob_rec.get("wise_se_rule")))
    if phase is not None:
        rob_rec["attention_phase"] = phase
    if cfg.center:  # inductive: the training split's mean embeddings, stored in the projectors
        rob_rec["center_norms"] = robust.center_projectors(
            projectors, {m: fs.get(m, train_idx[fs.rows[m][train_idx] >= 0]) for m in fs.modalities})
        if use_val:  # after every choice on val (it may score lower than what was chosen): the space's own score
            rob_rec["center_val"] = score(1)
    space = SpaceCore(
        fs.specs,
        projectors,
        final_logit,
        identities=fs.identities,
        config={"method": "contrastive", **cfg.to_dict()},
    )
    space.info["metrics"]["val/score"] = rob_rec.get("center_val", rob_rec.get("wise_val_chosen", res.best_val))
    space.info["training"] = {
        **res.record(VAL_METRIC),
        "pairs": [list(p) for p in pairs],
        "train_records": int(len(train_idx)),
        "val_records": int(len(val_idx)),
        **({"selected_on": vfs.sources} if select is not None else {}),
        "corpora": fs.sources,
        "corpus_weights": fs.weights.tolist(),
        "loss": repr(loss_fn) if hasattr(loss_fn, "names") else cfg.loss,
        "robust": rob_rec,
    }
    if multimodal:  # what a missing modality looks like in the space, for multilinear (MIP) scoring
        emb = missing_embeddings(projectors, placeholders, mods_multi)
        space.info["scoring"] = "mip"
        space.info["missing_embeddings"] = {m: [round(float(v), 7) for v in e] for m, e in emb.items()}
    scalars = {k: float(v.detach()) for k, v in loss_fn.named_parameters() if v.numel() == 1}
    if scalars:  # e.g. SigLIP's learnt bias (the value at the end of training)
        space.info["training"]["loss_parameters"] = scalars
    return space


def featureset_batches(fs: FeatureSet, feats_t: Mapping[str, torch.Tensor], pairs, sampler: IndexSampler):
    """Endless in-memory batches for :class:`~anybind.binders.PairBinder`: ``{(a, b): (xa, xb)}``, one per pair."""
    while True:
        batch = {}
        for a, b in pairs:
            idx = sampler.next((a, b))
            batch[(a, b)] = (feats_t[a][fs.rows[a][idx]], feats_t[b][fs.rows[b][idx]])
        yield batch


"""Training projectors on cached features.

Features are encoded once (through the :class:`~anybind.cache.FeatureCache`)
and training only ever touches them, so an epoch over thousands of pairs
takes milliseconds.  Every modality pair present in the data is trained with
its own batches drawn from the records that have both modalities: a record
missing a modality still serves the pairs it has, and a rare modality (sound)
still sees full batches of negatives.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cache import FeatureCache
from .data.manifest import BadRecord, Manifest, Record
from .encoders.registry import get_encoder
from .epochs import EpochSelection, selection_record
from .errors import DataError
from .metrics import pair_recalls
from .losses import MissingPlaceholders, build_loss, is_multimodal
from .numerics import flush_denormals
from .projectors import Projector, ProjectorConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a trained space (saved in ``space.json``)."""

    dim: int = 256
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
    lr: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 25  # epochs without val improvement before stopping (no val split: every epoch runs)
    seed: int = 0
    pairs: list[list[str]] | None = None  # default: every pair of bound modalities
    feature_noise: float = 0.0  # gaussian noise on standardised inputs during training
    init: str = "random"  # "random" | "procrustes" | "cca": start from a training-free alignment
    lock: str | None = None  # a modality whose encoder space *is* the shared space (identity projector)
    threads: int = 1  # torch threads while training: small projectors gain nothing from more,
    # and a busy machine makes multi-threaded OpenMP spin (5x slower measured on 2 shared cores)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FeatureSet:
    """Cached encoder features for every record and modality, plus splits."""

    records: list[Record]
    specs: dict[str, str]
    identities: dict[str, str]
    feats: dict[str, np.ndarray]  # modality -> (n_with_modality, dim)
    rows: dict[str, np.ndarray]  # modality -> (n_records,) row into feats or -1
    corpus: np.ndarray  # (n_records,) index of the manifest each record came from
    weights: np.ndarray = field(default_factory=lambda: np.ones(1))
    sources: list[str] = field(default_factory=list)
    skipped: list[BadRecord] = field(default_factory=list)  # undecodable when encoded (each logged)

    @property
    def modalities(self) -> list[str]:
        return sorted(self.feats)

    def split_idx(self, split: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.records) if r.split == split], dtype=np.int64)

    def with_pair(self, idx: np.ndarray, a: str, b: str) -> np.ndarray:
        return idx[(self.rows[a][idx] >= 0) & (self.rows[b][idx] >= 0)]

    def get(self, modality: str, idx: np.ndarray) -> np.ndarray:
        r = self.rows[modality][idx]
        if (r < 0).any():
            raise DataError(f"some records lack {modality!r}")
        return self.feats[modality][r]

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[Manifest],
        specs: Mapping[str, str],
        cache: FeatureCache,
        *,
        progress: bool = True,
        weights: Sequence[float] | None = None,
    ) -> "FeatureSet":
        records: list[Record] = []
        corpus: list[int] = []
        seen: set[str] = set()
        for ci, man in enumerate(manifests):
            for r in man.records:
                if r.id in seen:  # same id in two corpora: keep both, disambiguated
                    r = copy.copy(r)
                    r.id = f"{man.path.parent.name}:{r.id}"
                seen.add(r.id)
                records.append(r)
                corpus.append(ci)
        if weights is not None and len(weights) != len(manifests):
            raise DataError(f"{len(weights)} weights for {len(manifests)} manifests")
        encoded, identities = {}, {}
        skipped: dict[int, BadRecord] = {}  # records whose file is undecodable now (changed since validated)
        for m, spec in specs.items():
            enc = get_encoder(spec)
            have = [i for i, r in enumerate(records) if r.has(m)]
            if not have:
                raise DataError(f"no valid record has modality {m!r}")
            bad: dict[int, str] = {}
            items = [records[i].values[m] for i in have]
            X = cache.encode(enc, items, progress=progress, description=f"encoding {m} ({spec})", bad=bad)
            for j, why in bad.items():
                r = records[have[j]]
                skipped.setdefault(have[j], BadRecord(r.line, r.id, f"corrupt file for {m}: {why}"))
            encoded[m] = (have, X)
            identities[m] = enc.identity
        for i, b in skipped.items():
            log.warning("%s: %s (skipped)", manifests[corpus[i]].path, b)
        keep = np.asarray([i for i in range(len(records)) if i not in skipped], dtype=np.int64)
        new_row = np.full(len(records), -1, dtype=np.int64)
        new_row[keep] = np.arange(len(keep))
        feats, rows = {}, {}
        for m, (have, X) in encoded.items():
            sel = np.asarray([j for j, i in enumerate(have) if i not in skipped], dtype=np.int64)
            if not len(sel):
                raise DataError(f"no valid record has modality {m!r}")
            feats[m] = X[sel]
            rr = np.full(len(keep), -1, dtype=np.int64)
            rr[new_row[np.asarray(have)[sel]]] = np.arange(len(sel))
            rows[m] = rr
        records = [records[i] for i in keep]
        corpus = [corpus[i] for i in keep]
        w = np.asarray(weights if weights is not None else [1.0] * len(manifests), dtype=np.float64)
        return cls(
            skipped=list(skipped.values()),
            records=records,
            specs=dict(specs),
            identities=identities,
            feats=feats,
            rows=rows,
            corpus=np.asarray(corpus, dtype=np.int64),
            weights=w,
            sources=[str(m.path) for m in manifests],
        )


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
    return [(a, b) for a, b in itertools.combinations(modalities, 2) if train_count(a, b) >= 2]


VAL_METRIC = "mean (R@1+R@5+R@10)/3 over pairs, both directions"


def val_score(
    projectors: Mapping[str, Projector], fs: FeatureSet, idx: np.ndarray, pairs, mip_weights: Mapping | None = None
) -> float:
    """Mean of (R@1 + R@5 + R@10)/3 over every pair, both directions (the early-stopping score).

    ``mip_weights[(a, b)]`` (multimodal objectives): a (dim,) vector, the product of the
    other modalities' "missing" embeddings; pairs are then scored with the multilinear
    inner product ``MIP(a, b, missing...) = (a * w) . b``.
    """
    scores = []
    with torch.no_grad():
        for a, b in pairs:
            sel = fs.with_pair(idx, a, b)
            if len(sel) < 2:
                continue
            ea = F.normalize(projectors[a](torch.from_numpy(fs.get(a, sel))), dim=-1).numpy()
            eb = F.normalize(projectors[b](torch.from_numpy(fs.get(b, sel))), dim=-1).numpy()
            w = mip_weights.get((a, b)) if mip_weights is not None else None
            qa, qb = (ea, eb) if w is None else (ea * w, eb * w)  # MIP(q, g, missing...) = (q * w) . g
            fa, fb = fs.get(a, sel), fs.get(b, sel)  # frozen inputs: identical content, identical rows
            for q, g, kq, kg in ((qa, eb, fa, fb), (qb, ea, fb, fa)):
                r = pair_recalls(q, g, query_keys=kq, gallery_keys=kg)
                scores.append((r["R@1"] + r["R@5"] + r["R@10"]) / 3)
    return float(np.mean(scores)) if scores else float("nan")


def warm_start(projectors: Mapping[str, Projector], fs: FeatureSet, cfg: TrainConfig) -> None:
    """Start every projector at a training-free alignment (Procrustes or CCA, dim chosen on val).

    The linear path gets the training-free map (zero-padded to the space width)
    and the MLP's output layer starts at zero, so epoch 0 *is* the
    training-free space and training can only move away from it where the
    validation score says so.
    """
    from .align import fit_training_free

    if cfg.init == "ridge":
        return ridge_start(projectors, fs, cfg)
    if cfg.init not in ("procrustes", "cca"):
        raise DataError(f"init must be 'random', 'ridge', 'procrustes' or 'cca', got {cfg.init!r}")
    if cfg.lock:
        raise DataError("with a locked modality use init='ridge' (procrustes/cca build their own subspace)")
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


RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)


def ridge_start(projectors: Mapping[str, Projector], fs: FeatureSet, cfg: TrainConfig) -> None:
    """Start every unlocked projector at the ridge regression onto the locked modality's space.

    For each modality ``m`` paired with the locked one, ``W = argmin ||Z W - (T - mean T)||^2
    + lam ||W||^2`` on the training pairs (``Z``: standardised features), with ``lam = alpha * n``
    and ``alpha`` chosen on the validation pairs from :data:`RIDGE_ALPHAS`.  Strong shrinkage is
    what makes a few hundred pairs generalise; the MLP path starts at zero on top of it.
    """
    lock = cfg.lock
    if not lock:
        raise DataError("init='ridge' needs a locked modality (lock='text', say): it regresses onto its space")
    train_idx, val_idx = fs.split_idx("train"), fs.split_idx("val")
    tgt = projectors[lock]
    with torch.no_grad():
        for m, pr in projectors.items():
            if m == lock:
                continue
            tr = fs.with_pair(train_idx, m, lock)
            if len(tr) < 3:
                raise DataError(f"init='ridge': {m!r} has {len(tr)} training pairs with {lock!r}; need at least 3")
            Z = (torch.from_numpy(fs.get(m, tr)) - pr.mean) / pr.scale
            T = tgt(torch.from_numpy(fs.get(lock, tr)))
            va = fs.with_pair(val_idx, m, lock)
            G, ZT = Z.T @ Z, Z.T @ T
            eye = torch.eye(G.shape[0])
            best = None
            for alpha in RIDGE_ALPHAS:
                W = torch.linalg.solve(G.double() + alpha * len(tr) * eye.double(), ZT.double()).float()
                if len(va) >= 2:
                    fm, fl = fs.get(m, va), fs.get(lock, va)
                    q = F.normalize(((torch.from_numpy(fm) - pr.mean) / pr.scale) @ W, dim=-1).numpy()
                    g = F.normalize(tgt(torch.from_numpy(fl)), dim=-1).numpy()
                    r1 = pair_recalls(q, g, query_keys=fm, gallery_keys=fl)
                    r2 = pair_recalls(g, q, query_keys=fl, gallery_keys=fm)
                    score = sum(r[k] for r in (r1, r2) for k in ("R@1", "R@5", "R@10")) / 6
                else:
                    score = -alpha  # no val split: the weakest shrinkage
                if best is None or score > best[0]:
                    best = (score, alpha, W)
            pr.linear.weight.copy_(best[2].T)
            pr.linear.bias.zero_()
            if pr.mlp is not None:
                pr.mlp[-1].weight.zero_()
                pr.mlp[-1].bias.zero_()
            pr.ridge_alpha = best[1]


def train_space(fs: FeatureSet, cfg: TrainConfig, *, progress: bool = True):
    """Train one projector per modality with the configured objective; early stopping on val."""
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    # Adam's second moments underflow to denormals, which are ~2x slower on CPUs: flush them
    # while training (measured 2.5 s -> 1.5 s for 5 epochs), restore the default after.
    flush_denormals(True)
    try:
        return _train_space(fs, cfg, progress=progress)
    finally:
        torch.set_num_threads(prev_threads)
        flush_denormals(False)


def _train_space(fs: FeatureSet, cfg: TrainConfig, *, progress: bool = True):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .space import Space

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_idx, val_idx = fs.split_idx("train"), fs.split_idx("val")
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
        )
        tr = train_idx[fs.rows[m][train_idx] >= 0]
        projectors[m] = Projector(pc).fit_stats(fs.feats[m][fs.rows[m][tr]] if len(tr) else fs.feats[m])
    if cfg.init != "random":
        warm_start(projectors, fs, cfg)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)), requires_grad=cfg.learn_temperature)
    loss_fn = build_loss(cfg.loss, label_smoothing=cfg.label_smoothing)
    multimodal = is_multimodal(loss_fn)
    needs_feats = bool(getattr(loss_fn, "needs_features", False))
    if cfg.missing not in ("learned", "mean"):
        raise ValueError(f"missing must be 'learned' or 'mean', got {cfg.missing!r}")
    placeholders = MissingPlaceholders({m: fs.feats[m].shape[1] for m in fs.modalities}, learn=cfg.missing == "learned")
    params = [p for pr in projectors.values() for p in pr.parameters()]
    # the loss' own parameters (SigLIP's bias) and the "missing" offsets are not decayed, like the temperature
    extra = [p for p in list(loss_fn.parameters()) + list(placeholders.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": params, "weight_decay": cfg.weight_decay}, {"params": [logit_scale] + extra, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    members = {p: fs.with_pair(train_idx, *p) for p in pairs}
    feats_t = {m: torch.from_numpy(fs.feats[m]) for m in fs.modalities}
    sample_p = {}
    if len(fs.weights) > 1:
        for p, mem in members.items():
            w = fs.weights[fs.corpus[mem]]
            sample_p[p] = w / w.sum()
    steps = max(1, math.ceil(max(len(m) for m in members.values()) / cfg.batch_size))
    cursors = {p: (rng.permutation(mem), 0) for p, mem in members.items()}
    mods_multi: list[str] = sorted({m for p in pairs for m in p})
    if multimodal:  # one batch of every record with >= 2 of the modalities; missing ones get placeholders
        have = np.stack([fs.rows[m][train_idx] >= 0 for m in mods_multi], 1)
        members_multi = train_idx[have.sum(1) >= 2]
        members[tuple(mods_multi)] = members_multi
        cursors[tuple(mods_multi)] = (rng.permutation(members_multi), 0)
        if len(fs.weights) > 1:
            w = fs.weights[fs.corpus[members_multi]]
            sample_p[tuple(mods_multi)] = w / w.sum()
        steps = max(1, math.ceil(len(members_multi) / cfg.batch_size))

    def next_batch(p) -> np.ndarray:
        mem = members[p]
        bs = min(cfg.batch_size, len(mem))
        if p in sample_p:
            return rng.choice(mem, size=bs, replace=False, p=sample_p[p])
        order, pos = cursors[p]
        if pos + bs > len(order):
            order, pos = rng.permutation(mem), 0
        cursors[p] = (order, pos + bs)
        return order[pos : pos + bs]

    best_state, history = None, []
    use_val = len(val_idx) >= 2 and any(len(fs.with_pair(val_idx, *p)) >= 2 for p in pairs)
    sel = EpochSelection(use_val, cfg.patience)
    if cfg.init != "random" and use_val:  # epoch 0 (the training-free start) competes for "best"
        for pr in projectors.values():
            pr.eval()
        score0 = val_score(projectors, fs, val_idx, pairs)
        sel.update(0, score0)
        best_state = (
            {m: copy.deepcopy(pr.state_dict()) for m, pr in projectors.items()},
            float(logit_scale.item()),
            0,
            copy.deepcopy(placeholders.state_dict()),
        )
        history.append({"epoch": 0, "loss": float("nan"), "val": score0, "temperature": math.exp(-logit_scale.item())})
    cols = [TextColumn("[bold]training"), BarColumn(), TextColumn("epoch {task.completed}/{task.total} {task.fields[msg]}"), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=False) as prog:
        task = prog.add_task("train", total=cfg.epochs, msg="")
        for epoch in range(cfg.epochs):
            for pr in projectors.values():
                pr.train()
            ep_loss = 0.0
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                total = 0.0
                terms_sum: dict[str, float] = {}
                if multimodal:
                    terms = _multimodal_terms(
                        loss_fn, fs, next_batch(tuple(mods_multi)), mods_multi, projectors, placeholders,
                        feats_t, logit_scale, cfg.feature_noise, needs_feats,
                    )
                    total = sum(terms.values())
                    total.backward()
                    opt.step()
                    with torch.no_grad():
                        logit_scale.clamp_(0, math.log(100))
                    ep_loss += float(total.detach())
                    continue
                for p in pairs:
                    idx = next_batch(p)
                    a, b = p
                    xa = feats_t[a][fs.rows[a][idx]]
                    xb = feats_t[b][fs.rows[b][idx]]
                    terms = pair_terms(loss_fn, projectors, a, b, xa, xb, logit_scale,
                                       noise=cfg.feature_noise, needs_feats=needs_feats)
                    for k, v in terms.items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach())
                    total = total + sum(terms.values())
                total = total / len(pairs)
                total.backward()
                opt.step()
                with torch.no_grad():
                    logit_scale.clamp_(0, math.log(100))
                ep_loss += float(total.detach())
            for pr in projectors.values():
                pr.eval()
            mip_w = _mip_weights(pairs, mods_multi, missing_embeddings(projectors, placeholders, mods_multi)) if multimodal else None
            score = val_score(projectors, fs, val_idx, pairs, mip_w) if use_val else None
            history.append({"epoch": epoch + 1, "loss": ep_loss / steps, "val": score, "temperature": math.exp(-logit_scale.item())})
            if sel.update(epoch + 1, score):
                best_state = (
                    {m: copy.deepcopy(pr.state_dict()) for m, pr in projectors.items()},
                    float(logit_scale.item()),
                    epoch + 1,
                    copy.deepcopy(placeholders.state_dict()),
                )
            prog.update(task, advance=1, msg=sel.progress(ep_loss / steps, score))
            if sel.stop:
                break
    assert best_state is not None
    for m, sd in best_state[0].items():
        projectors[m].load_state_dict(sd)
    placeholders.load_state_dict(best_state[3])
    space = Space(
        fs.specs,
        projectors,
        best_state[1],
        identities=fs.identities,
        config={"method": "contrastive", **cfg.to_dict()},
    )
    space.info["metrics"]["val/score"] = sel.best
    space.info["training"] = {
        "best_epoch": best_state[2],
        "epochs_run": len(history),
        **selection_record(use_val, sel.best, VAL_METRIC),
        "pairs": [list(p) for p in pairs],
        "history": history,
        "train_records": int(len(train_idx)),
        "val_records": int(len(val_idx)),
        "corpora": fs.sources,
        "corpus_weights": fs.weights.tolist(),
        "loss": repr(loss_fn) if hasattr(loss_fn, "names") else cfg.loss,
    }
    if multimodal:  # what a missing modality looks like in the space, for multilinear (MIP) scoring
        emb = missing_embeddings(projectors, placeholders, mods_multi)
        space.info["scoring"] = "mip"
        space.info["missing_embeddings"] = {m: [round(float(v), 7) for v in e] for m, e in emb.items()}
    scalars = {k: float(v.detach()) for k, v in loss_fn.named_parameters() if v.numel() == 1}
    if scalars:  # e.g. SigLIP's learnt bias (the value at the end of training)
        space.info["training"]["loss_parameters"] = scalars
    return space


def pair_terms(
    loss_fn,
    projectors: Mapping[str, Projector],
    a: str,
    b: str,
    xa: torch.Tensor,
    xb: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    noise: float = 0.0,
    needs_feats: bool = False,
    gather=None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch of (a, b) pairs: features -> projectors -> unit embeddings -> loss.

    Shared by the in-memory trainer and the streaming / Ray Train one (:mod:`anybind.scale`).
    ``gather`` (distributed training): a function concatenating a tensor over every worker,
    gradients flowing back to each worker's slice (open_clip's ``gather_with_grad``), so
    each worker computes the loss over the *global* batch and the averaged gradients equal
    the single-process ones.
    """
    if noise > 0:
        xa = xa + noise * projectors[a].scale * torch.randn_like(xa)
        xb = xb + noise * projectors[b].scale * torch.randn_like(xb)
    ea = F.normalize(projectors[a](xa), dim=-1)
    eb = F.normalize(projectors[b](xb), dim=-1)
    feats = (_standardised(projectors[a], xa), _standardised(projectors[b], xb)) if needs_feats else None
    if gather is not None:
        ea, eb = gather(ea), gather(eb)
        feats = (gather(feats[0]), gather(feats[1])) if feats is not None else None
    kw = {"feats": feats} if feats is not None else {}
    return loss_fn(ea, eb, logit_scale, **kw)


def _standardised(projector: Projector, x: torch.Tensor) -> torch.Tensor:
    """The frozen features as the projector sees them (standardised), for terms that read them."""
    return ((x - projector.mean) / projector.scale).detach()


@torch.no_grad()
def missing_embeddings(projectors: Mapping[str, Projector], placeholders: MissingPlaceholders, mods) -> dict[str, np.ndarray]:
    """Unit embedding of a *missing* item of each modality (eval mode): the placeholder through its projector."""
    out = {}
    for m in mods:
        pr = projectors[m]
        was = pr.training
        pr.eval()
        out[m] = F.normalize(pr(placeholders.inputs(m, pr, 1)), dim=-1)[0].numpy().astype(np.float32)
        pr.train(was)
    return out


def _mip_weights(pairs, mods, missing: Mapping[str, np.ndarray]) -> dict:
    """For each pair, the product of the other modalities' missing embeddings (ones when there are none)."""
    out = {}
    for a, b in pairs:
        w = np.ones_like(next(iter(missing.values())))
        for m in mods:
            if m not in (a, b):
                w = w * missing[m]
        out[(a, b)] = w
    return out


def _multimodal_terms(loss_fn, fs, idx, mods, projectors, placeholders, feats_t, logit_scale, noise, needs_feats):
    """One multimodal batch: every modality of every record in ``idx``, placeholders where missing."""
    embs, observed, feats = [], [], []
    for m in mods:
        rows = torch.from_numpy(fs.rows[m][idx])
        obs = rows >= 0
        pr = projectors[m]
        x = feats_t[m][rows.clamp_min(0)]
        if noise > 0:
            x = x + noise * pr.scale * torch.randn_like(x)
        x = torch.where(obs[:, None], x, placeholders.inputs(m, pr, len(idx)))
        embs.append(F.normalize(pr(x), dim=-1))
        observed.append(obs)
        feats.append(_standardised(pr, x))
    kw = {"feats": feats} if needs_feats else {}
    return loss_fn.forward_multi(embs, logit_scale, observed=torch.stack(observed, 1), **kw)

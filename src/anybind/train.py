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
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cache import FeatureCache
from .data.manifest import Manifest, Record
from .encoders.base import get_encoder
from .errors import DataError
from .evaluate import pair_recalls
from .losses import build_loss
from .projectors import Projector, ProjectorConfig


@dataclass
class TrainConfig:
    """Everything that decides a trained space (saved in ``space.json``)."""

    dim: int = 256
    projector: str = "mlp"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.2
    input_dropout: float = 0.1
    standardize: bool = True
    loss: str = "infonce"
    label_smoothing: float = 0.0
    temperature: float = 0.05  # initial; learnt unless learn_temperature=False
    learn_temperature: bool = True
    batch_size: int = 128
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 25  # epochs without val improvement before stopping
    seed: int = 0
    pairs: list[list[str]] | None = None  # default: every pair of bound modalities
    feature_noise: float = 0.0  # gaussian noise on standardised inputs during training

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
        feats, rows, identities = {}, {}, {}
        for m, spec in specs.items():
            enc = get_encoder(spec)
            have = [i for i, r in enumerate(records) if r.has(m)]
            if not have:
                raise DataError(f"no valid record has modality {m!r}")
            items = [records[i].values[m] for i in have]
            feats[m] = cache.encode(enc, items, progress=progress, description=f"encoding {m} ({spec})")
            rr = np.full(len(records), -1, dtype=np.int64)
            rr[np.asarray(have)] = np.arange(len(have))
            rows[m] = rr
            identities[m] = enc.identity
        w = np.asarray(weights if weights is not None else [1.0] * len(manifests), dtype=np.float64)
        return cls(
            records=records,
            specs=dict(specs),
            identities=identities,
            feats=feats,
            rows=rows,
            corpus=np.asarray(corpus, dtype=np.int64),
            weights=w,
            sources=[str(m.path) for m in manifests],
        )


def _pairs(fs: FeatureSet, cfg: TrainConfig, train_idx: np.ndarray) -> list[tuple[str, str]]:
    if cfg.pairs:
        out = []
        for p in cfg.pairs:
            if len(p) != 2 or any(m not in fs.feats for m in p):
                raise DataError(f"bad pair {p}: both must be bound modalities ({fs.modalities})")
            out.append((p[0], p[1]))
        return out
    return [
        (a, b) for a, b in itertools.combinations(fs.modalities, 2) if len(fs.with_pair(train_idx, a, b)) >= 2
    ]


def val_score(projectors: Mapping[str, Projector], fs: FeatureSet, idx: np.ndarray, pairs) -> float:
    """Mean of (R@1 + R@5 + R@10)/3 over every pair, both directions (the early-stopping score)."""
    scores = []
    with torch.no_grad():
        for a, b in pairs:
            sel = fs.with_pair(idx, a, b)
            if len(sel) < 2:
                continue
            ea = F.normalize(projectors[a](torch.from_numpy(fs.get(a, sel))), dim=-1).numpy()
            eb = F.normalize(projectors[b](torch.from_numpy(fs.get(b, sel))), dim=-1).numpy()
            for q, g in ((ea, eb), (eb, ea)):
                r = pair_recalls(q, g)
                scores.append((r["R@1"] + r["R@5"] + r["R@10"]) / 3)
    return float(np.mean(scores)) if scores else float("nan")


def train_space(fs: FeatureSet, cfg: TrainConfig, *, progress: bool = True):
    """Train one projector per modality with the configured objective; early stopping on val."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .space import Space

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_idx, val_idx = fs.split_idx("train"), fs.split_idx("val")
    if len(train_idx) < 2:
        raise DataError(f"need at least 2 training records, found {len(train_idx)} (check the 'split' fields)")
    pairs = _pairs(fs, cfg, train_idx)
    if not pairs:
        raise DataError("no two modalities occur together in the training records: nothing to align")
    projectors: dict[str, Projector] = {}
    for m in fs.modalities:
        pc = ProjectorConfig(
            in_dim=fs.feats[m].shape[1],
            out_dim=cfg.dim,
            kind=cfg.projector,
            hidden=cfg.hidden,
            dropout=cfg.dropout,
            input_dropout=cfg.input_dropout,
            standardize=cfg.standardize,
        )
        tr = train_idx[fs.rows[m][train_idx] >= 0]
        projectors[m] = Projector(pc).fit_stats(fs.feats[m][fs.rows[m][tr]] if len(tr) else fs.feats[m])
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)), requires_grad=cfg.learn_temperature)
    loss_fn = build_loss(cfg.loss, label_smoothing=cfg.label_smoothing)
    params = [p for pr in projectors.values() for p in pr.parameters()] + list(loss_fn.parameters())
    opt = torch.optim.AdamW(
        [{"params": params, "weight_decay": cfg.weight_decay}, {"params": [logit_scale], "weight_decay": 0.0}],
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

    best, best_state, bad_epochs, history = -1.0, None, 0, []
    use_val = len(val_idx) >= 2 and any(len(fs.with_pair(val_idx, *p)) >= 2 for p in pairs)
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
                for p in pairs:
                    idx = next_batch(p)
                    a, b = p
                    xa = feats_t[a][fs.rows[a][idx]]
                    xb = feats_t[b][fs.rows[b][idx]]
                    if cfg.feature_noise > 0:
                        xa = xa + cfg.feature_noise * projectors[a].scale * torch.randn_like(xa)
                        xb = xb + cfg.feature_noise * projectors[b].scale * torch.randn_like(xb)
                    ea = F.normalize(projectors[a](xa), dim=-1)
                    eb = F.normalize(projectors[b](xb), dim=-1)
                    terms = loss_fn(ea, eb, logit_scale)
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
            score = val_score(projectors, fs, val_idx, pairs) if use_val else -ep_loss
            history.append({"epoch": epoch + 1, "loss": ep_loss / steps, "val": score, "temperature": math.exp(-logit_scale.item())})
            if score > best + 1e-6:
                best, bad_epochs = score, 0
                best_state = (
                    {m: copy.deepcopy(pr.state_dict()) for m, pr in projectors.items()},
                    float(logit_scale.item()),
                    epoch + 1,
                )
            else:
                bad_epochs += 1
            prog.update(task, advance=1, msg=f"loss {ep_loss / steps:.3f} val {score:.3f} best {best:.3f}")
            if bad_epochs >= cfg.patience:
                break
    assert best_state is not None
    for m, sd in best_state[0].items():
        projectors[m].load_state_dict(sd)
    space = Space(
        fs.specs,
        projectors,
        best_state[1],
        identities=fs.identities,
        config={"method": "contrastive", **cfg.to_dict()},
    )
    space.info["training"] = {
        "best_epoch": best_state[2],
        "epochs_run": len(history),
        "best_val": best,
        "val_metric": "mean (R@1+R@5+R@10)/3 over pairs, both directions" if use_val else "-train loss (no val split)",
        "pairs": [list(p) for p in pairs],
        "history": history,
        "train_records": int(len(train_idx)),
        "val_records": int(len(val_idx)),
        "corpora": fs.sources,
        "corpus_weights": fs.weights.tolist(),
    }
    return space

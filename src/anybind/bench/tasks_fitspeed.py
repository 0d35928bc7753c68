"""Bench task ``fit-speed``: one epoch of fit from cached features vs re-encoding through the frozen towers at
every step, and the seconds to bind 10k pairs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from .tasks_scale import tux_records


# ----------------------------------------------------------------------------- fit-speed
def _synthetic_featureset(n_train: int, n_val: int, dims: dict[str, int], seed: int, noise: float = 16.0):
    """Pairs seeing a 32-d latent through random maps plus strong noise (val R@1 ~0.8: not solved in one epoch)."""
    from ..data.manifest import Record
    from ..train import FeatureSet

    rng = np.random.default_rng(seed)
    n = n_train + n_val
    z = rng.standard_normal((n, 32)).astype(np.float32)
    feats = {m: z @ rng.standard_normal((32, d)).astype(np.float32) + noise * rng.standard_normal((n, d)).astype(np.float32)
             for m, d in dims.items()}
    recs = [Record(id=f"p{i}", split="train" if i < n_train else "val", values={m: "1" for m in dims}) for i in range(n)]
    return FeatureSet(records=recs, specs={m: f"synthetic:{m}" for m in dims}, identities={m: f"synthetic:{m}" for m in dims},
                      feats=feats, rows={m: np.arange(n) for m in dims}, corpus=np.zeros(n, np.int64))


def _reencode_epoch(fs, man_records, specs: dict[str, str], cfg) -> float:
    """One epoch in the open_clip locked-tower style: every batch runs the frozen encoders again, then the step."""
    import torch

    from ..encoders.registry import get_encoder
    from ..loop import clamp_temperature, make_optimizer, make_temperature, training_threads
    from ..losses import build_loss
    from ..projectors import Projector, ProjectorConfig
    from ..train import pair_terms

    torch.manual_seed(cfg.seed)
    a, b = sorted(specs)
    train = fs.with_pair(fs.split_idx("train"), a, b)
    projectors = {}
    for m in (a, b):
        pc = ProjectorConfig(in_dim=fs.feats[m].shape[1], out_dim=cfg.dim, kind=cfg.projector, hidden=cfg.hidden,
                             dropout=cfg.dropout, input_dropout=cfg.input_dropout)
        projectors[m] = Projector(pc).fit_stats(fs.feats[m][fs.rows[m][train]])
    logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
    loss_fn = build_loss(cfg.loss)
    opt = make_optimizer([p for pr in projectors.values() for p in pr.parameters()], logit_scale,
                         list(loss_fn.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)  # the trainer's
    encs = {m: get_encoder(specs[m]) for m in (a, b)}
    order = np.random.default_rng(cfg.seed).permutation(train)
    t0 = time.perf_counter()
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s : s + cfg.batch_size]
        # the towers get every thread, as in the cached path's encoding; the step the trainer's threads and guard
        x = {m: torch.from_numpy(encs[m].encode([man_records[i].values[m] for i in idx])) for m in (a, b)}
        with training_threads(cfg.threads):
            opt.zero_grad(set_to_none=True)
            total = sum(pair_terms(loss_fn, projectors, a, b, x[a], x[b], logit_scale).values())
            total.backward()
            opt.step()
            clamp_temperature(logit_scale)
    return time.perf_counter() - t0


@task("fit-speed", "one epoch of fit from cached features vs re-encoding through frozen towers each step; seconds to bind 10k pairs")
def fit_speed_task(work: Path, cache=None, seed: int = 0, console=None, pairs: str = "0", big: str = "10000",
                   epochs: str = "200") -> TaskResult:
    from ..cache import FeatureCache
    from ..train import FeatureSet, TrainConfig, train_space

    pairs_n, big_n, epochs_n = int(pairs), int(big), int(epochs)
    specs = {"image": "image:efficientnet-lite0", "text": "text:minilm"}
    man = tux_records(Path(work), console)
    recs = [r for r in man.records if all(m in r.values for m in specs)]
    if pairs_n > 0:
        train = [r for r in recs if r.split == "train"][:pairs_n]
        recs = train + [r for r in recs if r.split != "train"]
    man.records = recs
    fs = FeatureSet.from_manifests([man], specs, FeatureCache(cache), progress=console is not None)
    n_train = len(fs.with_pair(fs.split_idx("train"), "image", "text"))
    cfg = TrainConfig(epochs=1, seed=seed).resolved()  # _reencode_epoch reads its dim and lr
    train_space(fs, cfg, progress=False)  # warm-up: first-call costs (imports, allocator) are not an epoch's
    t0 = time.perf_counter()
    train_space(fs, cfg, progress=False)
    once_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_space(fs, TrainConfig(epochs=11, patience=100, seed=seed), progress=False)
    cached_s = max((time.perf_counter() - t0 - once_s) / 10, 1e-6)  # one more epoch (with its val pass), setup excluded
    reencode_s = _reencode_epoch(fs, fs.records, specs, cfg)
    metrics: dict[str, Any] = {
        "tux/train_pairs": n_train, "tux/fit_1_epoch_s": once_s, "tux/cached_epoch_s": cached_s,
        "tux/reencode_epoch_s": reencode_s, "tux/speedup": reencode_s / cached_s,
    }
    table = [
        {"name": f"Tux Paint, {n_train} pairs: fit for 1 epoch (setup included)", "seconds": once_s, "ratio": None},
        {"name": f"Tux Paint, {n_train} pairs: one epoch from cached features", "seconds": cached_s, "ratio": 1.0},
        {"name": f"Tux Paint, {n_train} pairs: one epoch re-encoding (locked towers)", "seconds": reencode_s,
         "ratio": reencode_s / cached_s},
    ]
    # binding 10k pairs from cached features (the default recipe: MLP projectors, early stopping on val)
    big_fs = _synthetic_featureset(big_n, max(200, big_n // 10), {"image": 1280, "text": 384}, seed)
    t0 = time.perf_counter()
    space = train_space(big_fs, TrainConfig(epochs=epochs_n, seed=seed), progress=False)
    bind_s = time.perf_counter() - t0
    tr = space.info["training"]
    per_epoch = bind_s / tr["epochs_run"]
    est = reencode_s / n_train * big_n
    metrics.update({
        "bind10k/pairs": big_n, "bind10k/seconds": bind_s, "bind10k/epochs_run": tr["epochs_run"],
        "bind10k/best_epoch": tr["best_epoch"], "bind10k/epoch_s": per_epoch, "bind10k/reencode_epoch_s_est": est,
    })
    table += [
        {"name": f"bind {big_n:,} pairs from cached features ({tr['epochs_run']} epochs)", "seconds": bind_s, "ratio": None},
        {"name": "  one epoch of it (measured / re-encoding, estimated)", "seconds": per_epoch, "ratio": est / per_epoch},
    ]
    notes = [
        f"re-encoding = efficientnet-lite0 + MiniLM forward on every batch (decode included), then the same projector "
        f"step; cached epoch = (fit for 11 epochs - fit for 1) / 10, each epoch with its val pass; batch {cfg.batch_size}",
        f"{big_n:,} pairs: synthetic 1280-d/384-d features (32-d latent + strong noise), {max(200, big_n // 10)} val pairs, "
        f"TrainConfig defaults (epochs<={epochs_n}, patience {TrainConfig().patience}); the re-encoding estimate scales "
        f"the Tux Paint per-pair encode cost to {big_n:,} pairs",
    ]
    return TaskResult(metrics=metrics, table=table, notes=notes,
                      config={"pairs": pairs_n, "big": big_n, "epochs": epochs_n, "specs": specs})

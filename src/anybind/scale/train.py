"""The streaming trainer: projectors trained from training shards, in one process or on Ray Train.

The in-memory trainer's model and loop (:class:`anybind.binders.PairBinder` trained by
:func:`anybind.loop.fit_loop`): one projector per modality, every modality pair gets a batch
of ``batch_size`` pairs per step, ``ceil(largest pair count / batch_size)`` steps per epoch,
AdamW, a learnt temperature, early stopping on the val split's retrieval score; a locked
modality and the ridge start (``init="ridge"``, its normal equations summed over the shards; with the bridge prior
its kernel start, the support drawn in the same pass: :class:`anybind.ridge_kernel.SupportSample`, at most
``MAX_SUPPORT`` pairs held; the state handed to the workers carries the branch, :func:`~anybind.projectors.start_state`)
as in memory, so the recipe :func:`anybind.recipe.resolve_recipe` picks applies here too.  What differs:

* batches come from :class:`~anybind.scale.stream.PairStream` (one shard at a time
  through a shuffle buffer) instead of an in-memory permutation, so memory does not
  grow with the corpus (the val split is held in memory);
* on Ray Train (``TorchTrainer``, DDP over gloo: the projectors are small, CPUs suffice) each of ``N``
  workers reads its own shards and draws ``batch_size / N`` pairs per step; the
  embeddings are all-gathered with their gradients (open_clip's ``gather_with_grad``),
  every worker computes the loss over the *global* batch, and DDP averages the
  gradients: the same update as one process with the global batch.  Results match the
  single-process trainer within run-to-run noise (dropout masks and batch composition
  differ; see tests/test_scale_ray.py);
* robust fine-tuning (:mod:`anybind.robust`) through the same hooks: WiSE-FT (``wise``, alpha on the val
  split), L2-SP (``l2sp``), geodesic mixup (``mixup``) and the ridge start's prior (``ridge_prior``);
* a frame-sequence modality (``video:frames(...)@...,pool=attn``) gets the in-memory trainer's temporal
  projector: standardised over the training clips' valid frames (streamed), its attention pooling learnt with
  the space (under DDP its gradients are averaged like the maps'), at its own rate, first alone on top of the
  ridge start and the ridge map then re-solved (``attn_lr``, ``attn_epochs``: :func:`anybind.attention.attention_start`;
  under Ray the re-solve runs on one worker and is broadcast, :func:`solve_once`);
* not supported (a clear error instead): multimodal objectives (Symile), the training-free
  starts (``init="procrustes"`` / ``"cca"``), inductive centring (``center``: a pass of its own over the
  training embeddings) and per-corpus sampling weights -- they need every feature in memory; use the
  in-memory ``fit`` for those.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..binders import PairBinder
from ..encoders.device import current_runtime, place
from ..encoders.video import temporal_frames
from ..epochs import selection_record
from ..errors import DataError
from ..robust import RobustFit, check_robust, check_select_se_on, loop_config, ridge_start, with_mixup
from ..loop import fit_loop, make_optimizer, make_temperature, training_threads
from ..attention import attention_start, check_attention
from ..projectors import attention_parameters, load_start_state, start_state
from ..featureset import featureset_pairs
from ..train import VAL_METRIC, TrainConfig, choose_pairs, val_score
from .launch import collectives_before_any_group
from .pairstream import PairStream
from .solve import broadcast_, solve_once
from .stream import SPLIT_CODES, TrainingShards
from ..wording import counted

collectives_before_any_group()  # before the caller's process group, so that its teardown can free it

log = logging.getLogger(__name__)
DEFAULT_SHUFFLE_BUFFER = 16384


def check_config(cfg: TrainConfig) -> None:
    """Refuse what the streaming / Ray trainer cannot do (it needs every feature in memory)."""
    from ..losses import build_loss, is_multimodal

    check_select_se_on(cfg)  # before resolving: a select_se the user gave 0 is not the recipe's
    cfg = cfg.resolved()  # what the recipe left open (AUTO): the plain defaults, as in every entry below
    if is_multimodal(build_loss(cfg.loss)):
        raise DataError(f"loss {cfg.loss!r} is multimodal (Symile): the streaming / Ray trainer trains pairwise "
                        "objectives only; use the in-memory fit")
    if cfg.init not in ("random", "ridge"):
        raise DataError(f"init={cfg.init!r} needs every feature in memory: the streaming / Ray trainer starts from "
                        "init='random' or 'ridge'; use the in-memory fit for training-free starts")
    if cfg.select_se:
        raise DataError(f"select_se={cfg.select_se!r} (the standard-error rule over every choice on val) needs the "
                        "in-memory fit: the streaming / Ray trainer scores val by its mean only; use ridge_se")
    if cfg.center:
        raise DataError("center=True (inductive centring) needs the in-memory fit: the streaming / Ray trainer "
                        "keeps no training embeddings to centre on")
    check_robust(cfg)
    check_attention(cfg)


def stream_pairs(shards: TrainingShards, cfg: TrainConfig) -> list[tuple[str, str]]:
    """The modality pairs trained (:func:`anybind.train.choose_pairs` over the shards' counts)."""
    return choose_pairs(cfg, shards.modalities, lambda a, b: shards.count("train", (a, b)))


def build_projectors(shards: TrainingShards, cfg: TrainConfig, stats: dict | None = None) -> dict:
    """One projector per modality, standardised with the training split's statistics (streamed)."""
    from ..projectors import Projector, ProjectorConfig
    cfg = cfg.resolved()  # called on its own with a config left at AUTO: the plain defaults, as trainers'
    if cfg.lock is not None and cfg.lock not in shards.dims:
        raise DataError(f"lock={cfg.lock!r} is not a modality of the shards ({', '.join(shards.modalities)})")
    out = {}
    for m in shards.modalities:
        pc = ProjectorConfig(
            in_dim=shards.dims[m], out_dim=shards.dims[cfg.lock] if cfg.lock else cfg.dim,
            kind="identity" if m == cfg.lock else cfg.projector, hidden=cfg.hidden, dropout=cfg.dropout,
            input_dropout=cfg.input_dropout, standardize=cfg.standardize, frames=shard_frames(shards, m),
        )
        if pc.frames and m == cfg.lock:
            raise DataError(f"lock={m!r}: {shards.specs[m]}: a pool=attn pools frames with a learnt attention, "
                            "an identity projector cannot (lock another modality)")
        pr = Projector(pc)
        mean, scale, n = stats[m] if stats is not None else shards.standardisation(m, frames=pc.frames)
        if cfg.standardize and n > 1:
            with torch.no_grad():
                pr.mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
                pr.scale.fill_(float(scale))
        out[m] = pr
    return out


def shard_frames(shards: TrainingShards, m: str) -> int:
    """The frames of modality ``m``'s frame-sequence features (a ``pool=attn`` video spec: its projector pools
    them, :func:`anybind.encoders.video.temporal_frames`), else 0."""
    return temporal_frames(shards.specs.get(m, ""))


def ridge_init(shards: TrainingShards, cfg: TrainConfig,
               stats: dict) -> tuple[dict[str, dict[str, torch.Tensor]] | None, dict[str, Any]]:
    """``(state, record)``: the projectors' starting state for ``init="ridge"`` (``None`` for ``init="random"``)
    and each modality's ridge alpha and prior: the ridge start of :func:`anybind.robust.ridge_start`, its normal
    equations summed shard by shard, the shrinkage chosen on the val split (held in memory)."""
    cfg = cfg.resolved()
    if cfg.init != "ridge":
        return None, {}
    with training_threads(cfg.threads):
        torch.manual_seed(cfg.seed)  # the parameters the ridge start leaves alone start where train_streaming's do
        projectors = build_projectors(shards, cfg, stats)
        rec = ridge_start(projectors, cfg, shards.specs, _shard_pairs(shards, "train", cfg.lock),
                          featureset_pairs(shards.feature_set("val"), "val", cfg.lock))
        return {m: start_state(pr) for m, pr in projectors.items()}, rec


def _shard_pairs(shards: TrainingShards, split: str, lock: str | None):
    """``pairs(m)``: the ``split`` rows' features of (``m``, ``lock``), one shard at a time."""

    def pairs(m: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for f in shards.files(split, (m, lock)):
            t = shards.read(f, [f"x.{m}", f"x.{lock}", f"has.{m}", f"has.{lock}", "split"])
            sel = (t["split"] == SPLIT_CODES[split]) & (t[f"has.{m}"] > 0) & (t[f"has.{lock}"] > 0)
            yield t[f"x.{m}"][sel], t[f"x.{lock}"][sel]

    return pairs


def _gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` of every worker, concatenated, with its gradients, over the process group live now (never the one
    that was live when torch's collectives were imported: their default)."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dfn

    return torch.cat(dfn.all_gather(t, group=dist.group.WORLD), 0)


def train_streaming(
    shards: TrainingShards,
    cfg: TrainConfig,
    *,
    rank: int = 0,
    world: int = 1,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    stats: dict | None = None,
    init: dict[str, dict[str, torch.Tensor]] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    checked: bool = False,
) -> dict[str, Any]:
    """Train projectors from training shards; returns the best state and the training record.

    ``world > 1``: call it in every worker of an initialised ``torch.distributed``
    process group (Ray Train does that): the model is wrapped in DDP and the global
    batch ``cfg.batch_size`` is split over the workers.  ``init``: the projectors' starting
    state (:func:`ridge_init`).  ``max_steps`` caps the steps per epoch (benchmarks).  ``checked``:
    ``cfg`` was checked already (:func:`check_config`, by :func:`streaming_start` or the sharded fit).  The
    result (identical on every worker) is a dict: ``state`` (projector state dicts),
    ``logit_scale``, ``best_epoch``, ``best_val``, ``history``, ``pairs``, ``use_val``, ``robust``
    (WiSE-FT / L2-SP, :class:`anybind.robust.RobustFit`: applied to ``state``).
    """
    from ..losses import build_loss

    cfg = cfg.resolved()
    if not checked:
        check_config(cfg)
    distributed = world > 1
    with training_threads(cfg.threads):
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker (and as train_space)
        pairs = stream_pairs(shards, cfg)
        if not pairs:
            raise DataError("no two modalities occur together in the training records: nothing to align")
        projectors = build_projectors(shards, cfg, stats)
        for m, sd in (init or {}).items():
            load_start_state(projectors[m], sd)
        logit_scale = make_temperature(cfg.temperature, cfg.learn_temperature)
        loss_fn = with_mixup(build_loss(cfg.loss, label_smoothing=cfg.label_smoothing), cfg)
        binder = PairBinder(projectors, logit_scale, loss_fn, noise=cfg.feature_noise,
                            gather=_gather if distributed else None)
        opt = make_optimizer([p for pr in projectors.values() for p in pr.parameters()], logit_scale,
                             loss_fn.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, own_lr=cfg.attn_lr,
                             own_rate=attention_parameters(projectors))
        model: nn.Module = binder
        if distributed:  # backward all-reduces (averages) the gradients
            rt = current_runtime()  # DDP wraps a module already on its device (the worker's GPU under Ray)
            place(binder, rt.device)
            ids = [int(rt.device.split(":")[1])] if rt.is_cuda else None
            model = nn.parallel.DistributedDataParallel(binder, device_ids=ids, find_unused_parameters=True)
            torch.manual_seed(cfg.seed + 7919 * rank)  # workers draw different dropout masks
        counts = {p: shards.count("train", p) for p in pairs}
        steps = max(1, math.ceil(max(counts.values()) / cfg.batch_size))
        if max_steps is not None:
            steps = min(steps, max_steps)
        streams = {}
        for p in pairs:
            global_bs = min(cfg.batch_size, counts[p])
            local_bs = global_bs // world
            if local_bs < 1:
                raise DataError(f"pair {p[0]}-{p[1]}: {counted(counts[p], 'training pair')} for {world} workers")
            streams[p] = PairStream(shards, *p, batch_size=local_bs, shuffle_buffer=shuffle_buffer,
                                    seed=cfg.seed, rank=rank, world=world)
        use_val = shards.count("val", "rows") >= 2 and any(shards.count("val", p) >= 2 for p in pairs)
        vfs = shards.feature_set("val") if use_val and rank == 0 else None
        rows_seen = 0

        def batches() -> Iterator[dict]:
            nonlocal rows_seen
            while True:
                batch = {}
                for p in pairs:
                    xa, xb = next(streams[p])
                    batch[p] = (torch.from_numpy(xa), torch.from_numpy(xb))
                    rows_seen += len(xa)
                yield batch

        def score(epoch: int) -> float:  # on rank 0, shared with every worker
            s = val_score(projectors, vfs, np.arange(len(vfs.records)), pairs) if vfs is not None else 0.0
            if distributed:  # through the group's device: after a loop the model is back on the CPU, under nccl too
                s = float(broadcast_(torch.tensor([s], dtype=torch.float64), 0)[0])
            return s

        t0 = time.perf_counter()
        stream = batches()
        ft = loop_config(cfg)  # finetune=False: epochs=0, the training-free start is kept
        phase = attention_start(
            projectors, model, stream, steps, logit_scale, ft, use_val=use_val, score=score,
            refit=lambda: solve_once(lambda: ridge_start(
                projectors, cfg, shards.specs, _shard_pairs(shards, "train", cfg.lock),
                featureset_pairs(shards.feature_set("val"), "val", cfg.lock)), projectors, distributed),
            progress=progress and rank == 0)
        rob = RobustFit(cfg, projectors, logit_scale)  # from the start fine-tuning leaves
        res = fit_loop(model, stream, opt, logit_scale, epochs=ft.epochs, steps=steps, use_val=use_val,
                       patience=cfg.patience, score=score, keep=projectors, start=cfg.init != "random",
                       progress=progress and rank == 0, label="training (streaming)",
                       penalty=rob.penalty, on_epoch=rob.on_epoch)
        # every worker mixes in step (score broadcasts rank 0's val score)
        logit, rob_rec = rob.finish(res.logit_scale, (lambda: score(1)) if use_val else None, say=rank == 0)
        if phase is not None:
            rob_rec["attention_phase"] = phase
            if phase["ridge"]:  # the start fine-tuning left (the caller's ridge_init record otherwise)
                rob_rec["ridge"] = phase["ridge"]
        state = {m: start_state(pr) for m, pr in projectors.items()}
        return {
            "state": state, "logit_scale": logit, "best_epoch": res.best_epoch, "best_val": res.best_val,
            "robust": rob_rec,
            "history": res.history, "pairs": [list(p) for p in pairs], "use_val": use_val, "steps_per_epoch": steps,
            "seconds": time.perf_counter() - t0, "rows_seen": rows_seen, "world": world,
            "passes": {f"{a}+{b}": s.passes for (a, b), s in streams.items()},
        }


def space_from_result(shards: TrainingShards, cfg: TrainConfig, res: dict[str, Any], stats: dict, **info: Any):
    """The :class:`~anybind.space.Space` a streaming run trained (its best epoch)."""
    from ..space import Space

    cfg = cfg.resolved()
    projectors = build_projectors(shards, cfg, stats)
    for m, sd in res["state"].items():
        load_start_state(projectors[m], sd)
    space = Space(shards.specs, projectors, res["logit_scale"], identities=shards.identities,
                  config={"method": "contrastive", **cfg.to_dict()})
    space.info["metrics"]["val/score"] = res.get("robust", {}).get("wise_val_chosen", res["best_val"])
    space.info["training"] = {
        "best_epoch": res["best_epoch"],
        "epochs_run": len(res["history"]),
        **selection_record(res["use_val"], res["best_val"], VAL_METRIC),
        "pairs": res["pairs"],
        "history": res["history"],
        "train_records": shards.count("train", "rows"),
        "val_records": shards.count("val", "rows"),
        "corpora": shards.meta.get("sources", []),
        "loss": cfg.loss,
        "robust": res.get("robust", {}),
        "trainer": "streaming",
        "workers": res["world"],
        "seconds": round(res["seconds"], 3),
        "shards": str(shards.path),
        **info,
    }
    return space


def shard_stats(shards: TrainingShards) -> dict:
    """Each modality's standardisation over the training split, streamed (:meth:`TrainingShards.standardisation`)."""
    return {m: shards.standardisation(m, frames=shard_frames(shards, m)) for m in shards.modalities}


class StreamingStart(NamedTuple):
    """What every worker of a streaming run starts from, computed once (in this process, on Ray's driver, on
    torchrun's rank 0): each modality's standardisation over the training split (``stats``, :func:`shard_stats`),
    the ridge start's projector state (``init``, ``None`` for ``init="random"``) and its record (``ridge``: each
    modality's alpha and prior, :func:`ridge_init`)."""

    stats: dict
    init: dict[str, dict[str, torch.Tensor]] | None
    ridge: dict[str, Any]


def streaming_start(shards: TrainingShards, cfg: TrainConfig, *, checked: bool = False) -> StreamingStart:
    """The start of a streaming run (:class:`StreamingStart`), the config checked first (:func:`check_config`,
    unless ``checked``: the caller did); hand its ``stats`` and ``init`` to :func:`train_streaming` (with
    ``checked=True``) and the whole to :func:`streaming_space`."""
    cfg = cfg.resolved()
    if not checked:
        check_config(cfg)
    stats = shard_stats(shards)
    init, ridge = ridge_init(shards, cfg, stats)
    return StreamingStart(stats, init, ridge)


def streaming_space(shards: TrainingShards, cfg: TrainConfig, res: dict[str, Any], start: StreamingStart,
                    **info: Any):
    """The space a streaming run from ``start`` trained (:func:`space_from_result`), its training record keeping the
    ridge start's record unless the attention phase re-solved it (``res["robust"]["ridge"]``)."""
    if start.ridge:
        res.setdefault("robust", {}).setdefault("ridge", start.ridge)
    return space_from_result(shards, cfg, res, start.stats, **info)


def fit_streaming(shards: TrainingShards, cfg: TrainConfig, *, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                  progress: bool = True, checked: bool = False):
    """Train a space from training shards in this process, in bounded memory (``cfg`` checked once, here unless
    ``checked``: the caller did)."""
    start = streaming_start(shards, cfg, checked=checked)
    res = train_streaming(shards, cfg, shuffle_buffer=shuffle_buffer, stats=start.stats, init=start.init,
                          progress=progress, checked=True)
    return streaming_space(shards, cfg, res, start, shuffle_buffer=shuffle_buffer)


# ----------------------------------------------------------------------------- from manifests

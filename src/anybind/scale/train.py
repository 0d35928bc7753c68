"""The streaming trainer: projectors trained from training shards, in one process or on Ray Train.

Same model, objective and schedule as :func:`anybind.train.train_space` (the per-batch
loss is the same function, :func:`anybind.train.pair_terms`): one projector per
modality, every modality pair gets a batch of ``batch_size`` pairs per step,
``ceil(largest pair count / batch_size)`` steps per epoch, AdamW, a learnt
temperature, early stopping on the val split's retrieval score.  What differs:

* batches come from :class:`~anybind.scale.stream.PairStream` (one shard at a time
  through a shuffle buffer) instead of an in-memory permutation, so memory does not
  grow with the corpus (the val split is held in memory);
* on Ray Train (``TorchTrainer``, DDP over gloo: the projectors are small, CPUs suffice) each of ``N``
  workers reads its own shards and draws ``batch_size / N`` pairs per step; the
  embeddings are all-gathered with their gradients (open_clip's ``gather_with_grad``),
  every worker computes the loss over the *global* batch, and DDP averages the
  gradients: the same update as one process with the global batch.  Results match the
  single-process trainer within run-to-run noise (dropout masks and batch composition
  differ; see tests/test_scale.py);
* not supported (a clear error instead): multimodal objectives (Symile), warm starts
  (``init`` other than ``random``) and per-corpus sampling weights -- they need every
  feature in memory; use the in-memory ``fit`` for those.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..epochs import EpochSelection, selection_record
from ..errors import DataError
from ..numerics import flush_denormals
from ..train import VAL_METRIC, TrainConfig, choose_pairs, pair_terms, val_score
from .stream import DEFAULT_ROWS_PER_SHARD, PairStream, TrainingShards, write_training_shards

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 16384


class _Binder(nn.Module):
    """Every trainable part in one module (what DDP wraps); ``forward`` returns one step's loss."""

    def __init__(self, projectors: dict, logit_scale: nn.Parameter, loss_fn: nn.Module):
        super().__init__()
        self.projectors = nn.ModuleDict(projectors)
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn

    def forward(self, batches: dict, noise: float, needs_feats: bool, gather: Callable | None):
        total, terms_sum = 0.0, {}
        for (a, b), (xa, xb) in batches.items():
            terms = pair_terms(self.loss_fn, self.projectors, a, b, xa, xb, self.logit_scale,
                               noise=noise, needs_feats=needs_feats, gather=gather)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach())
            total = total + sum(terms.values())
        return total / len(batches), terms_sum


def _check_config(cfg: TrainConfig) -> None:
    from ..losses import build_loss, is_multimodal

    if is_multimodal(build_loss(cfg.loss)):
        raise DataError(f"loss {cfg.loss!r} is multimodal (Symile): the streaming / Ray trainer trains pairwise "
                        "objectives only; use the in-memory fit")
    if cfg.init != "random":
        raise DataError(f"init={cfg.init!r} needs every feature in memory: the streaming / Ray trainer starts from "
                        "init='random'; use the in-memory fit for warm starts")


def stream_pairs(shards: TrainingShards, cfg: TrainConfig) -> list[tuple[str, str]]:
    """The modality pairs trained (:func:`anybind.train.choose_pairs` over the shards' counts)."""
    return choose_pairs(cfg, shards.modalities, lambda a, b: shards.count("train", (a, b)))


def build_projectors(shards: TrainingShards, cfg: TrainConfig, stats: dict | None = None) -> dict:
    """One projector per modality, standardised with the training split's statistics (streamed)."""
    from ..projectors import Projector, ProjectorConfig

    if cfg.lock is not None and cfg.lock not in shards.dims:
        raise DataError(f"lock={cfg.lock!r} is not a modality of the shards ({', '.join(shards.modalities)})")
    out = {}
    for m in shards.modalities:
        pc = ProjectorConfig(
            in_dim=shards.dims[m], out_dim=shards.dims[cfg.lock] if cfg.lock else cfg.dim,
            kind="identity" if m == cfg.lock else cfg.projector, hidden=cfg.hidden, dropout=cfg.dropout,
            input_dropout=cfg.input_dropout, standardize=cfg.standardize,
        )
        pr = Projector(pc)
        mean, scale, n = stats[m] if stats is not None else shards.standardisation(m)
        if cfg.standardize and n > 1:
            with torch.no_grad():
                pr.mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
                pr.scale.fill_(float(scale))
        out[m] = pr
    return out


def _gather(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed.nn.functional as dfn

    return torch.cat(dfn.all_gather(t), 0)


def train_streaming(
    shards: TrainingShards,
    cfg: TrainConfig,
    *,
    rank: int = 0,
    world: int = 1,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    stats: dict | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train projectors from training shards; returns the best state and the training record.

    ``world > 1``: call it in every worker of an initialised ``torch.distributed``
    process group (Ray Train does that): the model is wrapped in DDP and the global
    batch ``cfg.batch_size`` is split over the workers.  ``max_steps`` caps the steps
    per epoch (benchmarks).  The result (identical on every worker) is a dict:
    ``state`` (projector state dicts), ``logit_scale``, ``best_epoch``, ``best_val``,
    ``history``, ``pairs``, ``use_val``.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..losses import build_loss

    _check_config(cfg)
    distributed = world > 1
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    flush_denormals(True)
    try:
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker (and as train_space)
        pairs = stream_pairs(shards, cfg)
        if not pairs:
            raise DataError("no two modalities occur together in the training records: nothing to align")
        projectors = build_projectors(shards, cfg, stats)
        logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)), requires_grad=cfg.learn_temperature)
        loss_fn = build_loss(cfg.loss, label_smoothing=cfg.label_smoothing)
        needs_feats = bool(getattr(loss_fn, "needs_features", False))
        binder = _Binder(projectors, logit_scale, loss_fn)
        params = [p for pr in projectors.values() for p in pr.parameters()]
        extra = [p for p in loss_fn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [{"params": params, "weight_decay": cfg.weight_decay}, {"params": [logit_scale] + extra, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        model: nn.Module = binder
        if distributed:
            model = nn.parallel.DistributedDataParallel(binder, find_unused_parameters=True)
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
                raise DataError(f"pair {p[0]}-{p[1]}: {counts[p]} training pairs for {world} workers")
            streams[p] = PairStream(shards, *p, batch_size=local_bs, shuffle_buffer=shuffle_buffer,
                                    seed=cfg.seed, rank=rank, world=world)
        vfs = None
        use_val = shards.count("val", "rows") >= 2 and any(shards.count("val", p) >= 2 for p in pairs)
        if use_val and rank == 0:
            vfs = shards.feature_set("val")
        val_idx = np.arange(len(vfs.records)) if vfs is not None else None

        best_state, history = None, []
        sel = EpochSelection(use_val, cfg.patience)
        gather = _gather if distributed else None
        cols = [TextColumn("[bold]training (streaming)"), BarColumn(),
                TextColumn("epoch {task.completed}/{task.total} {task.fields[msg]}"), TimeElapsedColumn()]
        t0 = time.perf_counter()
        rows_seen = 0
        with Progress(*cols, disable=not (progress and rank == 0), transient=False) as prog:
            task = prog.add_task("train", total=cfg.epochs, msg="")
            for epoch in range(cfg.epochs):
                binder.train()
                ep_loss = 0.0
                for _ in range(steps):
                    batches = {}
                    for p in pairs:
                        xa, xb = next(streams[p])
                        batches[p] = (torch.from_numpy(xa), torch.from_numpy(xb))
                        rows_seen += len(xa)
                    opt.zero_grad(set_to_none=True)
                    total, _ = model(batches, cfg.feature_noise, needs_feats, gather)
                    total.backward()
                    opt.step()
                    with torch.no_grad():
                        logit_scale.clamp_(0, math.log(100))
                    ep_loss += float(total.detach())
                binder.eval()
                if use_val:
                    score = val_score(projectors, vfs, val_idx, pairs) if rank == 0 else 0.0
                    if distributed:
                        import torch.distributed as dist

                        t = torch.tensor([score], dtype=torch.float64)
                        dist.broadcast(t, 0)
                        score = float(t[0])
                else:
                    score = None
                history.append({"epoch": epoch + 1, "loss": ep_loss / steps, "val": score,
                                "temperature": math.exp(-logit_scale.item())})
                if sel.update(epoch + 1, score):
                    best_state = ({m: copy.deepcopy(pr.state_dict()) for m, pr in projectors.items()},
                                  float(logit_scale.item()), epoch + 1)
                prog.update(task, advance=1, msg=sel.progress(ep_loss / steps, score))
                if sel.stop:
                    break
        assert best_state is not None
        seconds = time.perf_counter() - t0
        return {
            "state": best_state[0], "logit_scale": best_state[1], "best_epoch": best_state[2], "best_val": sel.best,
            "history": history, "pairs": [list(p) for p in pairs], "use_val": use_val, "steps_per_epoch": steps,
            "seconds": seconds, "rows_seen": rows_seen, "world": world,
            "passes": {f"{a}+{b}": s.passes for (a, b), s in streams.items()},
        }
    finally:
        torch.set_num_threads(prev_threads)
        flush_denormals(False)


def space_from_result(shards: TrainingShards, cfg: TrainConfig, res: dict[str, Any], stats: dict, **info: Any):
    """The :class:`~anybind.space.Space` a streaming run trained (its best epoch)."""
    from ..space import Space

    projectors = build_projectors(shards, cfg, stats)
    for m, sd in res["state"].items():
        projectors[m].load_state_dict(sd)
    space = Space(shards.specs, projectors, res["logit_scale"], identities=shards.identities,
                  config={"method": "contrastive", **cfg.to_dict()})
    space.info["metrics"]["val/score"] = res["best_val"]
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
        "trainer": "streaming",
        "workers": res["world"],
        "seconds": round(res["seconds"], 3),
        "shards": str(shards.path),
        **info,
    }
    return space


def _stats(shards: TrainingShards) -> dict:
    return {m: shards.standardisation(m) for m in shards.modalities}


def fit_streaming(shards: TrainingShards, cfg: TrainConfig, *, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                  progress: bool = True):
    """Train a space from training shards in this process, in bounded memory."""
    stats = _stats(shards)
    res = train_streaming(shards, cfg, shuffle_buffer=shuffle_buffer, stats=stats, progress=progress)
    return space_from_result(shards, cfg, res, stats, shuffle_buffer=shuffle_buffer)


# ----------------------------------------------------------------------------- Ray Train
def _ray_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (one per worker): stream this worker's shards, DDP, report rank 0's best state."""
    import ray.train
    from safetensors.torch import save_file

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    shards = TrainingShards.open(config["shards"])
    cfg = TrainConfig(**config["cfg"])
    stats = {m: (np.asarray(v[0], np.float32), float(v[1]), int(v[2])) for m, v in config["stats"].items()}
    res = train_streaming(shards, cfg, rank=rank, world=world, shuffle_buffer=config["shuffle_buffer"],
                          stats=stats, progress=False)
    ckpt = None
    if rank == 0:
        d = Path(tempfile.mkdtemp(prefix="anybind-ray-"))
        tensors = {f"{m}.{k}": v.contiguous() for m, sd in res["state"].items() for k, v in sd.items()}
        save_file(tensors, str(d / "projectors.safetensors"))
        (d / "result.json").write_text(json.dumps({k: v for k, v in res.items() if k != "state"}))
        ckpt = ray.train.Checkpoint.from_directory(str(d))
    best_val = float("nan") if res["best_val"] is None else res["best_val"]  # no val split: still a number
    ray.train.report({"best_val": best_val, "best_epoch": res["best_epoch"]}, checkpoint=ckpt)


def fit_ray(
    shards: TrainingShards,
    cfg: TrainConfig,
    *,
    workers: int = 2,
    address: str | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    storage: str | Path | None = None,
):
    """Train a space from training shards with Ray Train (``TorchTrainer``, ``workers`` DDP workers).

    ``cfg.batch_size`` is the global batch (``batch_size // workers`` per worker).
    ``storage``: where Ray Train keeps the run (default: beside the shards, which on a
    cluster must be shared storage every node reads).
    """
    from safetensors.torch import load_file

    from . import cluster_cpus, ray_session

    _check_config(cfg)
    if workers < 1:
        raise DataError(f"ray workers must be >= 1, got {workers}")
    stats = _stats(shards)
    with ray_session(address):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        cpus = max(0.1, min(1.0, cluster_cpus() / workers))
        root = Path(storage) if storage is not None else shards.path.parent / "_ray_runs"
        root.mkdir(parents=True, exist_ok=True)
        name = f"fit-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.default_rng().integers(1 << 30):08x}"
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={
                "shards": str(shards.path.absolute()), "cfg": cfg.to_dict(), "shuffle_buffer": int(shuffle_buffer),
                "stats": {m: (v[0].tolist(), v[1], v[2]) for m, v in stats.items()},
            },
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(storage_path=str(root.absolute()), name=name),
        )
        try:
            result = trainer.fit()
        except Exception as e:
            from .encode import root_cause

            raise DataError(f"Ray Train run failed ({root_cause(e)})") from e
        if getattr(result, "error", None):
            raise DataError(f"Ray Train run failed ({result.error})")
        with result.checkpoint.as_directory() as d:
            flat = load_file(str(Path(d) / "projectors.safetensors"))
            res = json.loads((Path(d) / "result.json").read_text())
        shutil.rmtree(root / name, ignore_errors=True)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        m, rest = k.split(".", 1)
        state.setdefault(m, {})[rest] = v
    res["state"] = state
    return space_from_result(shards, cfg, res, stats, ray_workers=workers, shuffle_buffer=shuffle_buffer)


# ----------------------------------------------------------------------------- from manifests
def fit_sharded(
    manifest: str | Path | Sequence[str | Path],
    modalities: Sequence[str] | None = None,
    *,
    encoders: dict[str, str] | None = None,
    cache=None,
    ray_workers: int = 0,
    ray: bool | str | None = None,
    ray_address: str | None = None,
    strict: bool = False,
    weights: Sequence[float] | None = None,
    allow_eval_only: bool = False,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    progress: bool = True,
    **config: Any,
):
    """``anybind fit --stream`` / ``--ray-workers N``: encode what is missing, write training shards, train.

    Missing features are encoded on Ray when ``ray`` is given (``True``: a local Ray or
    ``$RAY_ADDRESS``; or an address), else here.  Training runs on Ray Train with
    ``ray_workers`` workers (on ``ray_address``, else ``ray`` when it is an address, else
    local / ``$RAY_ADDRESS``), or in this process (streaming) when ``ray_workers`` is 0.
    ``**config``: :class:`~anybind.train.TrainConfig` fields.
    """
    from ..version import __version__
    from ..cache import FeatureCache
    from ..encoders.registry import default_spec
    from ..space import fit_manifests
    from .encode import encode_items, manifest_items

    if weights is not None and len(set(float(w) for w in weights)) > 1:
        raise DataError("per-corpus sampling weights need the in-memory fit (drop --stream / --ray-workers)")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    manifests, mods = fit_manifests(manifest, modalities, encoders, strict, progress)
    if not allow_eval_only:
        from ..corpora import is_eval_only

        held_out = [str(m.path) for m in manifests if is_eval_only(m.path)]
        if held_out:
            raise DataError(f"{', '.join(held_out)}: corpus marked evaluation-only (corpus.json \"eval_only\": true); "
                            "pass allow_eval_only=True (--allow-eval-only) if you really mean to")
    if not mods:
        raise DataError("nothing to bind: the manifest has no modality fields")
    specs = {m: (encoders or {}).get(m) or default_spec(m) for m in mods}
    cfg = TrainConfig(**config)
    _check_config(cfg)
    encode_on = ray if ray not in (None, False) else False
    for m, spec in specs.items():
        items = [v for man in manifests for v in manifest_items(man, m)[0]]
        if items:
            rep = encode_items(spec, items, fc, ray=encode_on, progress=progress)
            if rep.failed:  # files changed since they were validated: skipped and reported, like bad records
                manifests = [_skip_undecodable(man, m, dict(rep.failed)) for man in manifests]
    shards = write_training_shards(manifests, specs, fc, rows_per_shard=rows_per_shard, progress=progress)
    if ray_workers > 0:
        address = ray_address or (ray if isinstance(ray, str) else None)
        space = fit_ray(shards, cfg, workers=ray_workers, address=address, shuffle_buffer=shuffle_buffer)
    else:
        space = fit_streaming(shards, cfg, shuffle_buffer=shuffle_buffer, progress=progress)
    space.info["lineage"].append({
        "event": "fit", "method": "contrastive", "modalities": mods,
        "trainer": f"ray-train x{ray_workers}" if ray_workers > 0 else "streaming",
        "data": [{"manifest": str(man.path), "fingerprint": man.fingerprint(mods), "records": len(man.records)}
                 for man in manifests],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anybind": __version__,
    })
    return space


def _skip_undecodable(man, modality: str, failed: dict[str, str]):
    """``man`` without the records whose ``modality`` file could not be decoded (each logged as a warning)."""
    from ..data.manifest import BadRecord

    keep, bad = [], []
    for r in man.records:
        why = failed.get(r.values.get(modality, ""))
        if why is None:
            keep.append(r)
            continue
        bad.append(BadRecord(r.line, r.id, f"corrupt file for {modality}: {why}"))
        log.warning("%s: %s (skipped)", man.path, bad[-1])
    return dataclasses.replace(man, records=keep, bad=list(man.bad) + bad)

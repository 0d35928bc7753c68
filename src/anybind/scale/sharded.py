"""The sharded fit: ``anybind fit --stream`` (in this process, or in DDP over the processes torchrun started on
one node or several) and ``--ray-workers N`` (Ray Train).

:func:`fit_sharded` plans the fit like ``Space.fit`` (:func:`anybind.fitting.plan_fit`), writes training shards,
and trains them streaming (:mod:`anybind.scale.train`; under torchrun: :mod:`anybind.scale.launch`) or on Ray
Train workers (:mod:`anybind.scale.ray_train`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.files import absolute_as_given
from ..errors import DataError, unusable_file
from ..fitting import finish_fit
from ..train import TrainConfig
from .ray_train import fit_ray
from .shard_write import write_training_shards
from .launch import Launch, agree, process_group
from .stream import DEFAULT_ROWS_PER_SHARD, TrainingShards
from .train import (DEFAULT_SHUFFLE_BUFFER, check_config, fit_streaming, solve_once, streaming_space,
                    streaming_start, train_streaming)

log = logging.getLogger(__name__)


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
    recipe: str = "auto",
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    progress: bool = True,
    launch: Launch | None = None,
    **config: Any,
):
    """``anybind fit --stream`` / ``--ray-workers N``: encode what is missing, write training shards, train.

    Missing features are encoded on Ray when ``ray`` is given (``True``: a local Ray or
    ``$RAY_ADDRESS``; or an address), else here.  Training runs on Ray Train with
    ``ray_workers`` workers (on ``ray_address``, else ``ray`` when it is an address, else
    local / ``$RAY_ADDRESS``), or in this process (streaming) when ``ray_workers`` is 0.
    The data, the eval-only refusal, the recipe (``recipe="auto"``: the encoders, ``lock`` and
    ``init`` left open follow :func:`anybind.recipe.resolve_recipe`), the lineage and the calibration on the val
    split (:func:`anybind.fitting.finish_fit`) are those of ``Space.fit`` (:func:`anybind.fitting.plan_fit`).  ``**config``: :class:`~anybind.train.TrainConfig` fields.
    ``launch``: this process's place in a torchrun job (:func:`anybind.scale.launch.torchrun_launch`): the
    streaming trainer in DDP over its processes, every process calling this; the space comes back on global rank 0
    only (``None`` on the others), which alone encodes, writes shards and shows progress.
    """
    from ..cache import FeatureCache

    config.pop("select_split", None)
    if config.pop("select_data", None) is not None:
        raise DataError("select_data (selection on another corpus) needs the in-memory fit (drop --stream / "
                        "--ray-workers): the streaming trainer selects on its shards' val split")
    if weights is not None and len(set(float(w) for w in weights)) > 1:
        raise DataError("per-corpus sampling weights need the in-memory fit (drop --stream / --ray-workers)")
    if launch is not None and ray_workers > 0:
        raise DataError(f"launched by torchrun ({launch.world} processes) and asked for {ray_workers} Ray Train "
                        "workers: train with one or the other (drop --ray-workers under torchrun)")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)

    def prepare(progress: bool):
        return _prepare(manifest, modalities, encoders=encoders, cache=fc, ray=ray, strict=strict,
                        allow_eval_only=allow_eval_only, recipe=recipe, rows_per_shard=rows_per_shard,
                        progress=progress, config=config)

    if launch is not None:
        return _fit_torchrun(launch, prepare, shuffle_buffer=shuffle_buffer, progress=progress, cache=fc)
    plan, cfg, shards = prepare(progress)
    if ray_workers > 0:
        address = ray_address or (ray if isinstance(ray, str) else None)

        space = fit_ray(shards, cfg, workers=ray_workers, address=address, shuffle_buffer=shuffle_buffer,
                        checked=True)
    else:
        space = fit_streaming(shards, cfg, shuffle_buffer=shuffle_buffer, progress=progress, checked=True)
    return finish_fit(plan, space, f"ray-train x{ray_workers}" if ray_workers > 0 else "streaming", fc)


def _prepare(manifest, modalities, *, encoders, cache, ray, strict, allow_eval_only, recipe, rows_per_shard,
             progress, config):
    """``(plan, cfg, shards)``: the fit planned like ``Space.fit``, the features that are missing encoded (on Ray
    when ``ray`` is given), the training shards written (the plan's manifests without the records whose files could
    not be decoded)."""
    from ..fit_checks import check_before_encoding
    from ..fitting import check_val_size, plan_fit, val_pairs
    from ..holdout import hold_out_val
    from .encode import encode_items, manifest_items

    plan = plan_fit(manifest, modalities, encoders=encoders, recipe=recipe, config=config, strict=strict,
                    progress=progress, allow_eval_only=allow_eval_only)
    check_before_encoding(plan)  # as the in-memory fit: a contradiction (finetune=False, wise=0.5) or no train record
    plan.holdout = hold_out_val(plan, None, lambda p: val_pairs(p)[1])  # as the in-memory fit: no val split
    cfg = TrainConfig(**plan.config).resolved()  # what the recipe left open: the plain defaults
    check_config(cfg)  # before anything is encoded; once: the trainers below are told it was (checked=True)
    check_val_size(plan, trainer="streaming")  # its choices on the shards' val split: a split too small is said
    manifests, specs = plan.manifests, plan.specs
    encode_on = ray if ray not in (None, False) else False
    for m, spec in specs.items():
        items = [v for man in manifests for v in manifest_items(man, m)[0]]
        if items:
            rep = encode_items(spec, items, cache, ray=encode_on, progress=progress)
            if rep.failed:  # files changed since they were validated: skipped and reported, like bad records
                manifests = [_skip_undecodable(man, m, dict(rep.failed)) for man in manifests]
    shards = write_training_shards(manifests, specs, cache, rows_per_shard=rows_per_shard, progress=progress)
    plan.manifests = manifests  # without the records skipped as undecodable
    return plan, cfg, shards


def _fit_torchrun(launch: Launch, prepare, *, shuffle_buffer: int, progress: bool, cache):
    """The streaming trainer in DDP over torchrun's processes (:mod:`anybind.scale.launch`): global rank 0
    prepares (plans, encodes into the cache, writes the shards, computes the standardisation and the ridge start)
    and hands the result to every process; each opens the shards (they must be on storage every node sees at the
    same path) and trains its share of each global batch.  Returns the space on rank 0, ``None`` elsewhere."""
    plan = None

    def lead():
        nonlocal plan
        plan, cfg, shards = prepare(progress)
        return cfg.to_dict(), absolute_as_given(shards.path), streaming_start(shards, cfg, checked=True)

    with process_group(launch):
        cfg_dict, path, start = solve_once(lead, {}, True)
        cfg = TrainConfig(**cfg_dict)
        shards, why = None, None
        try:
            shards = TrainingShards.open(path)
        except Exception as e:  # noqa: BLE001 -- any failure must reach every rank (agree), or they wait in a gather
            said = " ".join(str(e).split()) if isinstance(e, (DataError, OSError)) else f"{type(e).__name__}: {e}"
            why = (f"cannot read the training shards rank 0 wrote ({said}): put the feature "
                   "cache (--cache or $ANYBIND_CACHE) on storage every node mounts at the same path")
        agree(why)
        res = train_streaming(shards, cfg, rank=launch.rank, world=launch.world, shuffle_buffer=shuffle_buffer,
                              stats=start.stats, init=start.init, progress=progress and launch.leader,
                              checked=True)  # rank 0's prepare checked the config every rank trains with
    if not launch.leader:
        return None
    space = streaming_space(shards, cfg, res, start, shuffle_buffer=shuffle_buffer)
    return finish_fit(plan, space, f"torchrun x{launch.world}", cache)  # calibrated on rank 0 alone, after training


def _skip_undecodable(man, modality: str, failed: dict[str, str]):
    """``man`` without the records whose ``modality`` file could not be decoded (each logged as a warning)."""
    from ..data.manifest import BadRecord

    keep, bad = [], []
    for r in man.records:
        why = failed.get(r.values.get(modality, ""))
        if why is None:
            keep.append(r)
            continue
        bad.append(BadRecord(r.line, r.id, unusable_file(modality, why)))
        log.warning("%s: %s (skipped)", man.path, bad[-1])
    return dataclasses.replace(man, records=keep, bad=list(man.bad) + bad)

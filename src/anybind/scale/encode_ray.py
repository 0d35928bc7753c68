"""Encoding on Ray: Ray Data actor pools write the same feature-cache shards as the single-process path
(:func:`anybind.scale.encode.encode_items` with ``ray=``), resumable after a failure; and the Ray embedder
of ``anybind index --ray``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import FeatureCache
from ..data.files import absolute_as_given
from ..encoders.base import Encoder
from ..encoders.batching import encode_adaptive
from ..encoders.device import cache_identity, current_runtime, ray_gpus, worker_runtime
from ..encoders.registry import get_encoder
from ..errors import DataError, EncoderError, Reason
from ..progress import progress_bar
from . import cluster_cpus, driver_folder, free_cpus, work_in
from .encode_report import EncodeReport, cached_encoder
from .reserve import Groups, Reservation, down, reserve

#: from this many files on, content keys (file hashes) are computed by Ray tasks, not by the driver
KEY_TASKS_FROM = 20_000


def _worker_encoder(spec: str) -> Encoder:
    return cached_encoder(get_encoder(spec))


def key_batch(batch: dict[str, np.ndarray], spec: str, workdir: str | None = None) -> dict[str, np.ndarray]:
    """Map task: the content key of each item (hashing file bytes), or why it cannot be read.  ``workdir``: the
    driver's folder (:func:`anybind.scale.work_in`), where relative items and spec files are read."""
    work_in(workdir)
    enc = _worker_encoder(spec)
    keys, errors = [], []
    for it in batch["item"]:
        try:
            keys.append(enc.content_key(str(it)))
            errors.append("")
        except (OSError, DataError) as e:  # DataError: not a regular file (see data/files.py)
            keys.append("")
            errors.append(f"cannot read ({getattr(e, 'strerror', None) or e})")
    return {"i": batch["i"], "key": np.asarray(keys, dtype=object), "error": np.asarray(errors, dtype=object)}


def decode_batch(batch: dict[str, np.ndarray], spec: str, workdir: str | None = None) -> dict[str, np.ndarray]:
    """Map task: ``Encoder.load`` on each item; an undecodable item becomes an error row, not a failure.
    ``workdir``: as :func:`key_batch`'s."""
    work_in(workdir)
    enc = _worker_encoder(spec)
    data, errors, kinds = [], [], []
    for it in batch["item"]:
        try:
            # the decoded object itself: Ray's own transport carries it to the actor (nothing of ours unpickles)
            data.append(enc.load(str(it)))
            errors.append("")
            kinds.append("")
        except DataError as e:
            data.append(b"")
            errors.append(str(e))
            kinds.append(Reason.of(e).kind)  # the error's kind, by name: its message may hold any words
    column = np.empty(len(data), dtype=object)
    for i, x in enumerate(data):  # element by element: equal-shaped arrays must not fuse into one block
        column[i] = x
    return {
        "key": batch["key"],
        "item": batch["item"],
        "data": column,
        "error": np.asarray(errors, dtype=object),
        "kind": np.asarray(kinds, dtype=object),
    }


class _EncodeActor:
    """One frozen encoder per actor: encodes decoded rows in forward-pass batches, commits one shard per call."""

    def __init__(self, spec: str, identity: str, cache_root: str, batch_size: int, threads: int,
                 cache_key: str | None = None, runtime: dict[str, str] | None = None, workdir: str | None = None):
        import torch

        torch.set_num_threads(max(1, threads))
        worker_runtime(runtime)  # the driver's device and precision
        work_in(workdir)  # the driver's folder: a relative file in the spec reads as there
        self.enc = _worker_encoder(spec)
        if self.enc.identity != identity:
            raise EncoderError(
                f"{spec}: a worker built an encoder of identity {self.enc.identity}, the driver's is {identity} "
                "(different weights or code on this node?)"
            )
        self.identity = cache_key or identity  # the cache's key: the identity (+ a precision other than fp32)
        self.cache = FeatureCache(cache_root)
        self.batch_size = max(1, batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        ok = [i for i, e in enumerate(errors) if not e]
        written = np.zeros(len(errors), dtype=bool)
        if ok:
            loaded = [batch["data"][i] for i in ok]
            X = encode_adaptive(self.enc, loaded, self.batch_size, names=[str(batch["item"][i]) for i in ok])
            self.cache.write_shard(self.identity, [str(batch["key"][i]) for i in ok], X)
            written[ok] = True
        return {"item": batch["item"], "error": errors, "kind": batch["kind"], "written": written}


def encode_actor_options(enc: Encoder, cache_root: str, *, batch_size: int, shard_size: int, num_gpus: float,
                         actor_cpus: float) -> dict[str, Any]:
    """The Ray Data ``map_batches`` options of the encoder actors (less ``compute``): the driver's runtime
    travels to them, and each asks for a GPU when it is CUDA (or ``num_gpus`` when given)."""
    return {
        "fn_constructor_kwargs": {
            "spec": enc.spec, "identity": enc.identity, "cache_root": cache_root, "batch_size": int(batch_size),
            "threads": max(1, round(actor_cpus)), "cache_key": cache_identity(enc),
            "runtime": current_runtime().to_dict(), "workdir": driver_folder(),
        },
        "batch_size": shard_size, "num_cpus": actor_cpus, "num_gpus": ray_gpus(num_gpus) or None,
    }


#: seconds an encode (or a Ray index embedding) waits for the CPUs of its actors and decode tasks to be held
#: (:func:`anybind.scale.reserve.reserve`) before it is refused in one line
RESERVE_WAIT_S = 60.0


def _sizes(free: float, concurrency: int, cpus_per_actor: float | None) -> tuple[float, float]:
    """(CPUs per decode task, CPUs per encoder actor) for ``free`` CPUs: the actors never take every free CPU,
    or the decode tasks could never be scheduled and the pipeline would wait forever."""
    if free < 0.2:
        raise EncoderError(
            f"the Ray cluster has {free:g} free CPUs of {cluster_cpus():g} (held by other work): nothing could run; "
            "retry when it has some, or give --ray-address of another cluster"
        )
    decode = 1.0 if free >= concurrency + 2 else down(min(0.5, free / 4))
    if cpus_per_actor is not None:
        return decode, float(cpus_per_actor)
    return decode, down(max(0.05, min(1.0, (free - decode) / max(1, concurrency))))


def _reserve(concurrency: int, num_gpus: float, cpus_per_actor: float | None, *, tasks: int = 1,
             what: str = "encoding on Ray") -> tuple[float, float, Reservation]:
    """(CPUs per decode task, CPUs per actor, the reservation holding them): one placement group of
    ``concurrency`` actor bundles (with their GPUs), one of decode bundles (as many as ``tasks`` and the CPUs left
    allow, at least one), sized to what is free and held before anything starts (:mod:`anybind.scale.reserve`):
    neither stage can then take the CPUs the other needs, nor can anything outside the pipeline."""
    free_cpus(wait=60.0, at_least=min(1.0, cluster_cpus()))  # a finished pool's CPUs come back asynchronously
    gpus = ray_gpus(num_gpus)
    sized: dict[str, float] = {}

    def plan(free: float) -> Groups:
        decode, actor = _sizes(free, concurrency, cpus_per_actor)
        sized.update(decode=decode, actor=actor)
        spare = max(free - actor * max(1, concurrency), decode)
        n = max(1, min(int(tasks), int(spare / decode + 1e-6))) if tasks else 0
        bundle = {"CPU": actor, **({"GPU": gpus} if gpus else {})}
        return {"encoder actors": [bundle] * max(1, int(concurrency)), "decode tasks": [{"CPU": decode}] * n}

    res = reserve(plan, wait=RESERVE_WAIT_S, what=what)
    return sized["decode"], sized["actor"], res


def _compute(concurrency: int):
    import ray.data

    return ray.data.ActorPoolStrategy(size=max(1, int(concurrency)))


def root_cause(e: BaseException) -> str:
    """The user-code error behind a Ray Data failure (its type and message), not Ray's wrapper text."""
    import re

    texts, c = [], e
    while c is not None and len(texts) < 10:
        texts.append(re.sub(r"\x1b\[[0-9;]*m", "", str(c)))
        c = c.__cause__ or getattr(c, "cause", None)
    pat = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
    found = [m.group(0) for t in texts for line in t.splitlines() if (m := pat.match(line.strip()))
             and not m.group(1).startswith("ray.")]
    if found:
        return found[-1]
    first = texts[0].strip().splitlines()
    return f"{type(e).__name__}: {first[0] if first else ''}"


def _ray_keys(enc: Encoder, uniq: list[str], shard_size: int, decode_cpus: float,
              res: Reservation) -> tuple[list[str], list[str]]:
    """Content keys of every item: file bytes hashed by Ray tasks for large corpora, here otherwise."""
    if enc.input_kind != "file" or len(uniq) < KEY_TASKS_FROM:
        b = key_batch({"i": np.arange(len(uniq)), "item": np.asarray(uniq, dtype=object)}, enc.spec)
        return [str(k) for k in b["key"]], [str(e) for e in b["error"]]
    import ray.data

    ds = ray.data.from_items(
        [{"i": i, "item": it} for i, it in enumerate(uniq)],
        override_num_blocks=max(1, min(len(uniq) // max(1, shard_size) + 1, 1000)),
    )
    ds = res.map_batches(ds, "decode tasks", key_batch, fn_kwargs={"spec": enc.spec, "workdir": driver_folder()}, batch_size=None,
                         num_cpus=decode_cpus)
    keys, errors = [""] * len(uniq), [""] * len(uniq)
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, k, e in zip(b["i"], b["key"], b["error"]):
            keys[int(i)], errors[int(i)] = str(k), str(e)
    return keys, errors


def _run_encode(enc: Encoder, missing: list[tuple[str, str]], fc: FeatureCache, rep: EncodeReport,
                res: Reservation, *, batch_size: int | None, shard_size: int, concurrency: int, num_gpus: float,
                decode_cpus: float, actor_cpus: float, progress: bool) -> str | None:
    """Decode ``missing`` (key, item) pairs in map tasks and encode them in an actor pool, each inside its
    placement group of ``res``; counts into ``rep``.  Returns why it failed (a worker raised), else None."""
    import ray.data

    ds = ray.data.from_items(
        [{"key": k, "item": it} for k, it in missing],
        override_num_blocks=max(1, min(math.ceil(len(missing) / shard_size), 10_000)),
    )
    opts = encode_actor_options(enc, absolute_as_given(fc.root), batch_size=batch_size or enc.batch_size,
                                shard_size=shard_size, num_gpus=num_gpus, actor_cpus=actor_cpus)
    # each stage in its own group: neither can take the CPUs the other needs
    ds = res.map_batches(ds, "decode tasks", decode_batch, fn_kwargs={"spec": enc.spec, "workdir": driver_folder()}, batch_size=shard_size,
                         num_cpus=decode_cpus)
    ds = res.map_batches(ds, "encoder actors", _EncodeActor, compute=_compute(concurrency), **opts)
    try:
        with progress_bar(progress, f"encoding {enc.spec} on Ray ({concurrency} actors)", len(missing), "rate") as bar:
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rep.encoded += int(b["written"].sum())
                rep.failed += [(str(it), Reason(str(e), str(kd)))
                               for it, e, kd in zip(b["item"], b["error"], b["kind"]) if e]
                bar.advance(len(b["item"]))
    except Exception as e:  # noqa: BLE001 -- a worker raised: committed shards stay, the rerun continues
        return root_cause(e)
    return None


def _release(res: Reservation) -> None:
    """Give back what a Ray Data execution held: the pipeline (dropped here) and its placement groups, whose
    removal ends every actor and task still in them (the actors of a failed pool can outlive the pipeline, each
    holding its CPUs, seen on Ray 2.x).  Needs nothing of Ray's state API (no dashboard); touches only the
    groups this process reserved."""
    import gc

    gc.collect()  # the dropped pipeline's last references
    res.release()


def encode_ray(
    enc: Encoder,
    items: Sequence[Any],
    fc: FeatureCache,
    *,
    batch_size: int | None,
    shard_size: int,
    concurrency: int,
    num_gpus: float,
    cpus_per_actor: float | None,
    progress: bool,
) -> EncodeReport:
    t0 = time.perf_counter()
    identity = cache_identity(enc)  # what the cache keys on (the identity, + a precision other than fp32)
    rep = EncodeReport(spec=enc.spec, identity=enc.identity, mode="ray", requested=len(items))
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    uniq = list(dict.fromkeys(str(x) for x in items))
    free_before = free_cpus()
    decode_cpus, actor_cpus, res = _reserve(concurrency, num_gpus, cpus_per_actor,
                                            tasks=math.ceil(len(uniq) / shard_size))
    with res:  # released on every way out: the groups' CPUs come back and their actors end (see _release)
        keys, key_errors = _ray_keys(enc, uniq, shard_size, decode_cpus, res)
        rep.failed += [(it, e) for it, e in zip(uniq, key_errors) if e]
        fc.rescan(identity)
        have = fc.keys(identity)
        first: dict[str, str] = {}
        for k, it, e in zip(keys, uniq, key_errors):
            if not e:
                first.setdefault(k, it)
        rep.unique = len(first)
        missing = [(k, it) for k, it in first.items() if k not in have]
        filled = fc.fill_from_source(enc, [k for k, _ in missing])  # e.g. a clip's mean from its frame sequence
        missing, have = [(k, it) for k, it in missing if k not in filled], have | filled
        rep.hits = rep.unique - len(missing)  # cached, or computed from the cached source
        shards_dir = fc.folder(identity) / "shards"
        n_before = len(list(shards_dir.glob("*.safetensors"))) if shards_dir.is_dir() else 0
        if missing:
            failure = _run_encode(enc, missing, fc, rep, res, batch_size=batch_size, shard_size=shard_size,
                                  concurrency=concurrency, num_gpus=num_gpus, decode_cpus=decode_cpus,
                                  actor_cpus=actor_cpus, progress=progress)
            _release(res)  # the pipeline's actors end with their groups (a finished pool's too: at once)
            free_cpus(wait=10.0, at_least=free_before)  # ... and their CPUs come back: what runs next finds them
            if failure is not None:
                fc.rescan(identity)
                done = len(fc.keys(identity)) - len(have)
                raise EncoderError(
                    f"distributed encode with {enc.spec} failed ({failure}); {done} items were committed to "
                    f"{fc.folder(identity)} and are kept: rerun to encode the remaining {len(missing) - done}"
                )
    fc.rescan(identity)
    if rep.failed and enc.input_kind == "file":  # as FeatureCache.encode does for the single-process path
        from ..data.checks import forget

        forget([Path(it) for it, _ in rep.failed])
    rep.shards = (len(list(shards_dir.glob("*.safetensors"))) if shards_dir.is_dir() else 0) - n_before
    rep.seconds = time.perf_counter() - t0
    return rep


# ----------------------------------------------------------------------------- index
class _EmbedActor:
    """Embeds items of one modality with a saved space (features through the shared feature cache)."""

    def __init__(self, space_dir: str, identity: str, modality: str, cache_root: str, threads: int,
                 runtime: dict[str, str] | None = None, workdir: str | None = None):
        import torch

        from ..space import Space

        torch.set_num_threads(max(1, threads))
        worker_runtime(runtime)  # the driver's device and precision
        work_in(workdir)  # the driver's folder: relative items and spec files read as there
        self.space = Space.load(space_dir)
        if self.space.identity() != identity:
            raise EncoderError(f"{space_dir}: a worker loaded space {self.space.identity()}, the driver's is {identity}")
        self.modality = modality
        self.cache = FeatureCache(cache_root)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        X = self.space.embed(self.modality, [str(x) for x in batch["item"]], cache=self.cache)
        self.cache.unload()  # bounded memory: each batch reads only its own shards
        return {"i": batch["i"], "vector": X.astype(np.float32)}


def ray_index_embedder(
    space_dir: str | Path,
    identity: str,
    cache: FeatureCache | str | Path | None = None,
    *,
    batch_size: int = 256,
    concurrency: int = 2,
    num_gpus: float = 0.0,
    cpus_per_actor: float | None = None,
) -> Callable[[str, list[tuple], int], Iterator[tuple[list[tuple], np.ndarray]]]:
    """An ``embedder`` for :meth:`anybind.index.Index.add`: Ray Data embeds, the driver commits each chunk.

    Call it inside a connected Ray (:func:`anybind.scale.ray_session`).  ``space_dir`` is
    the space every worker loads (the copy inside the index); items stream back in any
    order and are committed in chunks of the index's ``chunk_size``.
    """
    root = absolute_as_given(cache.root if isinstance(cache, FeatureCache) else FeatureCache(cache).root)

    def embed(modality: str, items: list[tuple], chunk_size: int) -> Iterator[tuple[list[tuple], np.ndarray]]:
        import ray.data

        if not items:
            return
        _, actor_cpus, res = _reserve(concurrency, num_gpus, cpus_per_actor, tasks=0, what="embedding on Ray")
        failure = None
        try:
            ds = ray.data.from_items(
                [{"i": i, "item": str(it[1])} for i, it in enumerate(items)],
                override_num_blocks=max(1, min(math.ceil(len(items) / batch_size), 10_000)),
            )
            kw = {"space_dir": absolute_as_given(space_dir), "identity": identity, "modality": modality,
                  "cache_root": root, "threads": max(1, round(actor_cpus)), "runtime": current_runtime().to_dict(),
                  "workdir": driver_folder()}
            ds = res.map_batches(ds, "encoder actors", _EmbedActor, fn_constructor_kwargs=kw, batch_size=batch_size,
                                 compute=_compute(concurrency), num_cpus=actor_cpus,
                                 num_gpus=ray_gpus(num_gpus) or None)
            try:
                for b in ds.iter_batches(batch_size=chunk_size, batch_format="numpy"):
                    yield [items[int(i)] for i in b["i"]], np.asarray(b["vector"], dtype=np.float32)
            except Exception as e:  # noqa: BLE001 - reported below, once the pipeline is released
                failure = root_cause(e)
            ds = None
        finally:  # also when the caller stops early: the actors end with their groups
            _release(res)
        if failure is not None:
            raise EncoderError(f"distributed embedding of {modality!r} failed ({failure}); "
                               "committed chunks are kept: rerun to embed the rest")

    return embed

"""Bench tasks for scale-out (:mod:`anybind.scale`): ``scale``, ``encode-overhead``, ``fit-speed``.

Sizes are options, so quick runs fit a small machine::

    anybind bench --task scale --opt n=2000                       # ~5 min on 2 CPUs (10M rows: 2.6 GB on disk)
    anybind bench --task scale --opt n=300 --opt rows=1000000     # quicker
    anybind bench --task encode-overhead                          # ~4 min
    anybind bench --task fit-speed --opt pairs=256                # ~3 min (pairs=0: the whole train split)

* ``scale``: (1) ``n`` Tux Paint texts encoded with ``encoder`` (default ``text:minilm``) by
  one process and by a local Ray with ``workers`` actors, into fresh caches: throughput of
  each, their ratio, and whether the two caches hold the same keys and vectors; (2) a
  synthetic paired feature set of ``rows`` rows (2 x 64-d, float16 shards on disk,
  deterministic; default 10M rows = 2.6 GB, scaled down when the disk is short) streamed
  through one training epoch in a child process: rows/s and the child's peak RSS; (3) the
  peak RSS of a child process encoding ``encode_items`` (default 100k) generated texts with
  the cheap ``callable:anybind.bench.tasks_scale:hashed_text384`` encoder (a real model would
  take hours on 2 cores; the memory held by the encode path does not depend on the model).
* ``encode-overhead``: anybind's single-process encode path (file hashing, decoding in a
  prefetch thread, batching, shard writes) against the bare ``encode_loaded`` forward passes
  on the same items decoded beforehand: throughput ratio, for ``image:efficientnet-lite0`` on
  Tux Paint images and ``text:minilm`` on captions (goal >= 0.9).
* ``fit-speed``: one epoch of ``fit`` from cached features against one epoch that re-encodes
  every batch through the frozen towers (open_clip with locked towers), on Tux Paint image +
  text training pairs; then the seconds to bind 10k pairs (synthetic 1280-d / 384-d
  features, the default recipe, early stopping) and the estimated per-epoch cost of
  re-encoding those 10k pairs instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task


# ----------------------------------------------------------------------------- helpers
def hashed_text384(items):
    """A cheap deterministic text encoder (384-d like MiniLM): for memory and pipeline measurements."""
    out = np.empty((len(items), 384), np.float32)
    for i, s in enumerate(items):
        seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")
        out[i] = np.random.default_rng(seed).standard_normal(384, dtype=np.float32)
    return out


hashed_text384.dim = 384
hashed_text384.input_kind = "text"
hashed_text384.batch_size = 256
CHEAP_TEXT = "callable:anybind.bench.tasks_scale:hashed_text384"


def _child(code: str, *args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run ``code`` in a fresh Python; it prints one JSON object last; its own peak RSS is added (GiB).

    The peak is ``VmHWM`` of the child's own address space (``ru_maxrss`` would count the
    pages it shared with this process between fork and exec).
    """
    wrapper = (
        "import json, sys\n"
        + code
        + "\nout = main(*sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "out['peak_rss_gb'] = int(hwm) / 2**20\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"child process failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _tux_texts(work: Path, n: int, console) -> list[str]:
    """Up to ``n`` distinct Tux Paint captions (English first, then the other languages)."""
    from .tuxpaint import prepare_tuxpaint

    rows = [json.loads(x) for x in prepare_tuxpaint(work, console).read_text().splitlines() if x.strip()]
    fields = ["text"] + sorted({k for r in rows for k in r if k.startswith("text_")})
    out: dict[str, None] = {}
    for f in fields:
        for r in rows:
            v = r.get(f)
            if isinstance(v, str) and v.strip():
                out.setdefault(v, None)
                if len(out) >= n:
                    return list(out)
    return list(out)


def tux_records(work: Path, console, modalities=("image", "text")):
    from ..data.manifest import load_manifest
    from .tuxpaint import prepare_tuxpaint

    return load_manifest(prepare_tuxpaint(work, console), modalities=list(modalities), check_media=False)


def _cache_map(root: Path, identity: str) -> dict[str, np.ndarray]:
    from ..cache import FeatureCache

    return FeatureCache(root).vectors(identity)


# ----------------------------------------------------------------------------- scale
_STREAM_CHILD = """
def main(path, batch_size, threads):
    import time
    from anybind.scale.stream import TrainingShards
    from anybind.scale.train import train_streaming, shard_stats
    from anybind.train import TrainConfig
    shards = TrainingShards.open(path)
    t0 = time.perf_counter()
    stats = shard_stats(shards)
    t_stats = time.perf_counter() - t0
    cfg = TrainConfig(epochs=1, batch_size=int(batch_size), projector="linear", dim=64, threads=int(threads),
                      input_dropout=0.0, patience=1)
    res = train_streaming(shards, cfg, stats=stats, progress=False)
    return {"seconds": res["seconds"], "stats_seconds": t_stats, "rows": res["rows_seen"],
            "steps": res["steps_per_epoch"], "val": res["best_val"], "loss": res["history"][-1]["loss"]}
"""

_ENCODE_CHILD = """
def main(n, root):
    import time
    from anybind.scale.encode import encode_items
    texts = [f"item {i}: a {['red', 'green', 'blue'][i % 3]} thing number {i * 7919 % 100003}" for i in range(int(n))]
    t0 = time.perf_counter()
    rep = encode_items("callable:anybind.bench.tasks_scale:hashed_text384", texts, root, progress=False)
    return {"seconds": time.perf_counter() - t0, "encoded": rep.encoded}
"""


@task("scale", "Ray vs one process (encode throughput, identical caches); 10M-row streamed epoch (peak RSS, rows/s); RSS encoding 100k items")
def scale_task(
    work: Path, cache=None, seed: int = 0, console=None, n: str = "2000", rows: str = "10000000",
    encode_items: str = "100000", encoder: str = "text:minilm", workers: str = "2", batch: str = "256",
) -> TaskResult:
    from ..encoders.registry import get_encoder
    from ..scale import ray_session
    from ..scale.encode import encode_items as encode
    from ..scale.shard_write import write_synthetic_shards
    from ..scale.stream import TrainingShards

    n, rows, n_enc, workers, batch = int(n), int(rows), int(encode_items), int(workers), int(batch)
    root = Path(work) / "scale"
    root.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    table: list[dict[str, Any]] = []

    # (1) one process vs Ray, same items, fresh caches
    texts = _tux_texts(Path(work), n, console)
    enc = get_encoder(encoder)
    enc.encode_loaded([enc.load(texts[0])])  # model loaded before timing
    for d in ("enc-local", "enc-ray"):
        shutil.rmtree(root / d, ignore_errors=True)
    local = encode(enc, texts, root / "enc-local", progress=False)
    t0 = time.perf_counter()
    with ray_session(num_cpus=os.cpu_count()):
        t_init = time.perf_counter() - t0
        ray_rep = encode(enc, texts, root / "enc-ray", ray=True, concurrency=workers, progress=False)
    a, b = _cache_map(root / "enc-local", enc.identity), _cache_map(root / "enc-ray", enc.identity)
    same_keys = set(a) == set(b) and len(a) == len(texts)
    max_diff = max(float(np.abs(a[k] - b[k]).max()) for k in a) if same_keys else float("nan")
    table += [
        {"name": f"encode {len(texts)} texts, one process", "items/s": local.items_per_second,
         "seconds": local.seconds, "ratio": 1.0},
        {"name": f"encode {len(texts)} texts, Ray local x{workers}", "items/s": ray_rep.items_per_second,
         "seconds": ray_rep.seconds, "ratio": ray_rep.items_per_second / local.items_per_second},
    ]
    metrics.update({
        "encode/n": len(texts), "encode/local_items_per_s": local.items_per_second,
        "encode/ray_items_per_s": ray_rep.items_per_second,
        "encode/ray_over_local": ray_rep.items_per_second / local.items_per_second,
        "encode/ray_init_s": t_init, "encode/same_keys": float(same_keys), "encode/max_abs_diff": max_diff,
        "encode/ray_shards": ray_rep.shards,
    })
    notes.append(f"{encoder} on {os.cpu_count()} CPUs: Ray seconds include the pipeline's actor start-up, not "
                 f"ray.init ({t_init:.1f} s); outputs identical keys: {same_keys}, max |diff| {max_diff:.2e}")

    # (2) a synthetic feature set streamed through one epoch, in bounded memory
    need = rows * (2 * 64 * 2 + 3) * 1.1
    free = shutil.disk_usage(root).free
    if need > free * 0.5:
        new_rows = int(free * 0.5 / (2 * 64 * 2 + 3) / 1.1) // 1_000_000 * 1_000_000 or 1_000_000
        notes.append(f"rows={rows:,} needs {need / 2**30:.1f} GiB, {free / 2**30:.0f} GiB free: scaled to {new_rows:,}")
        rows = new_rows
    syn = root / f"synthetic-{rows}"
    t0 = time.perf_counter()
    try:
        shards = TrainingShards.open(syn)
        gen_s = None
    except Exception:  # noqa: BLE001 - not there yet (or damaged): generate
        for old in root.glob("synthetic-*"):
            shutil.rmtree(old, ignore_errors=True)  # one synthetic set at a time on disk
        shards = write_synthetic_shards(syn, rows, seed=seed, progress=console is not None)
        gen_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in syn.glob("*.safetensors"))
    out = _child(_STREAM_CHILD, str(syn), str(batch), "1")
    table.append({"name": f"stream {rows:,} rows x 2 x 64-d, one epoch", "items/s": out["rows"] / out["seconds"],
                  "seconds": out["seconds"], "ratio": None})
    metrics.update({
        "stream/rows": rows, "stream/disk_gb": size / 2**30, "stream/rows_per_s": out["rows"] / out["seconds"],
        "stream/epoch_s": out["seconds"], "stream/stats_pass_s": out["stats_seconds"], "stream/steps": out["steps"],
        "stream/peak_rss_gb": out["peak_rss_gb"], "stream/val_score": out["val"],
    })
    if gen_s is not None:
        metrics["stream/generate_s"] = gen_s
    notes.append(f"streamed epoch: {len(shards)} float16 shards ({size / 2**30:.2f} GiB on disk), global batch {batch}, "
                 f"linear projectors, 1 torch thread; peak RSS {out['peak_rss_gb']:.2f} GiB (the whole child process)")

    # (3) peak memory while encoding many items (single process, cheap encoder)
    enc_root = root / "enc-100k"
    shutil.rmtree(enc_root, ignore_errors=True)
    out = _child(_ENCODE_CHILD, str(n_enc), str(enc_root))
    shutil.rmtree(enc_root, ignore_errors=True)
    table.append({"name": f"encode {n_enc:,} texts (cheap encoder), one process", "items/s": out["encoded"] / out["seconds"],
                  "seconds": out["seconds"], "ratio": None})
    metrics.update({"encode_many/items": n_enc, "encode_many/peak_rss_gb": out["peak_rss_gb"],
                    "encode_many/under_2gb": float(out["peak_rss_gb"] < 2.0)})
    notes.append(f"encoding {n_enc:,} items: peak RSS {out['peak_rss_gb']:.2f} GiB (goal < 2 GiB) with {CHEAP_TEXT} "
                 "(384-d; a real text model would take hours here; the encode path's memory does not depend on it)")
    return TaskResult(metrics=metrics, table=table, notes=notes,
                      config={"n": n, "rows": rows, "encode_items": n_enc, "encoder": encoder, "workers": workers,
                              "batch": batch})


# ----------------------------------------------------------------------------- encode-overhead
def _overhead_row(spec: str, items: list[str], root: Path, repeats: int) -> dict[str, Any]:
    from ..cache import FeatureCache
    from ..encoders.registry import get_encoder
    from ..scale.encode import encode_items as encode

    enc = get_encoder(spec)
    enc.check_output(enc.encode_loaded([enc.load(items[0])]), 1)  # weights loaded, first-call costs paid
    bs = enc.batch_size
    unique = len({enc.content_key(x) for x in items})  # identical files under two names are encoded once
    t0 = time.perf_counter()
    loaded = [enc.load(x) for x in items]
    decode_s = time.perf_counter() - t0
    wall: dict[str, list[float]] = {"bare": [], "ours": []}
    cpu: dict[str, list[float]] = {"bare": [], "ours": []}

    def run_bare() -> None:
        for i in range(0, len(loaded), bs):
            enc.check_output(enc.encode_loaded(loaded[i : i + bs]), len(loaded[i : i + bs]))

    def run_ours() -> None:
        rep = encode(enc, items, FeatureCache(root), progress=False)
        assert rep.encoded == unique, (rep.encoded, unique)

    for r in range(repeats):  # short interleaved rounds, alternating order: the machine is shared
        for name, run in ((("bare", run_bare), ("ours", run_ours)) if r % 2 == 0 else (("ours", run_ours), ("bare", run_bare))):
            shutil.rmtree(root, ignore_errors=True)
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    shutil.rmtree(root, ignore_errors=True)
    n = len(items)
    paired = [b / o for b, o in zip(wall["bare"], wall["ours"])]
    return {"name": f"{spec} x {n}", "bare items/s": n / min(wall["bare"]), "anybind items/s": n / min(wall["ours"]),
            "ratio": min(wall["bare"]) / min(wall["ours"]), "paired median": float(np.median(paired)),
            "cpu ratio": min(cpu["bare"]) / min(cpu["ours"]), "decode s": decode_s}


@task("encode-overhead", "anybind's encode path (read, decode, batch, cache) vs the bare forward pass: throughput ratio (goal >= 0.9)")
def encode_overhead_task(work: Path, cache=None, seed: int = 0, console=None, n: str = "32", n_text: str = "256",
                         repeats: str = "10") -> TaskResult:
    n, n_text, repeats = int(n), int(n_text), int(repeats)
    man = tux_records(Path(work), console)
    images = list(dict.fromkeys(r.values["image"] for r in man.records if "image" in r.values))[:n]
    texts = _tux_texts(Path(work), n_text, console)
    root = Path(work) / "encode-overhead-cache"
    rows = [_overhead_row("image:efficientnet-lite0", images, root, repeats),
            _overhead_row("text:minilm", texts, root, repeats)]
    metrics = {}
    for r, key in zip(rows, ("image", "text")):
        metrics[f"{key}/ratio"] = r["ratio"]
        metrics[f"{key}/paired_median_ratio"] = r["paired median"]
        metrics[f"{key}/cpu_ratio"] = r["cpu ratio"]
        metrics[f"{key}/bare_items_per_s"] = r["bare items/s"]
        metrics[f"{key}/anybind_items_per_s"] = r["anybind items/s"]
        metrics[f"{key}/decode_s"] = r["decode s"]
    import torch

    notes = [
        "bare: encode_loaded on batches of the encoder's batch size, items decoded beforehand (decode time shown "
        "apart); anybind: FeatureCache.encode from paths/texts into a fresh cache (content hashing, decoding one "
        f"batch ahead in a thread, shard writes); {repeats} short interleaved rounds: ratio = best bare / best anybind "
        "wall time, paired median = median over rounds of bare / anybind, cpu ratio = the same with process CPU time; "
        "torch threads "
        f"{torch.get_num_threads()} on {os.cpu_count()} CPUs (decoding shares them with the forward pass: the ratio "
        "is bounded by forward / (forward + decode) CPU time when the forward pass keeps every core busy)",
    ]
    return TaskResult(metrics=metrics, table=rows, notes=notes, config={"n": n, "n_text": n_text, "repeats": repeats})



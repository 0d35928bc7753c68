"""Bench task ``encoders``: anybind's encode path against the bare forward of the same model, per encoder kind.

For each kind (:data:`anybind.bench.encoder_cases.KINDS`: the built-in EfficientNet-Lite0, MiniLM and aiSFX,
``text:hf/``, ``image:hf/`` and ``audio:hf/`` with small models built from configs, ``image:onnx/`` exported
from a small torch model, ``video:frames(...)`` and ``video:hf/`` with a small VideoMAE), on the same raw
items (files or texts):

* **anybind**: ``get_encoder(spec).encode(items)`` -- decoding, preprocessing, batching (the encoder's batch
  size, halved and retried on out-of-memory), the forward pass and the pooling; no feature cache (its cost
  is the ``encode-overhead`` task's subject);
* **bare**: the library's own decoding, preprocessing and forward pass in batches of the same size
  (:mod:`anybind.bench.encoder_cases`).

The features must be equal (``max |diff|`` is reported; a kind over ``1e-4`` relative is flagged ``equal=no``).
Speed: ``repeats`` interleaved rounds, the order alternating (the machine is shared and noisy):
``ratio`` = best bare wall time / best anybind wall time (goal >= 0.9), ``paired`` = the median over rounds of
the same ratio, ``cpu ratio`` = the best process CPU times' ratio (what other processes on a shared machine
move least).  Memory, in one more round each after the timed ones: the peak of Python's allocations
(``tracemalloc``: numpy arrays and Python objects; torch's own buffers are not seen) and the peak resident
set size above the start of the run (sampled every 5 ms; the allocator keeps freed pages, so it shows what
the call added beyond what earlier calls left).

Options (``--opt``): ``kinds`` (comma-separated, default all), ``scale`` (multiplies every kind's item count),
``repeats`` (default 5), ``video_image`` (the video kind's frame encoder: ``effnet`` or ``onnx``).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from .encoder_cases import KINDS, Case, build_case
from .tasks_search import PeakRSS

#: items per kind at scale 1 (a kind's whole run takes seconds to a minute on 2 busy cores)
COUNTS = {"effnet": 32, "minilm": 256, "aisfx": 8, "hf-text": 256, "hf-image": 64, "hf-audio": 32,
          "onnx-image": 128, "video": 8, "hf-video": 8}
RTOL = 1e-4


def run_bare(case: Case) -> np.ndarray:
    items = case.items
    return np.concatenate([np.asarray(case.bare(items[i : i + case.batch_size]), np.float32)
                           for i in range(0, len(items), case.batch_size)])


def _memory(fn) -> tuple[float, float]:
    """(tracemalloc peak MiB, RSS peak above the start MiB) of one call."""
    gc.collect()
    tracemalloc.start()
    try:
        with PeakRSS(interval=0.005) as rss:
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, (rss.peak - rss.start) / 2**20


def measure(case: Case, repeats: int) -> dict[str, Any]:
    """One kind's row: items/s of both paths, their ratios, memory, and how far the features differ."""
    from ..encoders.registry import get_encoder

    enc = get_encoder(case.spec, cached=False)
    if int(enc.batch_size) != case.batch_size:
        enc.batch_size = case.batch_size  # same batches on both paths
    ours_out = enc.encode(case.items)  # warm: the model is built and first-call costs are paid on both paths
    bare_out = run_bare(case)
    diff = float(np.max(np.abs(ours_out - bare_out))) if ours_out.shape == bare_out.shape else float("inf")
    scale = float(np.max(np.abs(bare_out))) or 1.0
    wall: dict[str, list[float]] = {"bare": [], "anybind": []}
    cpu: dict[str, list[float]] = {"bare": [], "anybind": []}
    runs = {"bare": lambda: run_bare(case), "anybind": lambda: enc.encode(case.items)}
    for r in range(repeats):
        for name in (("bare", "anybind") if r % 2 == 0 else ("anybind", "bare")):
            t0, c0 = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    mem = {name: _memory(fn) for name, fn in runs.items()}
    n = len(case.items)
    return {
        "kind": case.kind, "name": case.kind if case.unit == "items" else f"{case.kind} ({case.unit})",
        "spec": case.spec, "n": n,
        "anybind/s": n / min(wall["anybind"]), "bare/s": n / min(wall["bare"]),
        "ratio": min(wall["bare"]) / min(wall["anybind"]),
        "paired": float(np.median([b / o for b, o in zip(wall["bare"], wall["anybind"])])),
        "cpu ratio": min(cpu["bare"]) / min(cpu["anybind"]),
        "py MiB anybind": mem["anybind"][0], "py MiB bare": mem["bare"][0],
        "RSS MiB anybind": mem["anybind"][1], "RSS MiB bare": mem["bare"][1],
        "max |diff|": diff, "equal": "yes" if diff <= RTOL * scale else "no",
    }


@task("encoders", "Per encoder kind (built-ins, hf/, onnx/, video:frames): items/s and peak memory of anybind's "
      "encode path against the bare forward of the same model on the same items, features checked equal")
def encoders_task(work: Path, cache=None, seed: int = 0, console=None, kinds: str = "all", scale: str = "1",
                  repeats: str = "5", video_image: str = "effnet") -> TaskResult:
    import torch

    from ..errors import AnybindError

    chosen = list(KINDS) if kinds.strip() in ("", "all") else [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise AnybindError(f"bench encoders: unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    if video_image not in ("effnet", "onnx"):
        raise AnybindError(f"bench encoders: video_image={video_image!r}; known: effnet, onnx")
    root = Path(work) / "encoders"
    rows, notes = [], []
    for kind in chosen:
        n = max(2, round(COUNTS[kind] * float(scale)))
        if console:
            console.print(f"encoders: {kind} ({n} items)", highlight=False)
        case = build_case(kind, root, n, seed + KINDS.index(kind), video_image)
        row = measure(case, int(repeats))
        rows.append(row)
        if case.note:
            notes.append(case.note)
    metrics: dict[str, float] = {}
    for r in rows:
        for k in ("anybind/s", "bare/s", "ratio", "paired", "cpu ratio", "py MiB anybind", "py MiB bare",
                  "RSS MiB anybind", "RSS MiB bare", "max |diff|"):
            metrics[f"{r['kind']}/{k}"] = float(r[k])
        metrics[f"{r['kind']}/equal"] = float(r["equal"] == "yes")
    notes.append(f"{repeats} interleaved rounds; ratio = best bare / best anybind wall time (goal >= 0.9), paired = "
                 "median over rounds, cpu ratio = the same with process CPU time (less moved by other processes); "
                 "py MiB = tracemalloc peak (torch buffers unseen), RSS MiB = resident peak above "
                 f"the call's start; torch threads {torch.get_num_threads()}; specs: "
                 + "; ".join(f"{r['kind']} = {r['spec']}" for r in rows))
    table = [{k: v for k, v in r.items() if k not in ("spec", "kind")} for r in rows]
    return TaskResult(metrics=metrics, table=table, notes=notes,
                      config={"kinds": chosen, "scale": float(scale), "repeats": int(repeats),
                              "video_image": video_image, "specs": {r["kind"]: r["spec"] for r in rows}})

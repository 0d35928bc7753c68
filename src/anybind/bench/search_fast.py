"""The ``search-scale`` bench's part for fast serving search (issue 21): quantised codes (int8, binary)
with exact rescoring and the in-memory HNSW graph, each searched through ``Index.search_vectors``
(metadata and hits included), recall@10 against exact search, queries/s one at a time and in one
batch, memory of the codes against the float vectors.  The graph's ``ef`` is the smallest whose recall on
separate tuning queries (never the test queries), less two standard errors, reaches the tuning target
(:meth:`Index.tune_memory_ann <anybind.index.Index.tune_memory_ann>`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .search_util import recall


def _ids(hits) -> np.ndarray:
    k = max((len(h) for h in hits), default=0)
    return np.array([[int(x.id) for x in h] + [-1] * (k - len(h)) for h in hits], np.int64)


def _qps(index, Q: np.ndarray, k: int, n_single: int) -> tuple[float, float, np.ndarray]:
    """(queries/s one per call over the first ``n_single``, queries/s in one call, the hits' ids)."""
    t0 = time.perf_counter()
    for q in Q[:n_single]:
        index.search_vectors(q[None], k=k)
    single = n_single / (time.perf_counter() - t0)
    best = float("inf")
    for _ in range(3):  # best of: the machine is shared
        t0 = time.perf_counter()
        hits = index.search_vectors(Q, k=k)
        best = min(best, time.perf_counter() - t0)
    return single, len(Q) / best, _ids(hits)


def fast_search(
    index, Q: np.ndarray, I_ex: np.ndarray, Qtune: np.ndarray, I_tune: np.ndarray, *, k: int = 10,
    n_single: int = 300, tune_target: float = 0.96, say: Callable[..., Any] = lambda *a, **kw: None,
    quant: bool = True,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics (``quant-int8/...``, ``quant-binary/...`` unless not ``quant``, ``memann/...``) and the
    settings chosen.  ``I_ex`` / ``I_tune``: exact top-``k`` row numbers (= ids) of ``Q`` / ``Qtune``."""
    from .search_util import PeakRSS, du

    m: dict[str, float] = {}
    cfg: dict[str, Any] = {}
    n_single = min(n_single, len(Q))
    kinds = (("int8", (2, 4, 8, 16), 0.995), ("binary", (10, 20, 50, 100, 200), tune_target)) if quant else ()
    for kind, factors, target in kinds:
        index.quantize(kind)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            index.warm_fast()  # makes the codes (one streamed pass over the table)
            m[f"quant-{kind}/build_s"] = time.perf_counter() - t0
        m[f"quant-{kind}/build_extra_gb"] = mem.extra_gb
        for r in factors:  # the fewest candidates rescored per hit reaching the target on the tuning queries
            index.quantize(kind, rescore=r)  # the codes are kept: only the factor changes
            if recall(_ids(index.search_vectors(Qtune, k=k)), I_tune) >= target:
                break
        cfg[f"quant-{kind}"] = {"rescore": r}
        single, batch, found = _qps(index, Q, k, n_single)
        mem_of = index.quant_memory()
        m.update({f"quant-{kind}/recall@10": recall(found, I_ex), f"quant-{kind}/qps_single": single,
                  f"quant-{kind}/qps_batch": batch, f"quant-{kind}/memory_ratio": mem_of["ratio"],
                  f"quant-{kind}/code_gb": mem_of["code_bytes"] / 2**30, f"quant-{kind}/rescore": float(r)})
        say(f"{kind} codes + rescoring {r}x k: recall@10 {m[f'quant-{kind}/recall@10']:.3f}, {mem_of['ratio']:.0f}x "
            f"less memory than float32, {single:.0f} q/s one by one, {batch:.0f} q/s batched")
    if quant:
        index.quantize(None)

    with PeakRSS() as mem:
        info = index.create_memory_ann()
    m["memann/build_s"], m["memann/build_extra_gb"] = info["build_seconds"], mem.extra_gb
    m["memann/graph_gb"] = du(index.path / "memann") / 2**30  # the graph and its slot list as saved
    with PeakRSS() as mem:  # serving: what the first searches add and searching
        tuned = index.tune_memory_ann(tune_target, k, queries=Qtune,  # saved with the index: searched at below
                                      truth=[[(str(j), "vec") for j in row] for row in I_tune])  # not computed again
    ef, m["memann/tune_recall@10"], m["memann/tune_recall@10_low"] = tuned.ef, tuned.recall, tuned.recall_low
    m["memann/serve_extra_gb"] = mem.extra_gb
    m["memann/rss_gb"] = mem.peak_gb  # the whole process while serving: vectors, metadata, graph
    cfg["memann"] = {**index.meta["memory_ann"]}
    m["memann/ef"] = float(ef)
    single, batch, found = _qps(index, Q, k, n_single)
    m.update({"memann/recall@10": recall(found, I_ex), "memann/qps_single": single, "memann/qps_batch": batch})
    say(f"in-memory ANN (hnswlib via Index.search_vectors): recall@10 {m['memann/recall@10']:.3f} at ef={ef}, "
        f"{single:.0f} q/s one by one, {batch:.0f} q/s batched, built in {m['memann/build_s']:.1f} s")
    return m, cfg


def interleaved_vs_hnswlib(index, h, Q: np.ndarray, k: int, n_single: int, threads: int,
                           rounds: int = 3) -> dict[str, float]:
    """Queries/s of the in-memory graph through ``Index.search_vectors`` (and one at a time through
    ``Index.search``: ``vs_hnswlib_search_single``; ``*_cpu``: by this thread's CPU time) and of a bare hnswlib index
    ``h`` (same M, ef_construction, ef) timed in alternating rounds, best of each: on a shared
    machine, measurements minutes apart are not comparable."""
    Qs = Q[:n_single]
    runs = {
        "ours_single": lambda: [index.search_vectors(q[None], k=k) for q in Qs],
        "ours_search": lambda: [index.search(q, k=k) for q in Qs],  # Index.search with a vector query
        "hnswlib_single": lambda: [h.knn_query(q[None], k=k, num_threads=1) for q in Qs],
        "ours_batch": lambda: index.search_vectors(Q, k=k),
        "hnswlib_batch": lambda: h.knn_query(Q, k=k, num_threads=threads),
    }
    best = dict.fromkeys(runs, np.inf)
    cpu = dict.fromkeys(runs, np.inf)  # this thread's CPU time: one query at a time runs in the calling thread
    for _ in range(rounds):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.thread_time() - c0)
    m = {f"memann/interleaved_qps_{mode}": (len(Qs) if mode == "single" else len(Q)) / best[f"ours_{mode}"]
         for mode in ("single", "batch")}
    m.update({f"memann/interleaved_hnswlib_qps_{mode}": (len(Qs) if mode == "single" else len(Q))
              / best[f"hnswlib_{mode}"] for mode in ("single", "batch")})
    for mode in ("single", "batch"):
        m[f"memann/vs_hnswlib_{mode}"] = best[f"hnswlib_{mode}"] / best[f"ours_{mode}"]
    m["memann/vs_hnswlib_search_single"] = best["hnswlib_single"] / best["ours_search"]
    # one query at a time by CPU time (hnswlib searches in the calling thread): on a machine shared with other
    # work the wall-clock ratio swings with the scheduler, the CPU time much less (not for batches: threads)
    m["memann/vs_hnswlib_single_cpu"] = cpu["hnswlib_single"] / cpu["ours_single"]
    m["memann/vs_hnswlib_search_single_cpu"] = cpu["hnswlib_single"] / cpu["ours_search"]
    return m

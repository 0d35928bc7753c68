"""The ``search-scale`` bench's part for LanceDB's own ANN (IVF + HNSW / PQ on disk): build, the cheapest
search settings reaching the tuning recall (tuned on separate queries), recall@10 against exact search,
queries/s one per call and 64 per call."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .search_util import PeakRSS, recall


def lance_ann(index, Q: np.ndarray, Qtune: np.ndarray, I_ex: np.ndarray, ours: dict[str, float], *,
              k: int, nq_ann: int, tune_target: float, say: Callable[..., Any]) -> tuple[str, dict, tuple]:
    """Adds the ``ann/*`` metrics to ``ours``; returns (the ANN kind, its build info, (nprobes, ef) chosen)."""
    ann_kind = os.environ.get("ANYBIND_SEARCH_ANN", "ivf_hnsw_sq")
    with PeakRSS() as mem:
        info = index.create_ann(ann_kind)
    ours["ann/build_s"] = info["build_seconds"]
    ours["ann/build_extra_gb"] = mem.extra_gb
    say(
        f"lancedb: write {ours['index/write_s']:.1f} s, ANN ({ann_kind}, {info['num_partitions']} partitions) "
        f"built in {ours['ann/build_s']:.1f} s"
    )
    # the search-time settings: the cheapest nprobes / ef reaching recall@10 >= 0.96 on the tuning queries
    tuned = index.tune_ann(tune_target, k, queries=Qtune)
    chosen = (tuned["nprobes"], tuned.get("ef"))
    ours["ann/nprobes"], ours["ann/ef"] = float(chosen[0]), float(chosen[1] or 0)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        index.lance_ann.search(Q[:nq_ann], k, None, with_vectors=False, batch=1)
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = index.lance_ann.search(Q[:nq_ann], k, None, with_vectors=False, batch=64)
        t_par = time.perf_counter() - t0
    found = np.array([[int(i) for i in t.column("id").to_pylist()] + [-1] * (k - t.num_rows) for t in res])
    ours["ann/recall@10"] = recall(found, I_ex[:nq_ann])
    ours["ann/qps_single"] = nq_ann / t_single
    ours["ann/qps_batch"] = nq_ann / t_par
    ours["ann/search_extra_gb"] = mem.extra_gb
    ours["ann/speedup_vs_exact_single"] = ours["ann/qps_single"] / ours["exact/qps_single"]
    ours["ann/speedup_vs_exact_batch"] = ours["ann/qps_batch"] / ours["exact/qps_batch"]
    say(
        f"lancedb ANN: recall@10 {ours['ann/recall@10']:.3f} at nprobes={chosen[0]} ef={chosen[1]}, "
        f"{ours['ann/qps_single']:.0f} q/s one by one ({ours['ann/speedup_vs_exact_single']:.1f}x exact), "
        f"{ours['ann/qps_batch']:.0f} q/s in batches of 64 ({ours['ann/speedup_vs_exact_batch']:.2f}x batched exact)"
    )
    # the helper an index user calls, on its own queries (perturbed stored vectors)
    rep = index.ann_recall(k=k, n_queries=100)
    ours["ann/helper_recall@10"] = rep["recall@10"]
    return ann_kind, info, chosen

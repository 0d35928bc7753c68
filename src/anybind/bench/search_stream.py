"""The ``search-scale`` bench's streamed part (``--opt only=lance``): a table larger than memory (10M x 256
floats are 10 GB) built and searched in bounded memory through LanceDB's disk-resident ANN.

The vectors are generated batch by batch with the seed (:func:`~.search_util.clustered_batches`), appended one
commit per batch (:meth:`Index.append_vector_batches <anybind.index.Index.append_vector_batches>`) while the
exact top-10 of the test and tuning queries is accumulated over the same batches
(:class:`~anybind.index.RunningTopK`): nothing holds the whole matrix, and the ground truth needs no second
pass.  The ANN's settings are tuned on the tuning queries' truth (``Index.tune_ann(truth=...)``: no
snapshot).  Peak memory is the process's (LanceDB works in its threads) sampled through every phase.
The rows differ from the in-memory part's at the same seed (queries are drawn before the rows here)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult
from .search_util import PeakRSS, clustered_batches, du, recall, rss


def streamed_lance(work: Path, n: int, nq: int, seed: int, say: Callable[..., Any], *, d: int = 256, k: int = 10,
                   n_tune: int = 200, chunk: int = 100_000, partitions: int | None = None,
                   sub_vectors: int | None = None, refine: int = 40, tune_target: float = 0.96) -> TaskResult:
    """Build (write + ANN) and search an ``n`` x ``d`` index in bounded memory; recall@``k`` against the exact
    top-``k`` accumulated while writing.  ``partitions``: the IVF partitions (default ``n // 40_000``, at least 16:
    LanceDB's k-means trains on 256 rows a partition, and sqrt(n) partitions at 10M would train ~65 TFLOP);
    ``sub_vectors`` (IVF-PQ; default ``d // 4``: 8 dims a code gave recall@10 0.77 at 30k rows) and ``refine``
    (candidates re-scored with the float vectors, times ``k``)."""
    from ..index import Index, RunningTopK

    kind = os.environ.get("ANYBIND_SEARCH_ANN", "ivf_pq")
    rng = np.random.default_rng(seed)
    clusters = max(16, n // 1000)
    C = rng.standard_normal((clusters, d), dtype=np.float32)
    Q = next(clustered_batches(nq, C, rng, chunk=nq))
    Qtune = next(clustered_batches(n_tune, C, rng, chunk=n_tune))
    truth = RunningTopK(np.vstack([Q, Qtune]), k)
    say(f"{n:,} x {d} vectors in {clusters} clusters, streamed in batches of {chunk:,}; {nq} queries + {n_tune} "
        f"for tuning, {kind}")
    root = Path(work) / "search-scale-stream"
    if root.exists():
        shutil.rmtree(root)
    m: dict[str, float] = {}
    t_gen = [0.0]
    every = max(1, n // 20 // chunk)  # a progress line every ~5%
    t_start = time.perf_counter()

    def batches():
        s = 0
        for X in clustered_batches(n, C, rng, chunk=chunk):
            t0 = time.perf_counter()
            truth.add(X)
            t_gen[0] += time.perf_counter() - t0
            yield np.arange(s, s + len(X)).astype(str), X
            s += len(X)
            if (s // chunk) % every == 0 or s == n:
                say(f"  {s:,} rows written, {time.perf_counter() - t_start:.0f} s, RSS {rss() / 2**30:.2f} GiB")

    with PeakRSS() as whole:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            index = Index.create(root / "index", dim=d, identity=f"bench:clustered-{d}", ann_threshold=min(n, 100_000))
            index.append_vector_batches(batches(), "vec", total=n)
            m["index/write_s"] = time.perf_counter() - t0 - t_gen[0]
        m["index/truth_s"] = t_gen[0]
        m["index/write_peak_gb"] = mem.peak_gb
        m["index/table_disk_gb"] = du(root / "index") / 2**30
        say(f"lancedb: {n:,} rows written in {m['index/write_s']:.0f} s (+{t_gen[0]:.0f} s exact top-{k}), "
            f"{m['index/table_disk_gb']:.2f} GB, peak RSS {mem.peak_gb:.2f} GiB")
        parts = partitions or max(16, n // 40_000)
        with PeakRSS() as mem:
            info = index.create_ann(kind, num_partitions=parts, num_sub_vectors=sub_vectors or d // 4,
                                    refine_factor=refine)
        m["ann/build_s"] = info["build_seconds"]
        m["ann/build_peak_gb"] = mem.peak_gb
        m["index/disk_gb"] = du(root / "index") / 2**30
        say(f"lancedb ANN ({kind}, {parts} partitions) built in {m['ann/build_s']:.0f} s, peak RSS "
            f"{mem.peak_gb:.2f} GiB; index on disk {m['index/disk_gb']:.2f} GB")
        _, I = truth.result()
        I_ex, I_tune = I[:nq], I[nq:]
        with PeakRSS() as mem:
            tuned = index.tune_ann(tune_target, k, queries=Qtune,
                                   truth=[[(str(j), "vec") for j in row] for row in I_tune])
            m["ann/nprobes"], m["ann/ef"] = float(tuned["nprobes"]), float(tuned.get("ef") or 0)
            t0 = time.perf_counter()
            index.lance_ann.search(Q, k, None, with_vectors=False, batch=1)
            t_single = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = index.lance_ann.search(Q, k, None, with_vectors=False, batch=64)
            t_batch = time.perf_counter() - t0
        m["ann/search_peak_gb"] = mem.peak_gb
    found = np.array([[int(i) for i in t.column("id").to_pylist()] + [-1] * (k - t.num_rows) for t in res])
    m["ann/recall@10"] = recall(found, I_ex)
    m["ann/tune_recall@10"] = tuned["recall@10"]
    m["ann/qps_single"] = nq / t_single
    m["ann/qps_batch"] = nq / t_batch
    m["peak_rss_gb"] = whole.peak_gb
    say(f"lancedb ANN: recall@10 {m['ann/recall@10']:.3f} at nprobes={tuned['nprobes']}, {m['ann/qps_single']:.0f} "
        f"q/s one by one, {m['ann/qps_batch']:.0f} q/s in batches of 64; peak RSS {whole.peak_gb:.2f} GiB")
    del index
    notes = [
        f"target peak memory < 4 GB while writing, building the ANN and searching: "
        f"{'met' if whole.peak_gb < 4 else 'NOT met'} ({whole.peak_gb:.2f} GiB)",
        "streamed (only=lance): rows generated and appended batch by batch, the exact top-10 of the queries "
        "accumulated over the same batches (write_s excludes it: truth_s); *_peak_gb = the process's peak RSS "
        "in that phase; ANN settings tuned on separate queries (mean recall less 2 SE >= 0.96)",
    ]
    return TaskResult(
        metrics=m,
        baselines={},
        config={"n": n, "dim": d, "queries": nq, "tune_queries": n_tune, "clusters": clusters, "k": k,
                "chunk": chunk, "ann": info, "ann_search": {"nprobes": tuned["nprobes"], "ef": tuned.get("ef")}},
        notes=notes,
    )

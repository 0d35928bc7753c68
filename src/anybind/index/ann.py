"""Approximate search through LanceDB: :class:`LanceAnn` builds the table's ANN index (IVF-HNSW-SQ or
IVF-PQ), queries it, and measures its recall and speed against exact search."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics import mean_and_lower_bound
from .errors import IndexError_
from .exact import exact_topk
from .store import ANN_TYPES, sql_str, sql_where
from .table import IndexTable
from .tuning import check_target, sample_queries, unit_queries

if TYPE_CHECKING:
    import pyarrow as pa


class LanceAnn:
    """The LanceDB ANN index of one index's table (its settings live in ``meta["ann"]``)."""

    def __init__(self, t: IndexTable) -> None:
        self.t = t

    def create(
        self,
        kind: str = "ivf_hnsw_sq",
        *,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        m: int = 16,
        ef_construction: int = 100,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        ef: int | None = None,
    ) -> dict[str, Any]:
        """Build the ANN index over the vector column, replacing any previous one (see :meth:`Index.create_ann
        <anybind.index.Index.create_ann>`)."""
        with self.t.write_txn():  # the writer lock: the rows it is trained on and index.json stay ours
            return self._create(kind, num_partitions, num_sub_vectors, m, ef_construction, nprobes,
                                refine_factor, ef)

    def _create(
        self, kind, num_partitions, num_sub_vectors, m, ef_construction, nprobes, refine_factor, ef
    ) -> dict[str, Any]:
        from lancedb.index import IvfHnswSq, IvfPq

        kind = kind.lower().replace("-", "_")
        n = self.t.count()
        if n < 256:
            raise IndexError_(
                f"an ANN index needs at least 256 rows to train on (this index has {n}); exact search is used"
            )
        if kind == "ivf_hnsw_sq":
            parts = num_partitions or max(1, n // 250_000)
            cfg = IvfHnswSq(distance_type="dot", num_partitions=parts, m=m, ef_construction=ef_construction)
            search = {"nprobes": nprobes or min(parts, 4), "ef": ef or 128, "refine_factor": refine_factor}
        elif kind == "ivf_pq":
            parts = num_partitions or max(1, int(np.sqrt(n)))
            sub = num_sub_vectors or max(1, self.t.dim // 8)
            while self.t.dim % sub:
                sub -= 1
            cfg = IvfPq(distance_type="dot", num_partitions=parts, num_sub_vectors=sub)
            search = {
                "nprobes": nprobes or max(20, parts // 20),
                "refine_factor": 10 if refine_factor is None else refine_factor,
                "ef": None,
            }
        else:
            raise ValueError(f"unknown ANN kind {kind!r} (use one of {', '.join(ANN_TYPES)})")
        t0 = time.perf_counter()
        self.t.table.create_index("vector", config=cfg, replace=True)
        self.t.meta["ann"] = {
            "type": kind,
            "num_partitions": parts,
            "rows": n,
            "search": search,
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        self.t.save_meta()
        return self.t.meta["ann"]

    def set_search_defaults(self, **params: Any) -> dict[str, Any]:
        """Store query-time defaults (``nprobes``, ``refine_factor``, ``ef``) with the ANN index, e.g. after
        tuning them with :meth:`search`; returns the stored settings."""
        with self.t.write_txn():
            ann = self.t.meta.get("ann")
            if not ann:
                raise IndexError_("no ANN index: build one with create_ann() (or `anybind index --ann always`)")
            ann.setdefault("search", {}).update(params)
            self.t.save_meta()
            return dict(ann["search"])

    def uses(self, exact: bool | None = None) -> bool:
        if exact is True:
            return False
        has = bool(self.t.meta.get("ann"))
        if exact is False:
            if not has:
                raise IndexError_(
                    "no ANN index: build one with create_ann() (or `anybind index --ann always`)"
                )
            return True
        return has and self.t.count() >= self.t.ann_threshold

    def search(
        self,
        Q: np.ndarray,
        k: int,
        where: str | None,
        *,
        with_vectors: bool = True,
        batch: int = 64,
        **params,
    ) -> list["pa.Table"]:
        """ANN top-``k`` per query vector, ``batch`` queries per LanceDB call (a multi-vector query:
        several times faster than one call per query).  Each result holds the metadata columns,
        ``vector`` (when ``with_vectors``) and ``score``, best first."""
        import pyarrow as pa
        import pyarrow.compute as pc

        sp = dict((self.t.meta.get("ann") or {}).get("search") or {})
        sp.update({k_: v for k_, v in params.items() if v is not None})
        cols = ["id", "modality", "source", "labels", "label_pairs", "key"] + (
            ["vector"] if with_vectors else []
        )
        out: list[pa.Table] = []
        for s0 in range(0, len(Q), batch):
            part = np.asarray(Q[s0 : s0 + batch], np.float32)
            b = self.t.table.search(list(part) if len(part) > 1 else part[0]).distance_type("dot").limit(k)
            if sp.get("nprobes"):
                b = b.nprobes(int(sp["nprobes"]))
            if sp.get("refine_factor"):
                b = b.refine_factor(int(sp["refine_factor"]))
            if sp.get("ef"):
                b = b.ef(int(sp["ef"]))
            if where:
                b = b.where(where, prefilter=True)
            t = b.select(cols + ["_distance"]).to_arrow()
            score = pa.array(1.0 - t.column("_distance").to_numpy(zero_copy_only=False), pa.float32())
            t = t.append_column("score", score)
            if len(part) == 1:
                groups = [t]
            else:
                qi = t.column("query_index").to_numpy(zero_copy_only=False)
                groups = [t.filter(pa.array(qi == j)) for j in range(len(part))]
            for g in groups:
                sc = g.column("score").to_numpy(zero_copy_only=False)
                if len(sc) > 1 and np.any(np.diff(sc) > 0):  # LanceDB returns each query's rows best first
                    g = g.take(pc.sort_indices(g, sort_keys=[("score", "descending")]))
                out.append(g.select(cols + ["score"]))
        return out

    def _checked_truth(self, truth: Sequence[Iterable[tuple[str, str]]], k: int,
                       modality: str | None) -> list[set[tuple[str, str]]]:
        """``truth`` as one set of (id, modality) pairs per query, refused (the first bad query named) unless each
        lists at most ``k`` pairs of strings, none twice, of the tuning's ``modality`` (or the index's), held by the
        index: any other truth scores recall 0 at every setting and tunes to the slowest one in silence."""
        want = []
        for i, g in enumerate(truth):
            pairs = list(g)
            for e, p in enumerate(pairs):
                if not (isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
                    raise IndexError_(f"truth of query {i}: entry {e} is {p!r}, not an (id, modality) pair of strings")
            want.append({(str(a), str(b)) for a, b in pairs})
            if len(want[i]) < len(pairs):  # the set would drop it in silence: recall measured against fewer rows
                rid, m = next(p for e, p in enumerate(pairs) if tuple(p) in {tuple(q) for q in pairs[:e]})
                raise IndexError_(f"truth of query {i} lists id {rid!r} ({m}) twice: the exact top-{k} names each "
                                  "row once")
            if len(want[i]) > k:
                raise IndexError_(f"truth of query {i} lists {len(want[i])} rows: the exact top-{k} expected")
            for _, m in sorted(want[i]):
                if modality is not None and m != modality:
                    raise IndexError_(f"truth of query {i} names modality {m!r}: the tuning searches modality "
                                      f"{modality!r} only")
                if m not in self.t.modalities:
                    raise IndexError_(f"truth of query {i} names modality {m!r}: this index holds "
                                      f"{', '.join(self.t.modalities) or 'nothing'}")
        missing = self._missing({p for w in want for p in w})
        if missing:
            i, (rid, m) = next((i, p) for i, w in enumerate(want) for p in sorted(w) if p in missing)
            raise IndexError_(f"truth of query {i} names id {rid!r} ({m}), which this index does not hold")
        return want

    def _missing(self, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (id, modality) ``pairs`` the table does not hold (read 500 ids a query, not the table)."""
        missing = set()
        for m in sorted({m for _, m in pairs}):
            ids = sorted(i for i, mm in pairs if mm == m)
            for s in range(0, len(ids), 500):
                chunk = ids[s : s + 500]
                where = f"modality = {sql_str(m)} AND id IN ({', '.join(sql_str(i) for i in chunk)})"
                got = self.t.table.search().where(where).select(["id"]).limit(None).to_arrow().column("id")
                missing |= {(i, m) for i in set(chunk) - set(got.to_pylist())}
        return missing

    def _queries(self, snap: Any, rows: np.ndarray | None, queries: np.ndarray | None, n_queries: int,
                 noise: float, seed: int) -> np.ndarray:
        """``queries`` as unit rows, or ``n_queries`` stored vectors (of ``rows``) perturbed by Gaussian noise of
        norm ~``noise`` and renormalised (:func:`.tuning.sample_queries`)."""
        if queries is not None:
            return unit_queries(queries, self.t.dim)
        return sample_queries(snap.vectors, n_queries, noise, seed, rows)

    def recall(
        self,
        k: int = 10,
        n_queries: int = 200,
        *,
        queries: np.ndarray | None = None,
        modality: str | None = None,
        noise: float = 0.5,
        seed: int = 0,
        **ann_params,
    ) -> dict[str, float]:
        """Recall@k of the ANN index against exact search, and both speeds, on the same queries.

        Queries default to ``n_queries`` stored vectors (of ``modality``, if given)
        perturbed with Gaussian noise of norm ~``noise`` and renormalised, so that
        no query is its own trivial nearest neighbour.  Both searches are timed
        one query at a time (``*_qps_single``) and batched (``*_qps_batch``: one
        matmul for exact, multi-vector LanceDB queries for ANN).
        """
        snap = self.t.snapshot()
        rows = snap.rows_where([modality] if modality else None, {})
        Q = self._queries(snap, rows, queries, n_queries, noise, seed)
        t0 = time.perf_counter()
        _, gt = exact_topk(Q, snap.vectors, k, rows=rows)
        t_exact_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in Q[: min(len(Q), 50)]:
            exact_topk(q[None], snap.vectors, k, rows=rows)
        t_exact_single = (time.perf_counter() - t0) / min(len(Q), 50)
        where = sql_where([modality] if modality else None, {})
        ids_mod = list(zip(snap.meta.column("id").to_pylist(), snap.modality))
        t0 = time.perf_counter()
        res = self.search(Q, k, where, with_vectors=False, **ann_params)
        t_ann = (time.perf_counter() - t0) / len(Q)
        n1 = min(len(Q), 50)
        t0 = time.perf_counter()
        self.search(Q[:n1], k, where, with_vectors=False, batch=1, **ann_params)
        t_ann_single = (time.perf_counter() - t0) / n1
        rec = []
        for i, t in enumerate(res):
            got = set(zip(t.column("id").to_pylist(), t.column("modality").to_pylist()))
            want = {ids_mod[j] for j in gt[i]}
            rec.append(len(got & want) / max(1, len(want)))
        return {
            f"recall@{k}": float(np.mean(rec)),
            "ann_qps_single": 1.0 / t_ann_single,
            "ann_qps_batch": 1.0 / t_ann,
            "exact_qps_single": 1.0 / t_exact_single,
            "exact_qps_batch": len(Q) / t_exact_batch,
            "speedup_single": t_exact_single / t_ann_single,
            "speedup_batch": t_exact_batch / len(Q) / t_ann,
            "n_queries": int(len(Q)),
            "rows": int(len(snap.vectors)),
        }

    def tune(
        self,
        target_recall: float = 0.96,
        k: int = 10,
        n_queries: int = 200,
        *,
        queries: np.ndarray | None = None,
        modality: str | None = None,
        noise: float = 0.5,
        seed: int = 0,
        save: bool = True,
        z: float = 2.0,
        truth: "Sequence[Iterable[tuple[str, str]]] | None" = None,
    ) -> dict[str, Any]:
        """The cheapest query-time settings (``nprobes``, and ``ef`` for an HNSW-in-IVF index) whose recall@k
        against exact search reaches ``target_recall`` on tuning queries with a margin for their sampling error
        (the mean recall less ``z`` standard errors of it, ``recall@k_low``: a mean just at the target leaves
        about even odds that other queries fall below it; ``z=0`` judges the mean), stored as the index's search
        defaults (unless ``save=False``).  Queries are ``queries`` or, as in :meth:`recall`, ``n_queries`` stored
        vectors perturbed by noise.  When no setting reaches the target, the most thorough one tried is kept and
        ``reached`` is false.  Returns the chosen settings, their recall, and every setting tried (``tried``).
        ``truth``: each of ``queries``' exact top-``k`` as (id, modality) pairs, computed elsewhere (in blocks, for
        a table larger than memory): the table is then not loaded into memory."""
        ann = self.t.meta.get("ann")
        if not ann:
            raise IndexError_("no ANN index: build one with create_ann() (or `anybind index --ann always`)")
        check_target(target_recall, z)
        self.t.check_targets(modality)
        if truth is not None:
            if queries is None or len(truth) != len(np.atleast_2d(queries)):
                raise IndexError_("truth needs the queries it belongs to, one top-k list per query")
            Q, want = unit_queries(queries, self.t.dim), self._checked_truth(truth, k, modality)
        else:
            snap = self.t.snapshot()
            rows = snap.rows_where([modality] if modality else None, {})
            Q = self._queries(snap, rows, queries, n_queries, noise, seed)
            _, gt = exact_topk(Q, snap.vectors, k, rows=rows)
            ids_mod = list(zip(snap.meta.column("id").to_pylist(), snap.modality))
            want = [{ids_mod[j] for j in g} for g in gt]
        where = sql_where([modality] if modality else None, {})
        parts = max(1, int(ann.get("num_partitions") or 1))
        probes = sorted({min(p, parts) for p in (1, 2, 4, 8, 16, 32, 64, 128)})
        efs = (64, 128, 256) if ann.get("type") == "ivf_hnsw_sq" else (None,)
        tried: list[dict[str, Any]] = []
        for p in probes:
            for e in efs:
                params = {"nprobes": p} | ({"ef": e} if e else {})
                res = self.search(Q, k, where, with_vectors=False, **params)
                r = np.array([
                    len(set(zip(t.column("id").to_pylist(), t.column("modality").to_pylist())) & w) / max(1, len(w))
                    for t, w in zip(res, want)
                ])
                mean, low = mean_and_lower_bound(r, z)
                tried.append({**params, f"recall@{k}": mean, f"recall@{k}_low": low})
                if tried[-1][f"recall@{k}_low"] >= target_recall:
                    break
            if tried[-1][f"recall@{k}_low"] >= target_recall:
                break
        best = {key: v for key, v in tried[-1].items() if key in ("nprobes", "ef")}
        if save:
            self.set_search_defaults(**best)
        last = tried[-1]
        return {**best, f"recall@{k}": last[f"recall@{k}"], f"recall@{k}_low": last[f"recall@{k}_low"],
                "reached": last[f"recall@{k}_low"] >= target_recall, "tried": tried}

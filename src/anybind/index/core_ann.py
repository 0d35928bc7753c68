"""The approximate-search settings of an index, one part of :class:`~anybind.index.Index` (``index.ann``):
:class:`AnnManager`, given the two parts it works through, the LanceDB ANN index (:class:`.ann.LanceAnn`) and the
in-memory graph and quantised codes (:class:`.fast.FastSearch`).  The index's methods of the same names
(``Index.create_ann``, ``Index.tune_ann``, ...) call it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .tuning import EF_GRID, EfTuning

if TYPE_CHECKING:
    from .ann import LanceAnn
    from .fast import FastSearch


class AnnManager:
    """Build, tune and warm an index's approximate search: ``lance`` (the LanceDB ANN index) and ``fast`` (the
    in-memory graph and the quantised codes), the same parts the index's searcher uses."""

    def __init__(self, lance: LanceAnn, fast: FastSearch) -> None:
        self.lance, self.fast = lance, fast

    def create_ann(
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
        """Build an ANN index over the vector column (replacing any previous one).

        kind: ``"ivf_hnsw_sq"`` (IVF partitions, an HNSW graph over 8-bit scalar-quantised vectors in each) or
            ``"ivf_pq"`` (IVF + product quantisation; pair it with ``refine_factor`` to re-score candidates with
            the full vectors).  nprobes / refine_factor / ef: the query-time defaults stored with the index."""
        return self.lance.create(kind, num_partitions=num_partitions, num_sub_vectors=num_sub_vectors, m=m,
                                ef_construction=ef_construction, nprobes=nprobes, refine_factor=refine_factor, ef=ef)

    def uses_ann(self, exact: bool | None = None) -> bool:
        """Whether a search with this ``exact`` goes to the LanceDB ANN index."""
        return self.lance.uses(exact)

    def ann_recall(self, k: int = 10, n_queries: int = 200, *, queries: np.ndarray | None = None,
                   modality: str | None = None, noise: float = 0.5, seed: int = 0, **ann_params) -> dict[str, float]:
        """Recall@k of the ANN index against exact search, and both speeds, on the same queries
        (see :meth:`LanceAnn.recall <anybind.index.ann.LanceAnn.recall>`)."""
        return self.lance.recall(k, n_queries, queries=queries, modality=modality, noise=noise, seed=seed,
                                **ann_params)

    def tune_ann(self, target_recall: float = 0.96, k: int = 10, n_queries: int = 200, *, queries: np.ndarray
                 | None = None, modality: str | None = None, save: bool = True, z: float = 2.0,
                 truth: Sequence[Iterable[tuple[str, str]]] | None = None) -> dict[str, Any]:
        """The cheapest ANN settings reaching ``target_recall``, with a margin, saved (:meth:`.ann.LanceAnn.tune`)."""
        return self.lance.tune(target_recall, k, n_queries, queries=queries, modality=modality, save=save, z=z,
                              truth=truth)

    def create_memory_ann(self, *, M: int = 16, ef_construction: int = 100, ef: int = 64,
                          threads: int = 1) -> dict[str, Any]:
        """Build the in-memory HNSW graph over every row and save it in the index folder (``memann/``).
        ``threads``: 1 (default) builds the same graph every time; -1 (all cores) or N is faster on an idle
        many-core machine but not reproducible (saved with the index: later syncs insert the same way)."""
        return self.fast.create_memory_ann(M=M, ef_construction=ef_construction, ef=ef, threads=threads)

    def update_memory_ann(self) -> tuple[int, int]:
        """Bring the saved graph up to the table's latest version (rows added / deleted since); the
        writer calls this under its lock (``Index.build`` does).  Returns (inserted, deleted)."""
        return self.fast.update_memory_ann()

    def set_memory_ann_ef(self, ef: int) -> None:
        """The in-memory graph's search breadth (candidates kept while searching; more: higher recall,
        slower), saved with the index."""
        self.fast.set_memory_ann_ef(ef)

    def tune_memory_ann(self, target_recall: float = 0.95, k: int = 10, n_queries: int = 200, *,
                        queries: np.ndarray | None = None, noise: float = 0.5, seed: int = 0, z: float = 2.0,
                        grid: Sequence[int] = EF_GRID, save: bool = True,
                        truth: Sequence[Iterable[tuple[str, str]]] | None = None) -> EfTuning:
        """Tune the in-memory graph's ``ef``: the smallest of ``grid`` whose recall@``k`` against exact search on
        tuning queries, less ``z`` standard errors, reaches ``target_recall``; saved with the index (a later
        :meth:`open <anybind.index.Index.open>` searches at it) unless ``save=False``.  The tuning queries are
        ``queries`` or ``n_queries`` of the index's own rows drawn by ``seed`` and perturbed by noise of norm
        ~``noise`` -- never pass test queries.  Returns an :class:`~anybind.index.tuning.EfTuning` (``ef``,
        ``recall``, ``recall_low``, ``reached``, every ``ef`` ``tried``); when none of ``grid`` reaches the target,
        the largest is kept and ``reached`` is false.  ``truth``: ``queries``' exact top-``k`` as (id, modality)
        pairs, when the caller has them (as :meth:`tune_ann` takes them): not computed again."""
        return self.fast.tune_memory_ann(target_recall, k, n_queries, queries=queries, noise=noise, seed=seed, z=z,
                                          grid=grid, save=save, truth=truth)

    def quantize(self, kind: str | None, *, rescore: int | None = None) -> dict[str, Any] | None:
        """Search int8 or binary codes in memory and rescore the top ``rescore * k`` candidates with
        the float vectors (``None``: stop).  The codes are made on the first search after this."""
        return self.fast.quantize(kind, rescore=rescore)

    def quant_memory(self) -> dict[str, float]:
        """Bytes of the quantised codes in memory and of the float vectors they stand for."""
        return self.fast.quant_memory()

    def warm_fast(self) -> None:
        """Load the in-memory graph (brought to the table's version) or make the quantised codes now,
        not on the first search (the service calls this at start); nothing when searches would not use them."""
        self.fast.warm()

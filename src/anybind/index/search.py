"""Searching: :class:`Searcher` answers one (possibly fused) :class:`~.query.Query`
(:meth:`~Searcher.search`) or a batch of vectors (:meth:`~Searcher.search_vectors`), taking candidates
from the fast in-memory search (:mod:`.fast`), the LanceDB ANN (:mod:`.ann`) or exact search, in that
order, and re-ranking them (:mod:`.banks`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .ann import LanceAnn
from .banks import Reranker
from .calibrated import check_rank_by, query_modality, rank_hits
from .errors import QueryError
from .exact import exact_topk, unit_rows
from .fast import FastSearch
from .query import Query, QueryEmbedder, check_k, raw_direction
from .results import Hit
from .store import HitColumns, label_filter, sql_where
from .table import IndexTable

if TYPE_CHECKING:
    import pyarrow as pa

    from ..cache import FeatureCache


class Searcher:
    """The search side of one index: the table handle, the query embedder and the two approximate searches."""

    def __init__(self, t: IndexTable, embedder: QueryEmbedder, fast: FastSearch, ann: LanceAnn) -> None:
        self.t = t
        self.embedder = embedder
        self.fast = fast
        self.ann = ann
        self.reranker = Reranker(t, ann)

    def search(
        self,
        q: Query | np.ndarray,
        *,
        targets: list[str] | None,
        k: int,
        labels: dict[str, list[str]],
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        rank_by: str = "score",
        **ann_params,
    ) -> list[Hit]:
        """Up to ``k`` hits for ``q``, best first (``k``, ``targets`` and ``labels`` already checked:
        see :meth:`Index.search <anybind.index.Index.search>`)."""
        space = self.t.space
        # one raw vector (as Index.search passes it, or in a Query): nothing to embed, fuse or rank by probability
        # (the lane below, fewer calls); k, targets and labels are checked, the vector is checked as Query.of
        # checks it, and normalised to the same bits as the general path (see raw_direction)
        raw = q if type(q) is np.ndarray else (
            q.vectors[0] if len(q.vectors) == 1 and not q.items and q.weights is None else None)
        cosine = space is None or space.scorer.kind == "cosine"
        if raw is not None and rerank is None and rank_by == "score" and cosine:
            Q = raw_direction(raw, self.t.dim)
            return self._search(Q, targets, k, labels, None, None, None, exact, k, 0, ann_params)[0]
        if type(q) is np.ndarray:
            q = Query.of(q, dim=self.t.dim)
        parts, w, qmods = self.embedder.parts(q, cache)
        bank = query_bank if query_bank is not None else (qmods or None)
        kw = dict(k=k, labels=labels, rerank=rerank, rerank_params=rerank_params, query_bank=bank, exact=exact)
        qmod = query_modality(space, qmods, q.has_vector, rerank)
        rank_by = check_rank_by(rank_by, qmod, space)
        if space is None or (space.scorer.kind == "cosine" and rank_by == "score"):
            v, _ = self.embedder.fuse(parts, w, None)
            hits = self.search_vectors(v[None], modality=targets, **kw, **ann_params)[0]
            # no probabilities to add: the hits are already ranked by score (what rank_hits would do)
            return hits if qmod is None else rank_hits(space, hits, qmod, k)
        # a Symile space scores MIP(query..., candidate, missing...): the query depends on the candidates'
        # modality, so one search per target modality, each hit scored by the MIP itself, merged (by score, or
        # by calibrated probability: rank_by="probability", see anybind.index.calibrated)
        hits: list[Hit] = []
        for t in targets or sorted(self.t.counts()):
            v, scale = self.embedder.fuse(parts, w, t)
            found = self.search_vectors(v[None], modality=t, **kw, **ann_params)[0]
            hits += [replace(h, score=h.score * scale) for h in found]
        return rank_hits(space, hits, qmod, k, rank_by)

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        rerank_pool: int = 1000,
        bank_size: int = 4096,
        **ann_params,
    ) -> list[list[Hit]]:
        """One hit list per query vector (see :meth:`Index.search_vectors <anybind.index.Index.search_vectors>`)."""
        k = check_k(k)
        method = None
        if rerank is not None:
            from .. import rerank as rr

            try:
                method = rr.check_method(rerank)
            except DataError as e:
                raise QueryError(str(e)) from None
        Q = np.asarray(queries, np.float32)
        if Q.ndim < 2:  # np.atleast_2d, without its Python layer
            Q = Q.reshape(1, -1)
        Q = unit_rows(Q)
        if Q.shape[1] != self.t.dim:
            raise QueryError(f"queries of width {Q.shape[1]}: this index holds {self.t.dim}-d vectors")
        targets = self.t.check_targets(modality) if modality is not None else None
        lab = label_filter(labels) if labels else {}  # (what label_filter gives for none, without the call)
        return self._search(Q, targets, k, lab, method, rerank_params, query_bank, exact, rerank_pool, bank_size,
                            ann_params)

    def _search(self, Q, targets, k, lab, method, rerank_params, query_bank, exact, rerank_pool, bank_size,
                ann_params) -> list[list[Hit]]:
        """:meth:`search_vectors` past its checks (``Q``: unit rows, ``method``: a checked rerank or ``None``)."""
        graph = True
        if method is None and targets is None and not lab and len(Q) == 1:  # one query, no filter: the graph's lane
            found = self.fast.graph_one(Q, k, exact)  # (its rows are never pads: k is within the live rows)
            if found:
                return _hit_lists(found[0].hit_columns(), [found[1]], [found[2]])
            graph = found is None  # False: the graph gave up, not searched again
        pool = k if method is None else max(k, rerank_pool)
        if method is None:  # the in-memory graph or codes: hits straight from the row numbers
            found = self.fast.rows(Q, pool, targets, lab, exact, graph)
            if found is not None:
                return hits_of_rows(found[0].hit_columns(), found[2], found[3], ordered=True)
        cands = self.candidates(Q, pool, targets, lab, exact, with_vectors=method is not None,
                                fast=method is not None, **ann_params)
        if method is not None:
            cands = self.reranker.rerank(method, Q, cands, targets, lab, rerank_params, query_bank, bank_size, exact)
        return hits_of_candidates(cands, k)

    def candidates(
        self, Q, pool, targets, lab, exact, with_vectors=True, fast=True, **ann_params
    ) -> list[tuple["pa.Table", np.ndarray]]:
        """Per query: (candidate rows with metadata (+ ``vector``), their raw scores); ``fast=False``: the
        in-memory graph and codes were asked already (and did not answer)."""
        import pyarrow as pa

        found = self.fast.candidates(Q, pool, targets, lab, exact, with_vectors) if fast else None
        if found is not None:  # the in-memory graph / codes
            return found
        if self.ann.uses(exact):
            res = self.ann.search(Q, pool, sql_where(targets, lab), with_vectors=with_vectors, **ann_params)
            return [(t, t.column("score").to_numpy(zero_copy_only=False).astype(np.float32)) for t in res]
        snap = self.t.snapshot()
        rows = snap.rows_where(targets, lab)
        S, idx = exact_topk(Q, snap.vectors, pool, rows=rows)
        out = []
        for s, i in zip(S, idx):
            t = snap.meta.take(pa.array(i, pa.int64()))
            if with_vectors:
                V = pa.FixedSizeListArray.from_arrays(pa.array(snap.vectors[i].reshape(-1)), self.t.dim)
                t = t.append_column("vector", V)
            out.append((t, s))
        return out


def hits_of_candidates(cands: list[tuple["pa.Table", np.ndarray]], k: int) -> list[list[Hit]]:
    """Per query, the best ``k`` hits of its candidate rows (an Arrow table with the hit columns) and their
    scores: the general way, for any candidates (the fast one, :func:`hits_of_rows`, must give the same)."""
    out = []
    for t, scores in cands:
        order = np.argsort(-scores, kind="stable")[:k]
        ids = t.column("id").to_pylist()
        mods = t.column("modality").to_pylist()
        srcs = t.column("source").to_pylist()
        labs = t.column("labels").to_pylist()
        out.append([Hit(ids[j], mods[j], float(scores[j]), srcs[j], _labels(labs[j]), r + 1)
                    for r, j in enumerate(order)])
    return out


def hits_of_rows(cols: HitColumns, S: np.ndarray, R: np.ndarray, ordered: bool = False) -> list[list[Hit]]:
    """Per query, the hits of rows ``R`` (-1: padding) scored ``S``, best first, from a snapshot's
    :meth:`~.store.Snapshot.hit_columns`: no table read or Arrow take per query.  ``ordered``: the caller
    vouches that each row of ``S`` is best first already (the graph's and the codes' are)."""
    # no pads: for a few rows in plain Python (right after a graph search a numpy reduction costs several
    # microseconds: its caches are cold), else R.min() without its Python layer
    if R.size <= 256:
        rows = R.tolist()
        if not R.size or min(min(r) for r in rows) >= 0:
            if ordered or S.shape[1] < 2 or bool((S[:, :-1] >= S[:, 1:]).all()):
                return _hit_lists(cols, S.tolist(), rows)
    elif np.minimum.reduce(R, axis=None) >= 0 and (ordered or bool((S[:, :-1] >= S[:, 1:]).all())):
        return _hit_lists(cols, S.tolist(), R.tolist())
    out = []
    for s, r in zip(S, R):  # one query at a time: pads dropped, best first (stable: ties keep their order)
        ok = r >= 0
        order = np.argsort(-s[ok], kind="stable")
        out += _hit_lists(cols, [s[ok][order].tolist()], [r[ok][order].tolist()])
    return out


def _hit_lists(cols: HitColumns, S: list[list[float]], R: list[list[int]]) -> list[list[Hit]]:
    """The hits of rows ``R`` (no pads) scored ``S`` (best first), as lists: one C call per field of a query
    (right after a graph search the interpreter's caches are cold, and each numpy call costs several times its
    usual)."""
    ids, mods, srcs, labs = cols
    loads = json.loads
    out = []
    for s_row, r_row in zip(S, R):
        if len(r_row) < 2:  # (itemgetter of one row gives the value, not a 1-tuple)
            out.append([Hit(ids[r], mods[r], sc, srcs[r], {} if not (lab := labs[r]) or lab == "{}" else loads(lab), j)
                        for j, (sc, r) in enumerate(zip(s_row, r_row), 1)])
            continue
        get = itemgetter(*r_row)  # each field's values in one C call, the hits made by map: less bytecode per hit
        out.append(list(map(Hit, get(ids), get(mods), s_row, get(srcs),
                            [{} if not lab or lab == "{}" else loads(lab) for lab in get(labs)],
                            range(1, len(r_row) + 1))))
    return out


def _labels(s: str | None) -> dict[str, Any]:
    """A row's labels from their JSON (most rows have none: no parse for those)."""
    return {} if not s or s == "{}" else json.loads(s)

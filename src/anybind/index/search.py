"""Searching: :meth:`~SearchMixin.search` (one possibly fused query),
:meth:`~SearchMixin.search_vectors` (a batch of vectors), candidate retrieval (exact or ANN)
and re-ranking (CSLS, QB-Norm, InvGC) with banks drawn from the index."""

from __future__ import annotations

import json
from dataclasses import replace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .errors import QueryError
from .calibrated import check_rank_by, query_modality, rank_hits
from .exact import unit_rows, exact_topk
from .query import check_k
from .results import Hit
from .store import label_filter, sql_str, vectors_of

if TYPE_CHECKING:
    import pyarrow as pa

    from ..cache import FeatureCache


class SearchMixin:
    """:class:`~anybind.index.Index` search methods (mixed into ``Index``)."""

    def search(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        rank_by: str = "score",
        **ann_params,
    ) -> list[Hit]:
        """Search with one (possibly fused) query; returns up to ``k`` hits, best first.

        modality: only return items of this modality (or these); default any.
        labels: ``{"category": "animals"}`` or ``["category=animals"]``; every key must
            match (a list of values matches any of them).
        rerank: ``"csls"``, ``"qbnorm"`` or ``"invgc"`` (see :mod:`anybind.rerank`).  The
            query bank is the indexed items of the query's modalities (or ``query_bank``:
            vectors, or modality names); the gallery bank is the searched items.
        exact: force exact (``True``) or ANN (``False``) search; default: ANN when the
            index has one and at least ``ann_threshold`` rows.
        rank_by: ``"score"``, or ``"probability"`` (a calibrated space, a one-modality query): hits of every
            modality ranked by their calibrated ``P(match)`` (see :mod:`anybind.index.calibrated`).
        ann_params: ``nprobes``, ``refine_factor``, ``ef`` overrides for ANN search.
        """
        k = check_k(k)
        targets = self._check_targets(modality)
        lab = label_filter(labels)
        parts, w, qmods = self.query_parts(
            query, text=text, image=image, audio=audio, inputs=inputs, weights=weights, cache=cache
        )
        bank = query_bank if query_bank is not None else (qmods or None)
        kw = dict(k=k, labels=lab, rerank=rerank, rerank_params=rerank_params, query_bank=bank, exact=exact)
        qmod = query_modality(self.space, qmods, any(m is None for m, _ in parts), rerank)
        rank_by = check_rank_by(rank_by, qmod, self.space)
        if self.space is None or (self.space.scorer.kind == "cosine" and rank_by == "score"):
            q, _ = self.fuse_query(parts, w, None)
            return rank_hits(self.space, self.search_vectors(q[None], modality=targets, **kw, **ann_params)[0], qmod, k)
        # a Symile space scores MIP(query..., candidate, missing...): the query depends on the candidates'
        # modality, so one search per target modality, each hit scored by the MIP itself, merged (by score, or
        # by calibrated probability: rank_by="probability", see anybind.index.calibrated)
        hits: list[Hit] = []
        for t in targets or sorted(self.counts()):
            q, scale = self.fuse_query(parts, w, t)
            found = self.search_vectors(q[None], modality=t, **kw, **ann_params)[0]
            hits += [replace(h, score=h.score * scale) for h in found]
        return rank_hits(self.space, hits, qmod, k, rank_by)

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
        """Search with a batch of query vectors (n, dim); one hit list per query."""
        from .. import rerank as rr

        k = check_k(k)
        try:
            method = rr.check_method(rerank)
        except DataError as e:
            raise QueryError(str(e)) from None
        Q = unit_rows(np.atleast_2d(np.asarray(queries, np.float32)))
        if Q.shape[1] != self.dim:
            raise QueryError(f"queries of width {Q.shape[1]}: this index holds {self.dim}-d vectors")
        targets = self._check_targets(modality) if modality is not None else None
        lab = label_filter(labels)
        pool = k if method is None else max(k, rerank_pool)
        cands = self._candidates(Q, pool, targets, lab, exact, with_vectors=method is not None, **ann_params)
        if method is not None:
            cands = self._rerank(method, Q, cands, targets, lab, rerank_params, query_bank, bank_size, exact)
        out = []
        for t, scores in cands:
            order = np.argsort(-scores, kind="stable")[:k]
            ids = t.column("id").to_pylist()
            mods = t.column("modality").to_pylist()
            srcs = t.column("source").to_pylist()
            labs = t.column("labels").to_pylist()
            out.append(
                [
                    Hit(ids[j], mods[j], float(scores[j]), srcs[j], json.loads(labs[j] or "{}"), r + 1)
                    for r, j in enumerate(order)
                ]
            )
        return out

    def _candidates(
        self, Q, pool, targets, lab, exact, with_vectors=True, **ann_params
    ) -> list[tuple["pa.Table", np.ndarray]]:
        """Per query: (candidate rows with metadata (+ ``vector``), their raw scores)."""
        import pyarrow as pa

        fast = self._fast_candidates(Q, pool, targets, lab, exact, with_vectors)  # in-memory ANN / codes
        if fast is not None:
            return fast
        if self.uses_ann(exact):
            res = self._ann_search(
                Q, pool, self._where(targets, lab), with_vectors=with_vectors, **ann_params
            )
            return [(t, t.column("score").to_numpy(zero_copy_only=False).astype(np.float32)) for t in res]
        snap = self.snapshot()
        rows = snap.rows_where(targets, lab)
        S, idx = exact_topk(Q, snap.vectors, pool, rows=rows)
        out = []
        for s, i in zip(S, idx):
            t = snap.meta.take(pa.array(i, pa.int64()))
            if with_vectors:
                V = pa.FixedSizeListArray.from_arrays(pa.array(snap.vectors[i].reshape(-1)), self.dim)
                t = t.append_column("vector", V)
            out.append((t, s))
        return out

    def _bank(self, spec, bank_size: int, seed: int = 0) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Bank vectors and their record ids: an array as given (no ids), or a sample (at most
        ``bank_size``) of the indexed items of some modalities."""
        if spec is None:
            return None, None
        if isinstance(spec, np.ndarray):
            return unit_rows(np.atleast_2d(spec)), None
        mods = [spec] if isinstance(spec, str) else list(spec)
        key = ("bank", tuple(mods), bank_size, self.table.version)
        if key not in self._bank_cache:
            where = f"modality IN ({', '.join(sql_str(m) for m in mods)})"
            t = self.table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            V = vectors_of(t.column("vector"), self.dim)
            ids = t.column("id").to_numpy(zero_copy_only=False)
            if len(V) > bank_size:
                pick = np.sort(np.random.default_rng(seed).choice(len(V), bank_size, replace=False))
                V, ids = V[pick], ids[pick]
            self._bank_cache[key] = (V, ids)
        return self._bank_cache[key]

    def _rerank(self, method, Q, cands, targets, lab, params, query_bank, bank_size, exact):
        """Re-score each query's candidates.  Banks come from the index itself, so a gallery
        item's own record (the item, or its partner in another modality) is left out of the
        bank statistics of that item (see :func:`anybind.rerank.common.without_self`)."""
        from .. import rerank as rr

        p = rr.params_for(method, params)
        qbank, qids = self._bank(query_bank, bank_size)
        if method in ("csls", "qbnorm") and (qbank is None or len(qbank) == 0):
            raise QueryError(
                f"rerank {method} needs a query bank: the index has no items of the query's modality "
                f"({query_bank or 'a vector query has none'}); pass query_bank= (vectors or modality names)"
            )
        gmods = targets if targets is not None else sorted(self.counts())
        gbank, gids = self._bank(list(gmods), bank_size) if method == "invgc" else (None, None)
        active = None
        if method == "qbnorm":
            key = (
                "active",
                id(qbank),
                tuple(gmods),
                json.dumps(lab, sort_keys=True),
                p["k"],
                self.table.version,
            )
            if key not in self._bank_cache:
                # gallery items in some bank query's top-k over the whole (filtered) gallery, leaving
                # out the bank query's own record (itself, or its partner in another modality)
                kk = p["k"] + 1 + len(self.modalities)
                if self.uses_ann(exact):
                    top = self._ann_search(qbank, kk, self._where(targets, lab), with_vectors=False)
                    hits = [
                        list(
                            zip(
                                t.column("id").to_pylist(),
                                t.column("modality").to_pylist(),
                                t.column("score").to_numpy(zero_copy_only=False),
                            )
                        )
                        for t in top
                    ]
                else:
                    snap = self.snapshot()
                    S, top = exact_topk(qbank, snap.vectors, kk, rows=snap.rows_where(targets, lab))
                    ids = snap.meta.column("id").to_numpy(zero_copy_only=False)
                    hits = [[(ids[j], snap.modality[j], v) for v, j in zip(sr, tr)] for sr, tr in zip(S, top)]
                pairs = set()
                for b, row in enumerate(hits):
                    own = qids[b] if qids is not None else None
                    keep = [(i, m) for i, m, v in row if i != own and v <= 1.0 - rr.SELF_TOL]
                    pairs.update(keep[: p["k"]])
                self._bank_cache[key] = pairs
            active = self._bank_cache[key]
        out = []
        for qi, (t, s) in enumerate(cands):
            if len(s) == 0:
                out.append((t, s))
                continue
            G = vectors_of(t.column("vector"), self.dim)
            cids = t.column("id").to_numpy(zero_copy_only=False)
            if method == "invgc":
                new = rr.invgc(
                    Q[qi : qi + 1],
                    G,
                    qbank,
                    gbank,
                    **p,
                    gallery_ids=cids,
                    query_bank_ids=qids,
                    gallery_bank_ids=gids,
                )[0]
            elif method == "csls":
                new = rr.csls(s[None], qbank @ G.T, k=p["k"], bank_ids=qids, gallery_ids=cids)[0]
            else:
                mods = t.column("modality").to_pylist()
                mask = np.array([(i, m) in active for i, m in zip(cids, mods)])
                new = rr.qb_norm(
                    s[None],
                    qbank @ G.T,
                    beta=p["beta"],
                    k=p["k"],
                    active=mask,
                    bank_ids=qids,
                    gallery_ids=cids,
                )[0]
            out.append((t, np.asarray(new, np.float32)))
        return out

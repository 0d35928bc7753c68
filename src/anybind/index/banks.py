"""Re-ranking search candidates (CSLS, QB-Norm, InvGC; :mod:`anybind.rerank`) with banks drawn from the
index itself: :class:`Reranker`."""

from __future__ import annotations

import json

import numpy as np

from .ann import LanceAnn
from .errors import QueryError
from .exact import exact_topk, unit_rows
from .store import sql_str, sql_where, vectors_of
from .table import IndexTable

class Reranker:
    """Re-scores one index's search candidates; its banks are memoised per table version (``t.memo``)."""

    def __init__(self, t: IndexTable, ann: LanceAnn) -> None:
        self.t = t
        self.ann = ann

    def bank(self, spec, bank_size: int, seed: int = 0) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Bank vectors and their record ids: an array as given (no ids), or a sample (at most
        ``bank_size``) of the indexed items of some modalities."""
        if spec is None:
            return None, None
        if isinstance(spec, np.ndarray):
            return unit_rows(np.atleast_2d(spec)), None
        mods = [spec] if isinstance(spec, str) else list(spec)
        key = ("bank", tuple(mods), bank_size, self.t.version)
        if key not in self.t.memo:
            where = f"modality IN ({', '.join(sql_str(m) for m in mods)})"
            t = self.t.table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            V = vectors_of(t.column("vector"), self.t.dim)
            ids = t.column("id").to_numpy(zero_copy_only=False)
            if len(V) > bank_size:
                pick = np.sort(np.random.default_rng(seed).choice(len(V), bank_size, replace=False))
                V, ids = V[pick], ids[pick]
            self.t.memo[key] = (V, ids)
        return self.t.memo[key]

    def rerank(self, method, Q, cands, targets, lab, params, query_bank, bank_size, exact):
        """Re-score each query's candidates.  Banks come from the index itself, so a gallery
        item's own record (the item, or its partner in another modality) is left out of the
        bank statistics of that item (see :func:`anybind.rerank.common.without_self`)."""
        from .. import rerank as rr

        p = rr.params_for(method, params)
        qbank, qids = self.bank(query_bank, bank_size)
        if method in ("csls", "qbnorm") and (qbank is None or len(qbank) == 0):
            raise QueryError(
                f"rerank {method} needs a query bank: the index has no items of the query's modality "
                f"({query_bank or 'a vector query has none'}); pass query_bank= (vectors or modality names)"
            )
        gmods = targets if targets is not None else sorted(self.t.counts())
        gbank, gids = self.bank(list(gmods), bank_size) if method == "invgc" else (None, None)
        active = None
        if method == "qbnorm":
            key = (
                "active",
                id(qbank),
                tuple(gmods),
                json.dumps(lab, sort_keys=True),
                p["k"],
                self.t.version,
            )
            if key not in self.t.memo:
                # gallery items in some bank query's top-k over the whole (filtered) gallery, leaving
                # out the bank query's own record (itself, or its partner in another modality)
                kk = p["k"] + 1 + len(self.t.modalities)
                if self.ann.uses(exact):
                    top = self.ann.search(qbank, kk, sql_where(targets, lab), with_vectors=False)
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
                    snap = self.t.snapshot()
                    S, top = exact_topk(qbank, snap.vectors, kk, rows=snap.rows_where(targets, lab))
                    ids = snap.meta.column("id").to_numpy(zero_copy_only=False)
                    hits = [[(ids[j], snap.modality[j], v) for v, j in zip(sr, tr)] for sr, tr in zip(S, top)]
                pairs = set()
                for b, row in enumerate(hits):
                    own = qids[b] if qids is not None else None
                    keep = [(i, m) for i, m, v in row if i != own and v <= 1.0 - rr.SELF_TOL]
                    pairs.update(keep[: p["k"]])
                self.t.memo[key] = pairs
            active = self.t.memo[key]
        out = []
        for qi, (t, s) in enumerate(cands):
            if len(s) == 0:
                out.append((t, s))
                continue
            G = vectors_of(t.column("vector"), self.t.dim)
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

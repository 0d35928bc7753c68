"""Does a hubness correction help this space?  A study users can run on their own splits.

:func:`hubness_study` measures R@1, R@5 and k-occurrence skewness of q->g test retrieval with no
correction and with each of CSLS, QB-Norm and InvGC (:mod:`anybind.rerank`), each correction's
parameters chosen on the val split from :data:`HUB_GRIDS`, with an exact paired McNemar test of
R@1 against no correction.  ``anybind bench --task hubness`` runs it on Tux Paint and emoji.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import ranks_of_diagonal
from .rerank import apply_rerank, hubness

HUB_GRIDS: dict[str, list[dict[str, Any]]] = {
    "csls": [{"k": k} for k in (1, 3, 5, 10, 20)],
    "qbnorm": [{"beta": b} for b in (5.0, 10.0, 20.0, 30.0, 50.0)],
    "invgc": [
        {"r_g": r, "r_q": r, "pool_rate": p} for r in (0.1, 0.25, 0.5, 1.0, 2.0) for p in (0.01, 0.03, 0.1)
    ],
}



def hits_at(S: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: is its best relevant item in the top k (irrelevant items tied with it count against it)?"""
    return ranks_of_diagonal(S, relevant) <= k


def recall_at(S: np.ndarray, relevant: np.ndarray, k: int) -> float:
    return float(hits_at(S, relevant, k).mean())


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of paired successes ``a`` vs ``b`` (binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    return 1.0 if n01 + n10 == 0 else float(binomtest(n01, n01 + n10, 0.5).pvalue)


def hubness_study(
    E: dict[str, dict[str, tuple]],
    q: str,
    g: str,
    protocol: str,
) -> dict[str, dict[str, Any]]:
    """R@1, R@5 and k-occurrence skewness of q->g test retrieval, plain and with each correction.

    ``E[split][modality] = Embedded(ids, X, content_keys)`` (as :func:`~anybind.evaluate.embed_records`
    returns).  Two protocols:

    * ``"split"``: test queries against the test gallery; banks = the train split (the usual
      evaluation, as in the papers).
    * ``"corpus"``: an index that also holds training data.  The training records are halved
      by a hash of their id: half B joins the gallery (items the space was fitted on: the
      likely hubs), half A's queries form the query bank and half A's items are left out, so
      that no gallery item has its own partner in the bank (which would tell the correction
      which items are distractors).  Test queries search test items + half B; gallery bank =
      the gallery itself.

    A query's relevant items are its own record's item and any item with identical content
    (two stamps both captioned "A flower."), as in :mod:`anybind.evaluate`.  Each correction's
    hyperparameters are chosen on the val split under the same protocol.
    """
    import hashlib

    qkey_of = {i: key for s in ("train", "val", "test") for i, key in zip(E[s][q][0], E[s][q][2])}

    def half_a(rid: str) -> bool:
        return hashlib.sha256(rid.encode()).digest()[0] % 2 == 0

    def part(split: str, m: str, keep_fn=None):
        ids, X, keys = E[split][m][0], E[split][m][1], E[split][m][2]
        sel = [j for j, i in enumerate(ids) if keep_fn is None or keep_fn(i)]
        return [ids[j] for j in sel], X[sel], [keys[j] for j in sel]

    def setting(split):
        ids_q, Q, qkeys = E[split][q]
        if protocol == "split":
            parts = [part(split, g)]
            qbank = E["train"][q][1]
        else:
            parts = [part(split, g), part("train", g, lambda i: not half_a(i))]
            qbank = part("train", q, half_a)[1]
        ids_g = [i for p_ in parts for i in p_[0]]
        G = np.concatenate([p_[1] for p_ in parts])
        gkeys = np.array([k_ for p_ in parts for k_ in p_[2]], dtype=object)
        in_train = np.array([pi > 0 for pi, p_ in enumerate(parts) for _ in p_[0]])
        gb = E["train"][g][1] if protocol == "split" else G
        pos = {i: j for j, i in enumerate(ids_g)}
        keep = [j for j, i in enumerate(ids_q) if i in pos]
        tgt = np.array([pos[ids_q[j]] for j in keep])
        g_qkeys = np.array([qkey_of.get(i) for i in ids_g], dtype=object)
        rel = (gkeys[None, :] == gkeys[tgt][:, None]) | (
            g_qkeys[None, :] == np.array([qkeys[j] for j in keep], dtype=object)[:, None]
        )
        rel[np.arange(len(keep)), tgt] = True
        return Q[keep], G, rel, qbank, gb, in_train

    val, test = setting("val"), setting("test")
    out: dict[str, dict[str, Any]] = {}
    for method in ("none", "csls", "qbnorm", "invgc"):
        grid = [None] if method == "none" else HUB_GRIDS[method]
        best, best_val, best_r1 = None, -1.0, 0.0
        for params in grid:
            Qv, Gv, rv, qb, gb, _ = val
            Sv = apply_rerank(
                None if method == "none" else method, Qv, Gv, query_bank=qb, gallery_bank=gb, params=params
            )
            score = recall_at(Sv, rv, 1) + 1e-3 * recall_at(Sv, rv, 5)  # R@1, ties broken by R@5
            if score > best_val:
                best, best_val, best_r1 = params, score, recall_at(Sv, rv, 1)
        Qt, Gt, rt, qb, gb, in_train = test
        St = apply_rerank(
            None if method == "none" else method, Qt, Gt, query_bank=qb, gallery_bank=gb, params=best
        )
        hits = hits_at(St, rt, 1)
        if method == "none":
            base_hits = hits
        out[method] = {
            # share of test queries whose top-1 is a training item (the space fits those tightly: hubs)
            "top1_in_train": float(in_train[St.argmax(1)].mean()),
            "p@1": mcnemar_p(base_hits, hits),  # paired test of R@1 against no correction
            "R@1": float(hits.mean()),
            "R@5": recall_at(St, rt, 5),
            "skew@10": hubness(St, 10)["skewness"],
            "val_R@1": best_r1,
            "val_score": best_val,
            "params": best,
            "n": len(rt),
            "gallery": len(Gt),
        }
    return out

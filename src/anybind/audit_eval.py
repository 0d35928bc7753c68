"""Measuring ``anybind audit`` against planted errors (used by ``anybind bench --task audit`` and the tests).

:func:`inject_errors` writes a copy of a manifest with seeded errors -- a share of each modality's items
swapped between records (a caption or a sound that belongs to another record), a share of labels changed
to another value of the key, records copied into another split -- and returns which records carry which
error.  :func:`detection` scores a ranking against them (AUROC, precision at k = number planted);
:func:`raw_cosine_scores` and :func:`raw_label_scores` are the baselines: the own pair's score, and the
score of an item with its own class prompt, each alone (lower = more suspicious).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import load_for
from .evaluate import class_embeddings, class_name, embed_records

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space import Space


def inject_errors(
    manifest: str | Path, out: str | Path, *, swap: Mapping[str, float] | None = None, relabel: float = 0.0,
    label: str = "category", duplicate: int = 0, duplicate_from: str = "test", duplicate_to: str = "train",
    seed: int = 0,
) -> dict[str, set[str] | set[tuple[str, str]]]:
    """Write ``manifest`` with seeded errors to ``out`` (a new file); returns the truth:
    ``"swap:<modality>"`` -> ids whose item was swapped, ``"label"`` -> relabelled ids,
    ``"duplicate"`` -> ``(original id, copy id)`` pairs (copies of ``duplicate_from`` records put in
    ``duplicate_to``, every item identical).  Lines are copied as they are: write ``out`` beside ``manifest``
    when its media paths are relative (they are resolved against the manifest's folder)."""
    rows = [json.loads(line) for line in open(manifest, encoding="utf-8") if line.strip()]
    rng = np.random.default_rng(seed)
    truth: dict[str, Any] = {}
    for m, share in sorted((swap or {}).items()):
        have = [i for i, r in enumerate(rows) if m in r]
        n = 2 * max(1, int(round(share * len(have) / 2)))
        pick = rng.choice(have, min(n, len(have) // 2 * 2), replace=False)
        done = set()
        for i, j in pick.reshape(-1, 2):
            if rows[i][m] != rows[j][m]:  # identical items would swap nothing
                rows[i][m], rows[j][m] = rows[j][m], rows[i][m]
                done |= {rows[i]["id"], rows[j]["id"]}
        truth[f"swap:{m}"] = done
    if relabel:
        have = [i for i, r in enumerate(rows) if label in (r.get("labels") or {})]
        values = sorted({str(rows[i]["labels"][label]) for i in have})
        pick = rng.choice(have, max(1, int(round(relabel * len(have)))), replace=False)
        for i in pick:
            others = [v for v in values if v != str(rows[i]["labels"][label])]
            rows[i]["labels"] = {**rows[i]["labels"], label: others[int(rng.integers(len(others)))]}
        truth["label"] = {rows[i]["id"] for i in pick}
    if duplicate:
        src = [r for r in rows if r.get("split") == duplicate_from]
        pick = rng.choice(len(src), min(duplicate, len(src)), replace=False)
        copies = [{**src[i], "id": f"{src[i]['id']}~copy", "split": duplicate_to} for i in pick]
        rows += copies
        truth["duplicate"] = {(c["id"][: -len("~copy")], c["id"]) for c in copies}
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return truth


def detection(scores: Mapping[str, float], truth: set[str], among: Sequence[str] | None = None) -> dict[str, float]:
    """AUROC and precision at k = ``len(truth)`` of ``scores`` (higher = more suspicious) over ``among``
    (default: every scored id; ids without a score count as 0)."""
    ids = list(among if among is not None else scores)
    s = np.asarray([scores.get(i, 0.0) for i in ids], np.float64)
    y = np.asarray([i in truth for i in ids], bool)
    if not y.any() or y.all():
        return {"auroc": float("nan"), "precision@k": float("nan"), "k": int(y.sum())}
    d = s[y][:, None] - s[~y][None, :]
    k = int(y.sum())
    top = np.argsort(-s, kind="stable")[:k]
    return {"auroc": float(((d > 0) + 0.5 * (d == 0)).mean()), "precision@k": float(y[top].mean()), "k": k}


def raw_cosine_scores(space: "Space", manifest, a: str, b: str,
                      cache: "FeatureCache | str | Path | None" = None) -> dict[str, float]:
    """Minus the space's score of each record's own ``a``-``b`` pair (the baseline: no ranks, no calibration)."""
    man = load_for(space, manifest)
    embs = embed_records(space, man.records, [a, b], cache=cache)
    pos = {i: k for k, i in enumerate(embs[b].ids)}
    out = {}
    for k, rid in enumerate(embs[a].ids):
        if rid in pos:
            out[rid] = -float(space.scorer.pair_scores(embs[a].vectors[k : k + 1], a, embs[b].vectors[[pos[rid]]], b)[0, 0])
    return out


def raw_label_scores(space: "Space", manifest, modality: str, label: str, templates: Sequence[str] = ("a {}.",),
                     cache: "FeatureCache | str | Path | None" = None) -> dict[str, float]:
    """Minus the score of each item with its own label's class prompt (the zero-shot baseline, no neighbours)."""
    man = load_for(space, manifest)
    recs = [r for r in man.records if r.has(modality) and label in (r.labels or {})]
    classes = sorted({str(r.labels[label]) for r in recs})
    C = class_embeddings(space, [class_name(c) for c in classes], templates, cache=cache)
    X = space.embed(modality, [r.values[modality] for r in recs], cache=cache)
    S = space.scorer.pair_scores(X, modality, C, "text")
    idx = {c: i for i, c in enumerate(classes)}
    return {r.id: -float(S[k, idx[str(r.labels[label])]]) for k, r in enumerate(recs)}

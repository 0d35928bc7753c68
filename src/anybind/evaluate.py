"""Honest measurement of a space: retrieval in every direction, zero-shot classification.

Results are flat dicts (``{"text->image/R@1": 0.41, ...}``) so that bench
files, JSON outputs and tables all share one shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.manifest import Manifest, Record, load_manifest

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space import Space

KS = (1, 5, 10)


def ranks_of_diagonal(sim: np.ndarray) -> np.ndarray:
    """1-based rank of ``sim[i, i]`` within row ``i`` (ties count against the query: pessimistic)."""
    diag = np.diag(sim)[:, None]
    return (sim > diag).sum(1) + (sim == diag).sum(1)  # the true item counts once among its ties


def pair_recalls(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@K and median rank when ``queries[i]`` should retrieve ``gallery[i]``."""
    sim = queries @ gallery.T
    r = ranks_of_diagonal(sim)
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["MdR"] = float(np.median(r))
    out["n"] = int(len(r))
    return out


def retrieval_from_embeddings(
    embs: Mapping[str, tuple[Sequence[str], np.ndarray]],
    pairs: Iterable[tuple[str, str]] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Retrieval metrics for every ordered modality pair.

    ``embs[m] = (ids, X)``; for pair (a, b) the evaluation set is the ids that
    have both, and each a-query must find its own record's b-item among all of them.
    """
    out: dict[str, float] = {}
    mods = sorted(embs)
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(mods, 2))
    for a, b in pairs:
        ids_a, Xa = embs[a]
        ids_b, Xb = embs[b]
        pos_b = {i: k for k, i in enumerate(ids_b)}
        common = [(k, pos_b[i]) for k, i in enumerate(ids_a) if i in pos_b]
        if len(common) < 2:
            continue
        ia, ib = (np.asarray(x) for x in zip(*common))
        for (q, qi), (g, gi), name in (((a, ia), (b, ib), f"{a}->{b}"), ((b, ib), (a, ia), f"{b}->{a}")):
            Q = embs[q][1][qi]
            G = embs[g][1][gi]
            for k, v in pair_recalls(Q, G, ks).items():
                out[f"{name}/{k}"] = v
    return out


def embed_records(
    space: "Space",
    records: Sequence[Record],
    modalities: Iterable[str],
    cache: "FeatureCache | str | None" = None,
    progress: bool = False,
) -> dict[str, tuple[list[str], np.ndarray]]:
    out = {}
    for m in modalities:
        have = [r for r in records if r.has(m)]
        if not have:
            continue
        X = space.embed(m, [r.values[m] for r in have], cache=cache, progress=progress)
        out[m] = ([r.id for r in have], X)
    return out


def evaluate(
    space: "Space",
    manifest: str | Manifest,
    *,
    split: str = "test",
    modalities: Iterable[str] | None = None,
    cache: "FeatureCache | str | None" = None,
    zero_shot_label: str | None = None,
    zero_shot_modalities: Iterable[str] | None = None,
    templates: Sequence[str] = ("a {}.",),
    progress: bool = False,
) -> dict[str, float]:
    """Retrieval for every pair of bound modalities on ``split``; optionally zero-shot on a label key."""
    man = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, modalities=space.modalities)
    mods = [m for m in (modalities or space.modalities) if m in space.modalities]
    recs = man.split(split)
    embs = embed_records(space, recs, mods, cache=cache, progress=progress)
    out = retrieval_from_embeddings(embs)
    if zero_shot_label:
        for m in zero_shot_modalities or [m for m in mods if not m.startswith("text")]:
            if m not in embs:
                continue
            zs = zero_shot(space, [r for r in recs if r.has(m)], m, zero_shot_label, templates=templates, cache=cache)
            out.update({f"zeroshot/{m}/{zero_shot_label}/{k}": v for k, v in zs.items() if not isinstance(v, (list, dict))})
    return out


def class_name(label: str) -> str:
    """Readable class name of a label value: last path part, ``_``/``-`` as spaces."""
    return str(label).rstrip("/").split("/")[-1].replace("_", " ").replace("-", " ")


def zero_shot(
    space: "Space",
    records: Sequence[Record],
    modality: str,
    label_key: str,
    *,
    classes: Sequence[str] | None = None,
    names: Callable[[str], str] = class_name,
    templates: Sequence[str] = ("a {}.",),
    text_modality: str = "text",
    cache: "FeatureCache | str | None" = None,
) -> dict[str, Any]:
    """Classify items by their nearest class prompt (averaged over templates, a prompt ensemble)."""
    recs = [r for r in records if r.has(modality) and label_key in r.labels]
    if not recs:
        return {"accuracy": float("nan"), "n": 0}
    y = [str(r.labels[label_key]) for r in recs]
    classes = sorted(set(y)) if classes is None else list(classes)
    C = class_embeddings(space, [names(c) for c in classes], templates, text_modality, cache)
    X = space.embed(modality, [r.values[modality] for r in recs], cache=cache)
    pred = (X @ C.T).argmax(1)
    cidx = {c: i for i, c in enumerate(classes)}
    yi = np.array([cidx.get(v, -1) for v in y])
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(yi, pred):
        if t >= 0:
            conf[t, p] += 1
    return {
        "accuracy": float((pred == yi).mean()),
        "chance": float(max(np.bincount(yi[yi >= 0]).max() / len(yi), 1 / len(classes))),
        "classes": len(classes),
        "n": len(recs),
        "confusion": conf.tolist(),
        "labels": list(classes),
    }


def class_embeddings(space: "Space", names: Sequence[str], templates: Sequence[str], text_modality: str = "text", cache=None):
    """Prompt-ensemble class embeddings: mean of the templates' embeddings, renormalised."""
    prompts = [t.format(n) for n in names for t in templates]
    E = space.embed(text_modality, prompts, cache=cache).reshape(len(names), len(templates), -1).mean(1)
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def retrieval_table(results: Mapping[str, Mapping[str, float]], title: str = "retrieval", ks: Sequence[int] = KS):
    """A Rich table: one row per direction, one column group per system."""
    from rich.table import Table

    systems = list(results)
    dirs = sorted({k.rsplit("/", 1)[0] for r in results.values() for k in r if "->" in k})
    t = Table(title=title)
    t.add_column("direction")
    t.add_column("n", justify="right")
    for s in systems:
        for k in ks:
            t.add_column(f"{s}\nR@{k}", justify="right")
    for d in dirs:
        n = next((int(r[f"{d}/n"]) for r in results.values() if f"{d}/n" in r), 0)
        row = [d, str(n)]
        for s in systems:
            for k in ks:
                v = results[s].get(f"{d}/R@{k}")
                row.append("-" if v is None else f"{v:.3f}")
        t.add_row(*row)
    return t

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
from .data.templates import check_templates, fill_template

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space import Space

KS = (1, 5, 10)


def _duplicate_groups(X: np.ndarray) -> np.ndarray:
    """Group index of each row; identical rows (identical content) share a group."""
    return np.unique(np.ascontiguousarray(X), axis=0, return_inverse=True)[1].reshape(-1)


def ranks_of_diagonal(sim: np.ndarray, relevant: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the best relevant item of each row (default: ``sim[i, i]`` alone).

    Ties with irrelevant items count against the query (pessimistic), so a
    collapsed space scores like chance or worse, never well.
    """
    n = sim.shape[0]
    if relevant is None:
        relevant = np.eye(n, dtype=bool)
    best = np.where(relevant, sim, -np.inf).max(1, keepdims=True)
    return 1 + ((sim >= best) & ~relevant).sum(1)


def content_groups(keys: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Group index per item from content keys (strings) or from frozen *input* feature rows."""
    if isinstance(keys, np.ndarray) and keys.ndim == 2:
        return _duplicate_groups(keys)
    return np.unique(np.asarray([str(k) for k in keys]), return_inverse=True)[1].reshape(-1)


def pair_recalls(
    queries: np.ndarray,
    gallery: np.ndarray,
    ks: Sequence[int] = KS,
    *,
    query_keys: Sequence[Any] | np.ndarray | None = None,
    gallery_keys: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """Recall@K and median rank when ``queries[i]`` should retrieve ``gallery[i]``.

    Items with identical *content* are interchangeable: when several queries
    are identical (two stamps captioned "A flower.") any of their partners is
    a correct answer, and likewise identical gallery items.  Content identity
    comes from ``*_keys`` (content keys, or the frozen input features) -- never
    from the embeddings being scored, so a collapsed space cannot profit.
    """
    return sim_recalls(queries @ gallery.T, ks, query_keys=query_keys, gallery_keys=gallery_keys)


def paired_rows(embs: Mapping[str, tuple], pairs: Iterable[tuple[str, str]] | None = None):
    """For each modality pair (default: all), the rows of ``embs[a]`` and ``embs[b]`` of the records having both.

    Yields ``(a, b, rows_a, rows_b)``; pairs with fewer than 2 common records are skipped.
    """
    mods = sorted(embs)
    for a, b in list(pairs) if pairs is not None else list(itertools.combinations(mods, 2)):
        pos_b = {i: k for k, i in enumerate(embs[b][0])}
        common = [(k, pos_b[i]) for k, i in enumerate(embs[a][0]) if i in pos_b]
        if len(common) < 2:
            continue
        ia, ib = (np.asarray(x) for x in zip(*common))
        yield a, b, ia, ib


def retrieval_from_embeddings(
    embs: Mapping[str, tuple[Sequence[str], np.ndarray]],
    pairs: Iterable[tuple[str, str]] | None = None,
    ks: Sequence[int] = KS,
    *,
    rerank: str | None = None,
    banks: Mapping[str, np.ndarray] | None = None,
    rerank_params: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Retrieval metrics for every ordered modality pair.

    ``embs[m] = (ids, X)``; for pair (a, b) the evaluation set is the ids that
    have both, and each a-query must find its own record's b-item among all of them.

    ``rerank`` (``"csls"``, ``"qbnorm"``, ``"invgc"``, see :mod:`anybind.rerank`)
    re-scores each direction with a hubness correction; ``banks[m]`` are the
    bank embeddings of modality ``m`` (e.g. the training split's), used as the
    query bank when ``m`` is the query side and as the gallery bank when it is
    the gallery side.  Without a bank for a modality, its evaluation items
    themselves are the bank.
    """
    out: dict[str, float] = {}
    for a, b, ia, ib in paired_rows(embs, pairs):
        for (q, qi), (g, gi), name in (((a, ia), (b, ib), f"{a}->{b}"), ((b, ib), (a, ia), f"{b}->{a}")):
            Q = embs[q][1][qi]
            G = embs[g][1][gi]
            keys = {
                "query_keys": [embs[q][2][i] for i in qi] if len(embs[q]) > 2 else None,
                "gallery_keys": [embs[g][2][i] for i in gi] if len(embs[g]) > 2 else None,
            }
            if rerank is None:
                res = pair_recalls(Q, G, ks, **keys)
            else:
                from .rerank import apply_rerank

                qb = (banks or {}).get(q, Q)
                gb = (banks or {}).get(g, G)
                res = sim_recalls(
                    apply_rerank(rerank, Q, G, query_bank=qb, gallery_bank=gb, params=rerank_params), ks, **keys
                )
            for k, v in res.items():
                out[f"{name}/{k}"] = v
    return out


def sim_recalls(
    sim: np.ndarray,
    ks: Sequence[int] = KS,
    *,
    query_keys: Sequence[Any] | np.ndarray | None = None,
    gallery_keys: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """Like :func:`pair_recalls` on a ready (possibly re-scored) similarity matrix."""
    sim = np.asarray(sim)
    relevant = np.eye(len(sim), dtype=bool)
    if query_keys is not None:
        qg = content_groups(query_keys)
        relevant |= qg[:, None] == qg[None, :]
    if gallery_keys is not None:
        gg = content_groups(gallery_keys)
        relevant |= gg[:, None] == gg[None, :]
    r = ranks_of_diagonal(sim, relevant)
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["MdR"] = float(np.median(r))
    out["n"] = int(len(r))
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
        values = [r.values[m] for r in have]
        X = space.embed(m, values, cache=cache, progress=progress)
        enc = space.encoder(m)
        out[m] = ([r.id for r in have], X, [enc.content_key(v) for v in values])
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
    zero_shot_center: bool = False,
    progress: bool = False,
    rerank: str | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    bank_split: str = "train",
) -> dict[str, float]:
    """Retrieval for every pair of bound modalities on ``split``; optionally zero-shot on a label key.

    ``rerank`` applies a hubness correction (see :mod:`anybind.rerank`) with
    the ``bank_split`` records' embeddings as query and gallery banks.
    """
    if zero_shot_label:
        templates = check_templates(templates)  # before any work: a bad template fails fast
    if isinstance(manifest, Manifest):
        man = manifest
    else:
        from .space import manifest_kinds

        man = load_manifest(manifest, modalities=space.modalities, kinds=manifest_kinds(space.encoders))
    mods = [m for m in (modalities or space.modalities) if m in space.modalities]
    recs = man.split(split)
    embs = embed_records(space, recs, mods, cache=cache, progress=progress)
    banks = None
    if rerank is not None:
        from .rerank import check_method

        if check_method(rerank) is not None:
            bank_embs = embed_records(space, man.split(bank_split), mods, cache=cache, progress=progress)
            banks = {m: e[1] for m, e in bank_embs.items()}
    out = retrieval_from_embeddings(embs, rerank=rerank, banks=banks, rerank_params=rerank_params)
    if zero_shot_label:
        for m in zero_shot_modalities or [m for m in mods if not m.startswith("text")]:
            if m not in embs:
                continue
            zs = zero_shot(space, [r for r in recs if r.has(m)], m, zero_shot_label, templates=templates, cache=cache,
                           center=zero_shot_center)
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
    center: bool = False,
) -> dict[str, Any]:
    """Classify items by their nearest class prompt (averaged over templates, a prompt ensemble).

    ``center=True`` subtracts the mean embedding of the classified items before the
    cosine (transductive: it uses the unlabelled batch, never its labels).  When a
    whole out-of-domain corpus lands in one corner of the space, every item is
    nearest to the same few prompts (hubs); centring removes that shared offset.

    A Symile space (one saved with "missing" embeddings) scores with the multilinear
    inner product ``MIP(item, prompt, missing_m...)``, every other modality standing
    in with its learnt missing embedding, as in training.
    """
    from .multilinear import missing_embeddings

    templates = check_templates(templates)
    recs = [r for r in records if r.has(modality) and label_key in r.labels]
    if not recs:
        return {"accuracy": float("nan"), "n": 0}
    y = [str(r.labels[label_key]) for r in recs]
    classes = sorted(set(y)) if classes is None else list(classes)
    C = class_embeddings(space, [names(c) for c in classes], templates, text_modality, cache)
    X = space.embed(modality, [r.values[modality] for r in recs], cache=cache)
    if center:
        X = X - X.mean(0)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    for m, e in missing_embeddings(space).items():
        if m not in (modality, text_modality):
            X = X * e
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
    templates = check_templates(templates)
    prompts = [fill_template(t, n) for n in names for t in templates]
    E = space.embed(text_modality, prompts, cache=cache).reshape(len(names), len(templates), -1).mean(1)
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def retrieval_table(results: Mapping[str, Mapping[str, float]], title: str = "retrieval", ks: Sequence[int] = (1, 10)):
    """A Rich table: one row per direction, one column per system with "R@1 / R@10"."""
    from rich.table import Table

    systems = list(results)
    dirs = sorted({k.rsplit("/", 1)[0] for r in results.values() for k in r if "->" in k})
    t = Table(title=title)
    t.add_column("direction")
    t.add_column("n", justify="right")
    for s in systems:
        t.add_column(f"{s}\n" + " / ".join(f"R@{k}" for k in ks), justify="right")
    for d in dirs:
        n = next((int(r[f"{d}/n"]) for r in results.values() if f"{d}/n" in r), 0)
        row = [d, str(n)]
        for s in systems:
            vals = [results[s].get(f"{d}/R@{k}") for k in ks]
            row.append(" / ".join("-" if v is None else f"{v:.3f}" for v in vals))
        t.add_row(*row)
    return t

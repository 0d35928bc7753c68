"""The geometry of a space: is it one space, or one island per modality?

Every number is computed from the embeddings of a split (``embs[m] = Embedded(ids, X, keys)``
as returned by :func:`anybind.evaluate.embed_records`) and returned as flat keys:

``diag/gap/a-b``            distance between the two modalities' centroids (Liang et al. 2022, "Mind the Gap")
``diag/separability/a-b``   cross-validated accuracy of a logistic regression telling a's embeddings from b's
                            (0.5 = the modalities are mixed, 1.0 = two islands)
``diag/alignment/a-b``      Wang & Isola's alignment, ``E ||a_i - b_i||^2`` over paired items (lower = closer pairs)
``diag/pos_sim/a-b``, ``diag/neg_sim/a-b``   mean cosine of paired / unpaired items
``diag/uniformity/m``       Wang & Isola's uniformity, ``log E exp(-2 ||x - y||^2)`` (lower = more spread);
                            ``diag/uniformity/all`` over every modality together
``diag/hubness/a->b``       skewness of the 10-occurrence of b's items when a's items query them
                            (Radovanovic et al. 2010; > 1 means a few hubs answer most queries)
``diag/erank/m``            effective rank of the centred embeddings (Roy & Vetterli 2007: exp of the
                            entropy of the normalised singular values; how many directions are used)

:func:`plot_diagnostics` draws a PCA of every modality's embeddings and the
histograms of positive vs negative similarities.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import Embedded, as_embedded

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space import Space

Embs = Mapping[str, "Embedded | tuple"]  # modality -> Embedded(ids, vectors, keys), as embed_records gives


# -- single measures ---------------------------------------------------------------------
def uniformity(X: np.ndarray, t: float = 2.0, max_points: int = 2000, seed: int = 0) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` (a random subset of ``max_points`` rows if larger)."""
    X = _subsample(np.asarray(X, np.float64), max_points, seed)
    n = len(X)
    if n < 2:
        return float("nan")
    sq = np.maximum((X * X).sum(1)[:, None] + (X * X).sum(1)[None, :] - 2 * X @ X.T, 0)
    vals = -t * sq[np.triu_indices(n, 1)]
    m = vals.max()
    return float(m + np.log(np.exp(vals - m).mean()))


def alignment(A: np.ndarray, B: np.ndarray, alpha: float = 2.0) -> float:
    """``mean ||a_i - b_i||^alpha`` over aligned rows."""
    return float((np.linalg.norm(np.asarray(A) - np.asarray(B), axis=1) ** alpha).mean())


def centroid_gap(A: np.ndarray, B: np.ndarray) -> float:
    """Euclidean distance between the two clouds' mean embeddings."""
    return float(np.linalg.norm(np.asarray(A).mean(0) - np.asarray(B).mean(0)))


def separability(A: np.ndarray, B: np.ndarray, *, folds: int = 5, max_points: int = 1000, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression that tells A's rows from B's (balanced classes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from .recipe import sklearn_seed

    n = min(len(A), len(B), max_points)
    if n < folds:
        return float("nan")
    A = _subsample(np.asarray(A, np.float64), n, seed)
    B = _subsample(np.asarray(B, np.float64), n, seed + 1)
    X = np.concatenate([A, B])
    y = np.r_[np.zeros(n), np.ones(n)]
    cv = StratifiedKFold(folds, shuffle=True, random_state=sklearn_seed(seed))
    return float(cross_val_score(LogisticRegression(max_iter=2000), X, y, cv=cv).mean())


def hubness(queries: np.ndarray, gallery: np.ndarray, k: int = 10) -> float:
    """Skewness of the k-occurrence distribution: how often each gallery item is in a query's top k."""
    from scipy.stats import skew

    n = len(gallery)
    if n < 3 or len(queries) < 1:
        return float("nan")
    k = min(k, n - 1)
    sim = np.asarray(queries) @ np.asarray(gallery).T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    occ = np.bincount(top.ravel(), minlength=n).astype(np.float64)
    if occ.std() == 0:
        return 0.0
    return float(skew(occ))


def effective_rank(X: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred embeddings (1 .. min(n, d))."""
    X = np.asarray(X, np.float64)
    if len(X) < 2:
        return float("nan")
    s = np.linalg.svd(X - X.mean(0), compute_uv=False)
    if s.sum() <= 0:
        return 1.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _subsample(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(X) <= n:
        return X
    return X[np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))]


def _paired(embs: Embs, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    (ids_a, Xa), (ids_b, Xb) = embs[a][:2], embs[b][:2]
    pos_b = {i: k for k, i in enumerate(ids_b)}
    common = [(k, pos_b[i]) for k, i in enumerate(ids_a) if i in pos_b]
    if not common:
        return Xa[:0], Xb[:0]
    ia, ib = (np.asarray(x) for x in zip(*common))
    return Xa[ia], Xb[ib]


# -- everything at once ------------------------------------------------------------------
def diagnostics(embs: Embs, *, k: int = 10, seed: int = 0) -> dict[str, float]:
    """Every diagnostic of a set of embeddings, as flat ``diag/...`` keys (see the module doc)."""
    out: dict[str, float] = {}
    embs = {m: as_embedded(e) for m, e in embs.items()}
    mods = sorted(m for m in embs if len(embs[m].vectors))
    for m in mods:
        X = embs[m].vectors
        out[f"diag/uniformity/{m}"] = uniformity(X, seed=seed)
        out[f"diag/erank/{m}"] = effective_rank(X)
    if len(mods) > 1:
        out["diag/uniformity/all"] = uniformity(np.concatenate([embs[m].vectors for m in mods]), seed=seed)
    for a, b in itertools.combinations(mods, 2):
        key = f"{a}-{b}"
        out[f"diag/gap/{key}"] = centroid_gap(embs[a].vectors, embs[b].vectors)
        out[f"diag/separability/{key}"] = separability(embs[a].vectors, embs[b].vectors, seed=seed)
        A, B = _paired(embs, a, b)
        if len(A) >= 2:
            sim = A @ B.T
            n = len(A)
            out[f"diag/alignment/{key}"] = alignment(A, B)
            out[f"diag/pos_sim/{key}"] = float(np.diag(sim).mean())
            out[f"diag/neg_sim/{key}"] = float((sim.sum() - np.trace(sim)) / (n * n - n))
            out[f"diag/hubness/{a}->{b}"] = hubness(A, B, k)
            out[f"diag/hubness/{b}->{a}"] = hubness(B, A, k)
    return out


def embed_split(
    space: "Space",
    manifest: Any,
    split: str = "test",
    *,
    cache: "FeatureCache | str | Path | None" = None,
    progress: bool = False,
) -> dict[str, Embedded]:
    """Embed every bound modality of a manifest split (``split="all"`` for every record)."""
    from .data.manifest import Manifest
    from .evaluate import embed_records
    from .space import as_manifests

    man = manifest if isinstance(manifest, Manifest) else as_manifests(manifest, space.modalities, space.encoders, False, progress)[0]
    recs = man.records if split == "all" else man.split(split)
    if not recs:
        from .errors import DataError

        raise DataError(f"{man.path}: no record in split {split!r}")
    return embed_records(space, recs, space.modalities, cache=cache, progress=progress)


def diagnose(
    space: "Space",
    manifest: Any,
    split: str = "test",
    *,
    cache: "FeatureCache | str | Path | None" = None,
    png: str | Path | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, tuple[list[str], np.ndarray]]]:
    """Embed ``split`` and compute :func:`diagnostics`; optionally draw :func:`plot_diagnostics` to ``png``."""
    embs = embed_split(space, manifest, split, cache=cache, progress=progress)
    res = diagnostics(embs)
    if png is not None:
        plot_diagnostics(embs, png, title=f"{len(next(iter(embs.values()))[0]) if embs else 0} items ({split})")
    return res, embs


def plot_diagnostics(embs: Embs, path: str | Path, *, title: str | None = None, max_points: int = 3000) -> Path:
    """PNG: a 2-D PCA of every modality's embeddings (fitted on all of them) + positive/negative similarity histograms."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    embs = {m: as_embedded(e) for m, e in embs.items()}
    mods = sorted(m for m in embs if len(embs[m].vectors))
    pairs = [(a, b) for a, b in itertools.combinations(mods, 2) if len(_paired(embs, a, b)[0]) >= 2]
    ncols = 1 + max(1, len(pairs))
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 4.4), squeeze=False)
    axes = axes[0]
    ax = axes[0]
    if mods:
        allX = np.concatenate([embs[m].vectors for m in mods]).astype(np.float64)
        mu = allX.mean(0)
        _, _, vt = np.linalg.svd(allX - mu, full_matrices=False)
        comps = vt[:2]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, m in enumerate(mods):
            X = _subsample(np.asarray(embs[m].vectors, np.float64), max_points, i)
            Y = (X - mu) @ comps.T
            c = colors[i % len(colors)]
            ax.scatter(Y[:, 0], Y[:, 1] if Y.shape[1] > 1 else np.zeros(len(Y)), s=6, alpha=0.5, color=c, label=f"{m} ({len(embs[m].vectors)})")
            cen = (np.asarray(embs[m].vectors).mean(0) - mu) @ comps.T
            ax.scatter([cen[0]], [cen[1] if len(cen) > 1 else 0], s=140, marker="X", color=c, edgecolor="black")
        ax.legend(fontsize=8, markerscale=2)
    ax.set_title("PCA of the embeddings (X = centroid)")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    for ax, (a, b) in zip(axes[1:], pairs):
        A, B = _paired(embs, a, b)
        sim = A @ B.T
        n = len(A)
        pos = np.diag(sim)
        neg = sim[~np.eye(n, dtype=bool)]
        bins = np.linspace(min(pos.min(), neg.min()), max(pos.max(), neg.max()), 50)
        ax.hist(neg, bins=bins, density=True, alpha=0.55, label=f"unpaired ({len(neg)})")
        ax.hist(pos, bins=bins, density=True, alpha=0.55, label=f"paired ({n})")
        ax.set_title(f"{a} vs {b}: cosine similarity")
        ax.legend(fontsize=8)
    if not pairs:
        axes[1].text(0.5, 0.5, "no paired items", ha="center", va="center")
        axes[1].set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def diagnostics_table(results: Mapping[str, Mapping[str, float]], title: str = "diagnostics"):
    """A Rich table: one row per diagnostic key, one column per system."""
    from rich.table import Table

    keys = sorted({k for r in results.values() for k in r if k.startswith("diag/")})
    t = Table(title=title)
    t.add_column("diagnostic")
    for s in results:
        t.add_column(s, justify="right")
    for k in keys:
        t.add_row(k[5:], *[("-" if results[s].get(k) is None else f"{results[s][k]:.3f}") for s in results])
    return t

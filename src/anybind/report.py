"""``anybind report SPACE MANIFEST --out report.html``: one self-contained HTML page about a space.

The page holds, for one split of a manifest:

* the retrieval table (every direction: R@1/5/10, median rank, chance) and recall@K curves;
* zero-shot classification over a label key (accuracy beside chance, confusion matrices);
* the geometry: a 2-D PCA of every modality's embeddings (the modality gap made
  visible), histograms of paired vs unpaired similarities, and the diagnostics
  numbers (:mod:`anybind.diagnostics`);
* calibration (a calibrated space, :mod:`anybind.calibration_report`): per modality pair the reliability
  diagram and the expected calibration error before / after, and precision / recall at the suggested threshold;
* the training curves the space recorded (``space.info["training"]["history"]``),
  its configuration and lineage.

Figures are PNGs drawn with matplotlib (Agg) and embedded as base64 ``data:``
URIs; there is no script, stylesheet, font or image fetched from anywhere, so
the file can be mailed or archived as is.  Every number comes from
:mod:`anybind.evaluate` and :mod:`anybind.diagnostics`.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .version import __version__
from .pagekit import CSS, esc as _e, img as _img, num as _f, png_b64 as _png, pyplot as _plt, table as _table  # noqa: F401
from .data.templates import templates_for
from .wording import counted

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .data.manifest import Manifest, Record
    from .space import Space

#: the K of the recall@K curves (those above the gallery size are dropped)
KS_CURVE = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
TABLE_KS = (1, 5, 10)


#: marks a page as an anybind report (a rerun may replace it; any other file needs --overwrite)
GENERATOR = "<meta name='generator' content='anybind report'>"

def default_label(records: Sequence["Record"], min_share: float = 0.5) -> str | None:
    """The label key to classify by: on at least ``min_share`` of the records, with the fewest
    distinct values (at least 2); ties go to the alphabetically first key.  ``None`` if none fits."""
    if not records:
        return None
    values: dict[str, set[str]] = {}
    have: dict[str, int] = {}
    for r in records:
        for k, v in (r.labels or {}).items():
            if isinstance(v, (str, int)) and not isinstance(v, bool):
                values.setdefault(k, set()).add(str(v))
                have[k] = have.get(k, 0) + 1
    fits = [k for k in values if have[k] >= min_share * len(records) and len(values[k]) >= 2]
    return min(fits, key=lambda k: (len(values[k]), k)) if fits else None


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def recall_curves_png(ret: dict[str, float], ks: Sequence[int]) -> str | None:
    """Recall@K against K (log scale) for every retrieval direction, with chance (K/n) dashed."""
    dirs = sorted({k.rsplit("/", 1)[0] for k in ret if "->" in k})
    if not dirs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ns = set()
    for d in dirs:
        kk = [k for k in ks if f"{d}/R@{k}" in ret]
        ax.plot(kk, [ret[f"{d}/R@{k}"] for k in kk], marker="o", ms=3, label=f"{d} (n={int(ret[f'{d}/n'])})")
        ns.add(int(ret[f"{d}/n"]))
    for n in sorted(ns):
        kk = [k for k in ks if k <= n]
        ax.plot(kk, [k / n for k in kk], ls="--", color="grey", lw=1)
    ax.plot([], [], ls="--", color="grey", lw=1, label="chance (K/n)")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_xticks([k for k in ks if k <= max(ns)])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("recall@K by direction")
    fig.tight_layout()
    return _png(fig)


def confusion_png(zs: dict[str, Any], modality: str, label: str) -> str:
    """A row-normalised confusion matrix (true class rows, predicted columns)."""
    plt = _plt()
    conf = np.asarray(zs["confusion"], dtype=np.float64)
    names = [str(x) for x in zs["labels"]]
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(names)
    side = min(16.0, max(4.5, 0.32 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fs = 8 if n <= 25 else 6 if n <= 50 else 4
    ax.set_xticks(range(n), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), names, fontsize=fs)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{modality}: zero-shot {label} (accuracy {zs['accuracy']:.3f}, chance {zs['chance']:.3f})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    fig.tight_layout()
    return _png(fig)


def geometry_png(embs: dict[str, tuple], title: str) -> str:
    """:func:`anybind.diagnostics.plot_diagnostics` (PCA of every modality + similarity histograms), as base64."""
    from .diagnostics import plot_diagnostics

    with tempfile.TemporaryDirectory(prefix="anybind-report-") as tmp:
        p = plot_diagnostics(embs, Path(tmp) / "geometry.png", title=title)
        return base64.b64encode(p.read_bytes()).decode("ascii")


def training_png(history: list[dict[str, Any]], best_epoch: int | None) -> str | None:
    """One small plot per recorded quantity (loss, validation score, temperature, ...) against the epoch."""
    if not history:
        return None
    keys = [k for k in history[0] if k != "epoch" and isinstance(history[0][k], (int, float))]
    keys = sorted(keys, key=lambda k: ({"loss": 0, "val": 1, "temperature": 2}.get(k, 3), k))[:6]
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    ep = [h.get("epoch", i) for i, h in enumerate(history)]
    for ax, k in zip(axes[0], keys):
        ys = np.array([h.get(k, np.nan) for h in history], dtype=np.float64)
        ax.plot(ep, ys, lw=1.4)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", ls=":", lw=1, label=f"best epoch {best_epoch}")
            ax.legend(fontsize=7)
        ax.set_title({"val": "validation score (mean R@1,5,10)"}.get(k, k), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------
def _diag_tables(diag: dict[str, float]) -> str:
    """The ``diag/<measure>/<what>`` numbers as three small tables: per pair, per direction, per modality."""
    groups: dict[str, dict[str, dict[str, float]]] = {"pair": {}, "direction": {}, "modality": {}}
    for k, v in diag.items():
        _, measure, what = k.split("/", 2)
        kind = "direction" if "->" in what else "pair" if "-" in what and what != "all" else "modality"
        groups[kind].setdefault(what, {})[measure] = v
    out = []
    for kind, rows in groups.items():
        if not rows:
            continue
        measures = sorted({m for r in rows.values() for m in r})
        out.append(_table([kind, *measures], [[_e(w), *[_f(r.get(m)) for m in measures]] for w, r in sorted(rows.items())]))
    return "".join(out)


def build_report(
    space: "Space",
    manifest: "str | Path | Manifest",
    *,
    split: str = "test",
    label: str | None = None,
    templates: Sequence[str] | None = None,
    cache: "FeatureCache | str | Path | None" = None,
    space_name: str | None = None,
    progress: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The report's HTML and its numbers (``{"retrieval", "zeroshot", "diagnostics", "label", ...}``)."""
    from .metrics import chance_metrics
    from .data.fields import require_label
    from .data.manifest import Manifest, load_manifest
    from .diagnostics import diagnostics, embed_split
    from .evaluate import retrieval_from_embeddings, zero_shot
    from .encoders.kinds import manifest_kinds

    t0 = time.perf_counter()
    templates = templates_for(space, templates)  # None: the space's own; checked before any work
    if isinstance(manifest, Manifest):
        man = manifest
    else:
        man = load_manifest(
            manifest, modalities=space.modalities, kinds=manifest_kinds(space.encoders), progress=progress
        )
    recs = man.records if split == "all" else man.split(split)
    embs = embed_split(space, man, split, cache=cache, progress=progress)
    n_max = max((len(e[0]) for e in embs.values()), default=0)
    ks = [k for k in KS_CURVE if k <= max(1, n_max)]
    ret = retrieval_from_embeddings(embs, ks=sorted(set(ks) | set(TABLE_KS)))
    chance = chance_metrics(ret)
    if label is None:
        label = default_label(recs)
    else:  # a key no record carries: refused in one line; records without it: counted
        require_label(recs, label, str(man.path), split, path=man.path,
                      modalities=[m for m in embs if not m.startswith("text")] if "text" in space.modalities else ())
    zs: dict[str, dict[str, Any]] = {}
    if label and "text" in space.modalities:
        for m in [m for m in embs if not m.startswith("text")]:
            res = zero_shot(space, recs, m, label, templates=templates, cache=cache)
            if res.get("n"):
                zs[m] = res
    diag = diagnostics(embs)
    name = space_name or "space"

    # -- header
    counts = {m: len(e[0]) for m, e in embs.items()}
    enc_rows = [
        [_e(m), _e(space.encoders[m]), _e(counts.get(m, 0))] for m in space.modalities
    ]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{GENERATOR}",
        f"<title>anybind report: {_e(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>anybind report: {_e(name)}</h1>",
        f"<p class='muted'>{_e(man.path)}, split <b>{_e(split)}</b> ({len(recs)} records); "
        f"{space.dim}-d space, identity {_e(space.identity())}, temperature {space.temperature:.4f}; "
        f"written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} by anybind {_e(__version__)}</p>",
        "<nav><a href='#retrieval'>retrieval</a><a href='#zeroshot'>zero-shot</a>"
        "<a href='#geometry'>geometry</a><a href='#calibration'>calibration</a><a href='#training'>training</a><a href='#lineage'>lineage</a></nav>",
        _table(["modality", "encoder", f"items in {split}"], enc_rows),
    ]

    # -- retrieval
    dirs = sorted({k.rsplit("/", 1)[0] for k in ret if "->" in k})
    rows = []
    for d in dirs:
        rows.append(
            [_e(d), _f(int(ret[f"{d}/n"]))]
            + [_f(ret.get(f"{d}/R@{k}")) for k in TABLE_KS]
            + [_f(ret.get(f"{d}/MdR"), 1)]
            + [_f(chance.get(f"{d}/R@{k}")) for k in (1, 10)]
        )
    parts.append("<h2 id='retrieval'>Retrieval</h2>")
    if rows:
        parts.append(
            "<p class='muted'>Each query must find its own record's item among every item of the other modality "
            "in the split (identical contents count as correct). Chance: K/n.</p>"
        )
        parts.append(
            _table(["direction", "n", *[f"R@{k}" for k in TABLE_KS], "median rank", "chance R@1", "chance R@10"], rows)
        )
        parts.append(_img(recall_curves_png(ret, ks), "recall@K curves"))
    else:
        parts.append("<p class='note'>No two modalities share records in this split: nothing to retrieve.</p>")

    # -- zero-shot
    parts.append("<h2 id='zeroshot'>Zero-shot classification</h2>")
    if not label:
        parts.append("<p class='note'>No label key fits (present on half the records, at least 2 values): "
                     "pass --label.</p>")
    elif not zs:
        parts.append(f"<p class='note'>No non-text item with label {_e(label)!s} in this split "
                     "(or no bound text modality to embed class names).</p>")
    else:
        parts.append(
            f"<p class='muted'>Label <b>{_e(label)}</b>; each item gets the class whose prompt ensemble "
            f"({', '.join(_e(t) for t in templates)}) is nearest. Chance: the majority class share.</p>"
        )
        parts.append(
            _table(
                ["modality", "accuracy", "chance", "classes", "n"],
                [[_e(m), _f(r["accuracy"]), _f(r["chance"]), _f(r["classes"]), _f(r["n"])] for m, r in zs.items()],
            )
        )
        for m, r in zs.items():
            parts.append(_img(confusion_png(r, m, label), f"confusion matrix, {m}"))

    # -- geometry
    parts.append("<h2 id='geometry'>Geometry: the modality gap</h2>")
    parts.append(
        "<p class='muted'>Left: a 2-D PCA (fitted on every modality together) of each modality's embeddings, "
        "X = centroid; separate clouds are the modality gap. Right: cosine similarity of paired vs unpaired "
        "items; the further apart, the easier retrieval.</p>"
    )
    parts.append(_img(geometry_png(embs, f"{name} ({split})"), "PCA of the embeddings and similarity histograms"))
    parts.append(
        _diag_tables(diag)
        + "<p class='muted'>gap: distance between centroids; separability: cross-validated accuracy telling "
        "two modalities apart (0.5 = mixed); pos_sim / neg_sim: mean cosine of paired / unpaired items; "
        "hubness: skew of the 10-occurrence (&gt;1: a few hubs answer most queries); erank: effective rank.</p>"
    )

    # -- calibration (issue 20: anybind.calibration_report)
    from .calibration_report import calibration_section

    cal_html, cal_numbers = calibration_section(space, man, split, cache)
    parts.append(cal_html)

    # -- training
    parts.append("<h2 id='training'>Training</h2>")
    tr = space.info.get("training") or {}
    hist = tr.get("history") or []
    if hist:
        parts.append(
            f"<p class='muted'>{counted(len(hist), 'epoch')} recorded; best epoch {_e(tr.get('best_epoch'))} "
            f"(validation score {_f(tr.get('best_val'))}); loss {_e(tr.get('loss', space.config.get('loss', '-')))}.</p>"
        )
        parts.append(_img(training_png(hist, tr.get("best_epoch")), "training curves"))
    else:
        method = next((ev.get("method") for ev in reversed(space.info.get("lineage", [])) if ev.get("method")), None)
        parts.append(
            f"<p class='note'>This space records no training history"
            f"{' (fitted with ' + _e(method) + ', training-free)' if method in ('procrustes', 'cca') else ''}.</p>"
        )
    if space.config:
        parts.append(_table(["setting", "value"], [[_e(k), _e(v)] for k, v in sorted(space.config.items())]))

    # -- lineage
    parts.append("<h2 id='lineage'>Lineage</h2>")
    lineage = space.info.get("lineage") or []
    parts.append(f"<pre>{_e(json.dumps(lineage, indent=2, default=str))}</pre>" if lineage else "<p>-</p>")
    parts.append(f"<p class='muted'>report computed in {time.perf_counter() - t0:.1f} s</p></body></html>")
    numbers = {
        "split": split,
        "records": len(recs),
        "label": label,
        "retrieval": ret,
        "zeroshot": {m: {k: v for k, v in r.items() if k not in ("confusion",)} for m, r in zs.items()},
        "diagnostics": diag,
        "calibration": cal_numbers,
    }
    return "".join(parts), numbers


def write_report(
    space: "Space", manifest: "str | Path | Manifest", out: str | Path, overwrite: bool = False, **kw: Any
) -> tuple[Path, dict[str, Any]]:
    """Build the report (see :func:`build_report`) and write it atomically to ``out``: a new file or an
    earlier report (another existing file only with ``overwrite``; checked before any work)."""
    from .io import atomic_write_bytes, check_output_file

    check_output_file(out, GENERATOR.encode(), overwrite)
    page, numbers = build_report(space, manifest, **kw)
    out = Path(out)
    atomic_write_bytes(out, page.encode("utf-8"))
    return out, numbers

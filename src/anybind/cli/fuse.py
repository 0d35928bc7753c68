"""``anybind fuse train / eval / merge``: fusion classifiers and regressors over a space's modalities, and
merging heads trained apart (LegoMerge, LegoFuse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer

from ..errors import AnybindError
from ._common import Split, check_out, fail, app, choice, console, seed_option

Kind = Literal["late", "concat", "gated", "attention"]
Schedule = Literal["constant", "ramp", "anneal"]
Balance = Literal["ogm-ge", "ogm", "agm", "none"]
Loss = Literal["mse", "huber"]

fuse_app = typer.Typer(
    help="Classifiers and regressors that fuse any subset of a space's modalities (robust to missing ones)."
    "\n\n"
    "Example:  anybind fuse train data/tux/manifest.jsonl --space spaces/tux --label top "
    "--modalities image,text --out models/tux-top\n\n"
    "then:  anybind fuse eval models/tux-top data/tux/manifest.jsonl --space spaces/tux",
    no_args_is_help=True,
)
app.add_typer(fuse_app, name="fuse")


def _fmt_mods(d: dict) -> str:
    return ", ".join(f"{m}={v:.3f}" for m, v in d.items() if v is not None)


@fuse_app.command("train")
def fuse_train(
    manifest: Path = typer.Argument(..., help="Labelled manifest (train split trains, val split selects the epoch)."),
    space_dir: Path = typer.Option(..., "--space", help="Saved space folder."),
    label: Optional[str] = typer.Option(None, "--label", help="Class label key in each record's labels (a classifier)."),
    target: Optional[str] = typer.Option(None, "--target", help="Numeric label key in each record's labels (a regressor)."),
    modalities: str = typer.Option(..., "--modalities", help="Comma-separated bound modalities to fuse, e.g. image,text,audio."),
    out: Path = typer.Option(..., "--out", help="Folder to save the model to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the fusion model already saved at --out."),
    kind: Kind = choice("attention", Kind, help="Fusion architecture."),
    dropout: float = typer.Option(0.3, help="Modality dropout probability (never drops all)."),
    dropout_schedule: Schedule = choice(
        "constant", Schedule,
        help="ramp: 0 -> dropout over the first half; anneal: dropout -> 0 over the second half.",
    ),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct", help="Fill missing modalities with a learned decoder."),
    balance: Balance = choice("ogm-ge", Balance, help="Modality balancing of the gradients."),
    alpha: float = typer.Option(0.5, help="Modulation strength (OGM / AGM)."),
    full_weight: float = typer.Option(0.0, help="Weight of an extra all-modality loss on every batch (with dropout)."),
    loss: Loss = choice("mse", Loss, help="Regression loss (with --target)."),
    epochs: int = typer.Option(60),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None),
):
    """Train a fusion classifier (--label) or regressor (--target) on a space's embeddings.

    Prints every 10th epoch's val score and each modality's contribution (unimodal probe score,
    Shapley mono-modal score, and the balancing coefficient).

    Example:  anybind fuse train data/tux/manifest.jsonl --space spaces/tux --label top --modalities image,text,audio --out models/tux-top
    Example:  anybind fuse train data/shop/manifest.jsonl --space spaces/shop --target price --modalities image,text --balance agm --out models/price
    """
    from ..fusion import FusionClassifier, FusionRegressor
    from ..space import Space

    if (label is None) == (target is None):
        fail(ValueError("give exactly one of --label (classification) or --target (regression)"))
    check_out(out, "fusion", overwrite)
    try:
        space = Space.load(space_dir)
        mods = [m.strip() for m in modalities.split(",") if m.strip()]
        kw = dict(kind=kind, dropout=dropout, dropout_schedule=dropout_schedule, reconstruct=reconstruct,
                  balance=None if balance == "none" else balance, alpha=alpha, full_weight=full_weight,
                  epochs=epochs, seed=seed)
        model = FusionClassifier(space, mods, **kw) if label else FusionRegressor(space, mods, loss=loss, **kw)
    except (AnybindError, ValueError) as e:
        fail(e)
    short = model.short

    def report(ep: dict) -> None:
        if ep["epoch"] % 10 and ep["epoch"] != epochs:
            return
        line = f"epoch {ep['epoch']:3d}: train {short} {ep[f'train_{short}']:.3f}"
        if f"val_{short}" in ep:
            line += f", val {short} {ep[f'val_{short}']:.3f} | probe {_fmt_mods(ep['contribution'])} | shapley {_fmt_mods(ep['shapley'])}"
        for tag in ("ogm", "agm"):
            if f"{tag}_coeff" in ep:
                line += f" | {tag} coeff {_fmt_mods(ep[f'{tag}_coeff'])}"
        console.print(line, highlight=False)

    try:
        model.fit(manifest, label or target, cache=cache, on_epoch=report)
        model.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    best = next((h for h in model.history_ if h.get("best")), model.history_[-1])
    what = (f"{len(model.classes_)} classes" if label else
            f"regression of {target!r} (train mean {model.target_mean_:.3g}, sd {model.target_std_:.3g}, {loss})")
    console.print(f"saved {out}: {what}, best epoch {best['epoch']}"
                  + (f", val {short} {best[f'val_{short}']:.3f}" if f"val_{short}" in best else ""), highlight=False)
    if "contribution" in best:
        console.print(f"per-modality contribution at the best epoch -- unimodal probe val {short}: {_fmt_mods(best['contribution'])}; "
                      f"Shapley mono-modal val {short}: {_fmt_mods(best['shapley'])}", highlight=False)
    for tag in ("ogm", "agm"):
        if f"{tag}_coeff" in best:
            console.print(f"mean {tag.upper()} gradient coefficient at the best epoch: {_fmt_mods(best[f'{tag}_coeff'])}", highlight=False)


@fuse_app.command("eval")
def fuse_eval(
    model: Path = typer.Argument(..., help="Saved fusion classifier or regressor folder."),
    manifest: Path = typer.Argument(..., help="Labelled manifest."),
    space_dir: Path = typer.Option(..., "--space", help="The space the model was trained on."),
    missing: Literal["all-subsets", "none"] = choice(
        "all-subsets", Literal["all-subsets", "none"],
        help="all-subsets: score every subset of the modalities; none: each record with what it has.",
    ),
    split: Split = choice("test", Split, help="Records to score on."),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct", help="Fill missing modalities with the decoder."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also plot the score per subset to this PNG."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write {metric: {subset: value}, n: {subset: count}} here."),
    cache: Optional[Path] = typer.Option(None),
):
    """Score a fusion model on every subset of the modalities: how it copes with missing ones.

    Each subset is scored on the records holding all of it: accuracy for a classifier; R², MAE and RMSE for a
    regressor.  Also prints each modality's Shapley mono-modal score on the split.

    Example:  anybind fuse eval models/tux-top data/tux/manifest.jsonl --space spaces/tux --png robustness.png
    """
    from ..data.manifest import load_manifest
    from ..fusion import load_fusion, subsets_table
    from ..encoders.kinds import manifest_kinds
    from ..space import Space

    try:
        space = Space.load(space_dir)
        clf = load_fusion(model, space)
        man = load_manifest(manifest, kinds=manifest_kinds(space.encoders), modalities=clf.modalities)
        recs = [r for r in man.split(split) if any(m in r.values for m in clf.modalities)]
        skipped = len(man.split(split)) - len(recs)
        res, cnt = clf.evaluate(recs, missing=missing, cache=cache, reconstruct=reconstruct, counts=True, metric="all")
        contrib = clf.contributions(recs, cache=cache)
    except (AnybindError, ValueError) as e:
        fail(e)
    console.print(subsets_table(res, cnt, title=f"{model} on {manifest} ({split}, {clf.task} of {clf.label_key!r})"))
    console.print(f"Shapley mono-modal {clf.metric} per modality: {_fmt_mods(contrib)}", highlight=False)
    if skipped:
        console.print(f"[yellow]{skipped} {split} record(s) hold none of {', '.join(clf.modalities)}: not scored[/yellow]")
    metrics = list(next(iter(res.values())))
    if json_out:
        json_out.write_text(json.dumps({**{k: {s: v[k] for s, v in res.items()} for k in metrics}, "n": cnt,
                                        "shapley": contrib}, indent=2, sort_keys=True))
        console.print(f"written to {json_out}")
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = sorted(res, key=lambda k: (k.count("+"), k))
        vals = [res[k][clf.metric] for k in names]
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names)), 3.5))
        ax.bar(range(len(names)), vals)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        if clf.metric == "accuracy":
            ax.set_ylim(0, 1)
        else:
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_ylim(min(0.0, *[v for v in vals if v == v]) - 0.05, 1)
        ax.set_ylabel("R²" if clf.metric == "r2" else clf.metric)
        ax.set_title(f"{clf.metric} by available modalities ({clf.kind})")
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        plt.close(fig)
        console.print(f"plot written to {png}")


@fuse_app.command("merge")
def fuse_merge(
    models: list[Path] = typer.Argument(..., help="Saved fusion heads (kind late) over disjoint modalities of one space and label."),
    space_dir: Path = typer.Option(..., "--space", help="The space every head was trained on."),
    out: Path = typer.Option(..., "--out", help="Folder to save the merged model to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the fusion model already saved at --out."),
    fine_tune: Optional[Path] = typer.Option(None, "--fine-tune", help="LegoFuse: a labelled manifest whose train records "
                                             "holding two modalities or more fine-tune the merged model (val split: the epoch)."),
    calibrate: Optional[Path] = typer.Option(None, "--calibrate", help="A labelled manifest whose val split fits each "
                                             "classifier head's temperature before the heads are averaged."),
    fine_tune_epochs: int = typer.Option(20, "--fine-tune-epochs", min=1, help="LegoFuse: most epochs (0, the merge as it is, competes on val)."),
    lr: float = typer.Option(5e-4, "--lr", help="LegoFuse learning rate."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None),
):
    """Merge fusion heads trained apart (one per modality, or per subset) into one model that takes any
    subset of their modalities (MM-Lego's LegoMerge); --fine-tune then trains it briefly on paired records (LegoFuse).

    Given one head's modalities only, the merged model predicts what that head predicts; given several, the
    heads' outputs averaged (--calibrate: each classifier head's logits divided by its temperature on val first).
    Heads bound to another space, or predicting another label, are refused.

    Example:  anybind fuse merge models/top-image models/top-text models/top-audio --space spaces/tux --out models/top-merged
    Example:  anybind fuse merge models/top-image models/top-text --space spaces/tux --calibrate data/tux/manifest.jsonl --fine-tune data/tux/manifest.jsonl --out models/top-lego
    """
    from ..data.manifest import load_manifest
    from ..encoders.kinds import manifest_kinds
    from ..fusion import lego_fuse, load_fusion, merge_fusion, merge_summary
    from ..space import Space

    check_out(out, "fusion", overwrite)
    try:
        space = Space.load(space_dir)
        heads = [load_fusion(m, space) for m in models]
        kinds, mods = manifest_kinds(space.encoders), [m for h in heads for m in h.modalities]
        val = None
        if calibrate is not None:
            val = load_manifest(calibrate, kinds=kinds, modalities=mods).split("val")
            if not val:
                raise ValueError(f"--calibrate {calibrate}: no val records to fit the temperatures on")
        merged = merge_fusion(heads, names=[str(m) for m in models], calibrate=val, cache=cache, seed=seed)
        if fine_tune is not None:
            lego_fuse(merged, load_manifest(fine_tune, kinds=kinds, modalities=mods), epochs=fine_tune_epochs, lr=lr, cache=cache)
        merged.save(out, overwrite=overwrite)
    except (AnybindError, ValueError) as e:
        fail(e)
    what = (f"{len(merged.classes_)} classes of {merged.label_key!r}" if merged.task == "classification"
            else f"regression of {merged.label_key!r}")
    console.print(f"saved {out}: {what} over {', '.join(merged.modalities)}; {merge_summary(merged)}", highlight=False)

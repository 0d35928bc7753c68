"""``anybind calibrate / audit``: what the space's answers mean (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from ..errors import AnybindError
from ._common import Split, app, choice, console, err, fail

CalMethod = Literal["platt", "isotonic"]


@app.command("calibrate")
def calibrate_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder (calibration.json is written into it)."),
    manifest: Path = typer.Argument(..., help="Manifest whose split the calibrators are fitted on."),
    split: Split = choice("val", Split, help="Records to fit on (never the test split you report on)."),
    method: CalMethod = choice("platt", CalMethod, help="platt: sigmoid(a*score+b); isotonic: monotone steps."),
    target_precision: float = typer.Option(0.9, "--target-precision", min=0.01, max=1.0,
                                           help="Print the score threshold reaching this precision (val, prior 0.5)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Fit calibrated match probabilities per modality pair and store them with the space.

    P(match) is stated at a prior of 0.5 (positive and negative pairs weighted equally).  Searches and
    classifications of a calibrated space then carry a probability per result.

    Example:  anybind calibrate spaces/tux data/tux/manifest.jsonl --split val
    """
    from ..calibration import fit_calibration
    from ..space import Space

    try:
        space = Space.load(space_dir)
        space.calibration = fit_calibration(space, manifest, split=split, method=method, cache=cache, progress=True)
        space.save(space_dir, overwrite=True)
    except AnybindError as e:
        fail(e)
    from rich.table import Table

    t = Table(title=f"{space_dir}: calibrated on {manifest} ({split}, {method}); P(match) at prior 0.5")
    for c in ("pair", "positives", "negatives", f"threshold @ precision {target_precision:g}", "P at threshold",
              "val recall"):
        t.add_column(c, justify="left" if c == "pair" else "right")
    for key, c in sorted(space.calibration.pairs.items()):
        th = c.threshold_for_precision(target_precision)
        t.add_row(key.replace("|", "-"), str(c.n_pos), str(c.n_neg),
                  *(("-", "-", "-") if th is None else
                    (f"{th['score']:.4f}", f"{th['probability']:.3f}", f"{th['recall']:.3f}")))
    console.print(t)


Fix = Literal["drop", "flag"]


@app.command("audit")
def audit_cmd(
    manifest: Path = typer.Argument(..., help="Manifest to audit (never modified)."),
    space_dir: Path = typer.Option(..., "--space", help="Saved space folder to judge the records with."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write every record's score and reasons here."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write an HTML page (thumbnails, players, reasons)."),
    fix: Optional[Fix] = choice(None, Fix, "--fix",
                                help="drop: leave flagged records out; flag: label them audit=<kinds>. Needs --out."),
    out: Optional[Path] = typer.Option(None, "--out", help="The cleaned manifest (a new file)."),
    threshold: float = typer.Option(0.75, "--threshold", min=0.0, max=1.0, help="Score from which --fix acts (a loose class' label at its weighed score)."),
    label: Optional[str] = typer.Option(None, "--label", help="Label key to check (default: the report's choice)."),
    near: float = typer.Option(0.95, "--near", min=0.5, max=1.0,
                              help="Cosine of the frozen encoder's features from which items are look-alikes."),
    k: int = typer.Option(10, "-k", min=1, max=100, help="Neighbours for the label and outlier checks."),
    top: int = typer.Option(15, "--top", min=0, help="Records to print (the page shows 100)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Rank a paired corpus' records by how wrong they look: mismatched pairs, cross-split duplicates
    (leakage, counted per split pair), labels that disagree with neighbours and zero-shot, outliers.

    Example:  anybind audit data/tux/manifest.jsonl --space spaces/tux --html audit.html --fix drop --out clean.jsonl
    """
    from ..audit import audit
    from ..audit_page import check_outputs, write_audit
    from ..calibration import load_for
    from ..space import Space

    try:  # unsafe outputs are refused before any work
        check_outputs(manifest, jsonl=jsonl, html=html, fix=fix, fix_out=out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    try:
        space = Space.load(space_dir)
        man = load_for(space, manifest)
        res = audit(space, man, label=label, k=k, near=near, cache=cache, progress=True)
        kinds = {m: space.encoders[m].split(":", 1)[0] for m in space.modalities}
        done = write_audit(res, man, kinds, jsonl=jsonl, html=html, fix=fix, fix_out=out, threshold=threshold,
                           overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    from rich.table import Table

    t = Table(title=f"{len(res.records)} records of {manifest} audited with {space_dir}")
    for c in ("score", "id", "split", "reason"):
        t.add_column(c, justify="right" if c == "score" else "left", overflow="fold")
    for r in res.records[:top]:
        f = max(r.findings, key=lambda f: f.score, default=None)
        t.add_row(f"{r.score:.3f}", r.id, str(r.split), "-" if f is None else f"{f.kind}: {f.detail}")
    console.print(t)
    if man.bad:  # records the manifest check skipped (their files unreadable already when it was read)
        err.print(f"[yellow]{escape(man.report())}[/yellow]")
    if res.unreadable:
        console.print(f"unreadable: {sum(res.unreadable.values())} records with a file that could not be read, "
                      "audited without it (" + ", ".join(f"{w} x{n}" for w, n in sorted(res.unreadable.items())) + ")",
                      highlight=False)
    for sp, c in sorted(res.leakage.items()):
        console.print(f"leakage {sp}: {c['records']} record pairs ("
                      + ", ".join(f"{m} {n}" for m, n in sorted(c.items()) if m != "records") + ")")
    for what, path in done.items():
        if what in ("jsonl", "html", "out"):
            console.print(f"{what} written to {path}")
    if fix is not None:
        console.print(f"--fix {fix}: {done['fixed']} records with score >= {threshold:g}")

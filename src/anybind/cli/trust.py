"""``anybind calibrate / audit``: what the space's answers mean (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from ..errors import AnybindError
from ._common import Split, app, choice, console, fail

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

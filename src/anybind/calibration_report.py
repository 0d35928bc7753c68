"""The report's "Calibration" section (``anybind report`` on a calibrated space): per modality pair the
reliability diagram and the expected calibration error, before (the score read as a probability) and
after calibration, on the report's split (see :func:`anybind.calibration.measure_calibration`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .calibration import measure_calibration
from .pagekit import esc, img, num, png_b64, pyplot, table

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .data.manifest import Manifest
    from .space_core import SpaceCore


def reliability_png(rows: dict[str, dict[str, Any]]) -> str:
    """One reliability diagram per pair: observed match rate against the mean probability per bin, raw and
    calibrated, the diagonal being perfect calibration."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.0), squeeze=False)
    for ax, (key, r) in zip(axes[0], sorted(rows.items())):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        for name, rel, e in (("score as probability", r["reliability_raw"], r["ece_raw"]),
                             ("calibrated", r["reliability"], r["ece"])):
            pts = [(c, a) for c, a, w in zip(rel["confidence"], rel["accuracy"], rel["weight"]) if w > 0]
            ax.plot(*zip(*pts), marker="o", ms=4, label=f"{name} (ECE {e:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(match)")
        ax.set_ylabel("observed match rate")
        ax.set_title(key.replace("|", "-"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_b64(fig)


def calibration_section(space: "SpaceCore", man: "Manifest", split: str,
                        cache: "FeatureCache | str | Path | None" = None) -> tuple[str, dict[str, Any]]:
    """The section's HTML and numbers (``{}`` numbers and a note for an uncalibrated space)."""
    head = "<h2 id='calibration'>Calibration: match probabilities</h2>"
    cal = space.calibration
    if cal is None:
        return head + ("<p class='note'>This space is not calibrated: run <code>anybind calibrate SPACE MANIFEST"
                       "</code> to give every search and classification a match probability.</p>"), {}
    rows = measure_calibration(space, man, split=split, cache=cache)
    if not rows:
        return head + f"<p class='note'>No calibrated modality pair shares 2 or more {esc(split)} records.</p>", {}
    parts = [
        head,
        f"<p class='muted'>Calibrated on the {esc(cal.split)} split ({esc(cal.method)}); P(match) at a prior of 0.5 "
        f"(positive and negative pairs weighted equally), measured on {esc(split)}. Before: the score read as a "
        "probability (clipped to [0, 1]). Threshold: the val-suggested score for precision "
        f"{rows[next(iter(rows))]['target_precision']:g}, and what it reaches here.</p>",
        table(["pair", "positives", "negatives", "ECE before", "ECE after", "Brier before", "Brier after",
               "threshold", "precision", "recall"],
              [[esc(k.replace("|", "-")), num(r["n_pos"]), num(r["n_neg"]), num(r["ece_raw"]), num(r["ece"]),
                num(r["brier_raw"]), num(r["brier"]), num(r.get("threshold")), num(r.get("precision")),
                num(r.get("recall"))] for k, r in sorted(rows.items())]),
        img(reliability_png(rows), "reliability diagram"),
    ]
    numbers = {k: {n: v for n, v in r.items() if not n.startswith("reliability")} for k, r in rows.items()}
    return "".join(parts), numbers

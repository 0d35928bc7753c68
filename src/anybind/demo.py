"""``anybind demo`` (what ``make demo`` runs): Tux Paint corpus -> bind image + text + sound -> measure."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from .bench.tuxpaint import compare_on_tuxpaint
from .evaluate import retrieval_table


def run_demo(work: Path, *, epochs: int = 200, seed: int = 0, cache=None, console: Console | None = None) -> dict:
    console = console or Console()
    t0 = time.perf_counter()
    work = Path(work)
    console.rule("[bold]anybind demo: Tux Paint stamps, image + text + sound")
    space, proc, man, results = compare_on_tuxpaint(work, cache=cache, seed=seed, epochs=epochs, console=console)
    counts = man.counts()
    console.print(
        "records per split: "
        + ", ".join(f"{s} {c['records']} (audio {c.get('audio', 0)})" for s, c in sorted(counts.items())),
        highlight=False,
    )
    console.print(retrieval_table(results, title="test split retrieval (all three systems computed in this run)"))
    space.info["metrics"].update({f"test/{k}": v for k, v in results["anybind"].items()})
    proc.info["metrics"].update({f"test/{k}": v for k, v in results["procrustes"].items()})
    out = space.save(work / "space")
    proc.save(work / "space-procrustes")
    (work / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    tr = space.info["training"]
    console.print(
        f"trained: best epoch {tr['best_epoch']}/{tr['epochs_run']}, temperature {space.temperature:.4f}; "
        f"procrustes subspace dim {proc.config['dim']}"
    )
    console.print(f"space saved to [bold]{out}[/bold]; metrics in {work / 'results.json'}")
    console.print(f'try:  anybind embed {out} --modality text "a barking dog"')
    console.print(f"      anybind eval {out} {man.path} --split test")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return results

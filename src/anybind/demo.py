"""``anybind demo`` (what ``make demo`` runs): Tux Paint corpus -> bind image + text + sound -> measure ->
index the corpus, write the HTML report, print how to serve it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from .bench.tuxpaint import compare_on_tuxpaint
from .evaluate import retrieval_table
from .index import Index
from .report import write_report


def run_demo(work: Path, *, epochs: int | None = None, seed: int = 0, cache=None,
             console: Console | None = None) -> dict:
    """``epochs``: None binds with ``Space.fit``'s defaults (on the sounds' 11 val pairs recipe auto keeps the
    training-free start, no fine-tuning); a number fine-tunes for at most that many epochs (``finetune=True``)."""
    console = console or Console()
    t0 = time.perf_counter()
    work = Path(work)
    console.rule("[bold]anybind demo: Tux Paint stamps, image + text + sound")
    fit_kw = {} if epochs is None else {"epochs": epochs, "finetune": True}
    space, proc, man, results = compare_on_tuxpaint(work, cache=cache, seed=seed, console=console, **fit_kw)
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
    kept = tr.get("robust", {}).get("finetune") is False
    trained = ("the training-free start kept (no fine-tuning: few val pairs)" if kept
               else f"best epoch {tr['best_epoch']}/{tr['epochs_run']}")
    console.print(f"trained: {trained}, temperature {space.temperature:.4f}; procrustes subspace dim {proc.config['dim']}",
                  highlight=False)
    console.print(f"space saved to [bold]{out}[/bold]; metrics in {work / 'results.json'}")
    index = Index.build(space, man, work / "index", cache=cache, overwrite=True, progress=True)
    counts_ix = ", ".join(f"{n} {m}" for m, n in sorted(index.counts().items()))
    console.print(f"search index of the whole corpus ({counts_ix}) written to {work / 'index'}", highlight=False)
    report, numbers = write_report(space, man, work / "report.html", overwrite=True, split="test", cache=cache,  # its own work folder
                                   space_name=f"{out} (demo)", progress=True)
    console.print(f"report written to [bold]{report}[/bold] (zero-shot label {numbers['label'] or '-'})", highlight=False)
    console.print(f'try:  anybind embed {out} --modality text "a barking dog"')
    console.print(f"      anybind eval {out} {man.path} --split test")
    console.print(f'      anybind search {work / "index"} --text "a barking dog" --modality image')
    console.print(f"serve it:  [bold]anybind serve {out} --index {work / 'index'} --port 8000[/bold]"
                  "   then open http://127.0.0.1:8000/", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return results

"""Built-in benchmark tasks."""

from __future__ import annotations

from pathlib import Path

from . import TaskResult, task
from .tuxpaint import compare_on_tuxpaint


@task("tuxpaint-retrieval", "Tux Paint test split: image<->text, sound<->text, image<->sound retrieval vs chance and Procrustes")
def tuxpaint_retrieval(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    space, proc, man, res = compare_on_tuxpaint(work, cache=cache, seed=seed, console=console)
    return TaskResult(
        metrics=res["anybind"],
        baselines={"procrustes": res["procrustes"], "chance": res["chance"]},
        config={"space": space.config, "procrustes": proc.config, "records": len(man.records),
                "best_epoch": space.info["training"]["best_epoch"]},
    )

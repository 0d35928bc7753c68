"""``anybind fit`` from training shards: ``--stream``, ``--ray-workers N`` and under torchrun (DDP, one node or
several; see :mod:`anybind.scale.launch`).  :func:`fit_at_scale` is called by :func:`anybind.cli.fit.fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..epochs import describe_training
from ..errors import AnybindError
from ._common import console, fail, ray_target


def sharded(stream: bool, ray_workers: int) -> bool:
    """Whether ``anybind fit`` trains from training shards (``--stream``, ``--ray-workers N``, or under torchrun,
    which implies ``--stream``, one process or more) rather than in memory."""
    from ..scale.launch import under_torchrun

    return bool(stream or ray_workers > 0 or under_torchrun())


def fit_at_scale(sources: list[Path], modalities: list[str] | None, *, encoders: dict[str, str], cache: Path | None,
                 stream: bool, ray_workers: int, ray: bool, ray_address: str | None, strict: bool,
                 weight: list[float] | None, allow_eval_only: bool, recipe: str, method: str, out: Path,
                 overwrite: bool, kw: dict[str, Any]) -> bool:
    """Fit from training shards when ``--stream``, ``--ray-workers`` or torchrun's environment asks for it (and
    save on global rank 0; the other ranks of a torchrun job save and report nothing); ``False`` when none does
    (the in-memory fit then runs)."""
    from ..scale.launch import torchrun_launch

    try:
        launch = torchrun_launch()  # under torchrun with several processes: streaming, in DDP
    except AnybindError as e:
        fail(e)
    if not sharded(stream, ray_workers):
        return False  # (--ray / --ray-address without them: refused by anybind.cli.fit.fit, before any work)
    if method != "contrastive":
        raise typer.BadParameter("--stream / --ray-workers / torchrun train projectors: use --method contrastive")
    try:
        from ..scale.sharded import fit_sharded

        space = fit_sharded(
            [str(s) for s in sources], modalities, encoders=encoders, cache=cache,
            ray_workers=ray_workers, ray=ray_target(ray, ray_address), ray_address=ray_address,
            strict=strict, weights=weight or None, allow_eval_only=allow_eval_only, recipe=recipe,
            launch=launch, **kw,
        )
        if space is None:  # another rank of a torchrun job than 0: rank 0 saves and reports
            return True
        space.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    tr = space.info["training"]
    console.print(f"saved {space} to [bold]{out}[/bold] (trainer: {space.info['lineage'][-1]['trainer']})")
    console.print(f"{describe_training(tr)}, temperature {space.temperature:.4f}", highlight=False)
    return True

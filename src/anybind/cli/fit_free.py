"""``anybind fit`` without training: ``--from-pretrained`` (a pair imported as the space) and the options a
training-free ``--method`` (procrustes, cca) refuses.  :func:`fit_from_pretrained` and
:func:`refuse_training_options` are called by :func:`anybind.cli.fit.fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import AnybindError
from ._common import check_out, console, fail


#: the ``anybind fit`` options ``--from-pretrained`` reads; it refuses every other one given (a manifest and
#: --encoder with their own line), as a training-free --method does
FROM_PRETRAINED_OPTIONS = frozenset({"from_pretrained", "out", "overwrite", "manifests", "data", "encoder"})


def fit_from_pretrained(ctx: typer.Context, value: str, sources: list[Path], encoder: list[str] | None, out: Path,
                        overwrite: bool) -> None:
    """``fit --from-pretrained KIND=SOURCE``: the pair as the space (see :mod:`anybind.pairs`)."""
    from ..pairs import from_pretrained_pair, parse_pair
    from ..scale.launch import under_torchrun

    if under_torchrun():  # every process would import the pair and save it to the same --out
        raise typer.BadParameter("--from-pretrained imports the pair in one process (no training): run it without torchrun")
    if sources or encoder:
        raise typer.BadParameter("--from-pretrained imports the pair as it is: give no manifest and no "
                                 "--encoder (bind more modalities to the saved space with `anybind bind --add`)")
    given = given_options(ctx, {p.name for p in ctx.command.params} - FROM_PRETRAINED_OPTIONS)
    if given:  # --method, --epochs, --recipe, --cache, --device, ...: dropped without a word
        raise typer.BadParameter(f"--from-pretrained imports the pair as it is (nothing is fitted or encoded): it "
                                 f"uses no {', '.join(given)}; drop them or fit from a manifest")
    check_out(out, "space", overwrite)
    try:
        space = from_pretrained_pair(*parse_pair(value))
        space.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    console.print(f"saved {space} to [bold]{out}[/bold] (imported, logit scale {space.logit_scale:.4f}, "
                  f"{len(space.info['templates'])} prompt templates)", highlight=False)


#: the ``anybind fit`` options every method reads: its data, where it saves, where it runs.  A training-free
#: ``--method`` also reads its own (:data:`anybind.align.TRAINING_FREE_OPTIONS` that are fit options: --dim, --seed)
#: and refuses every other option given (:func:`training_options`): a new fit option is refused with procrustes / cca
#: until it is placed here, never dropped without a word.  Not here: --recipe (a recipe chooses encoders and training
#: options for trained projectors only), --stream / --ray-workers / --ray / --ray-address (the training-free fit runs
#: in memory, in this process).
FIT_COMMON_OPTIONS = frozenset({"manifests", "data", "modalities", "encoder", "from_pretrained", "out", "overwrite",
                                "method", "cache", "strict", "allow_eval_only", "device", "precision"})


def training_options(command: Any) -> list[str]:
    """The parameters of ``command`` (``anybind fit``'s click command) a training-free method does not read: every
    one neither in :data:`FIT_COMMON_OPTIONS` nor among the method's own options."""
    from ..align import TRAINING_FREE_OPTIONS

    return [p.name for p in command.params if p.name not in FIT_COMMON_OPTIONS and p.name not in TRAINING_FREE_OPTIONS]


def given_options(ctx: typer.Context, names: set[str] | frozenset[str]) -> list[str]:
    """The parameters named in ``names`` given on the command line (not left at their defaults), as spelt there."""
    given = []  # typer vendors click: its ParameterSource is told by name
    for p in ctx.command.params:
        src = getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT")
        if p.name in names and src not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(p.secondary_opts[0] if p.secondary_opts and ctx.params[p.name] is False else p.opts[0])
    return given


def refuse_training_options(ctx: typer.Context, method: str) -> None:
    """Refuse, in one line naming them, the training options given on the command line to a training-free
    ``--method`` (they were dropped without a word); those left at their defaults are fine."""
    given = given_options(ctx, set(training_options(ctx.command)))
    if given:
        raise typer.BadParameter(f"{method} is training-free (it takes --dim and --seed): it uses no "
                                 f"{', '.join(given)}; drop them or use --method contrastive", param_hint="--method")

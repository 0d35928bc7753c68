"""``anybind prompts``: show, set or choose the zero-shot prompt templates stored with a space."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from ._common import app, check_out, console, fail


@app.command()
def prompts(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    template: list[str] = typer.Option(None, "--template", help="Store this template (with {}; repeatable)."),
    choose_on: list[Path] = typer.Option(
        None, "--choose-on", help="Labelled manifest whose --split records choose the templates (repeatable)."),
    label: list[str] = typer.Option(None, "--label", help="Label key to classify by (one, or one per --choose-on)."),
    split: str = typer.Option("val", help="Records that choose (never test)."),
    candidate: list[str] = typer.Option(
        None, "--candidate", help="Candidate template (repeatable; default anybind.prompts.CANDIDATE_TEMPLATES)."),
    modality: str = typer.Option("image", help="The labelled modality."),
    max_templates: int = typer.Option(8, help="At most this many templates chosen."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the space here (default: in place)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Show the space's zero-shot prompts; --template stores given ones; --choose-on picks them greedily from
    candidates on held-out labelled records (val of the training corpus, other labelled corpora; never test).

    Example:  anybind prompts spaces/tux --choose-on data/tux/manifest.jsonl --label category --split val
    """
    from ..space import Space

    if template and choose_on:
        raise typer.BadParameter("give --template or --choose-on, not both")
    if choose_on and not label:
        raise typer.BadParameter("--choose-on needs --label (the key its records are classified by)")
    try:
        space = Space.load(space_dir)
        if not template and not choose_on:
            console.print("\n".join(space.templates), highlight=False, markup=False)
            return
        target = out or space_dir
        if out:
            check_out(out, "space", False)
        if template:
            space.set_templates(template)
        else:
            choice = space.choose_templates(list(choose_on), label[0] if len(label) == 1 else list(label), split=split,
                                            candidates=candidate or None, modality=modality,
                                            max_templates=max_templates, cache=cache)
            for s in choice.sets:
                console.print(f"{s['name']}: {s['records']} records, {s['classes']} classes "
                              f"({s['label']!r})", highlight=False, markup=False)
            console.print(f"mean balanced accuracy {choice.before:.3f} with the space's prompts before, "
                          f"{choice.score:.3f} with the {len(choice.templates)} chosen", highlight=False)
            if choice.kept:
                console.print(f"kept the space's own {len(choice.current)} template(s): the choice does not beat them "
                              f"on these records", highlight=False, markup=False)
        space.save(target, overwrite=True)
    except AnybindError as e:
        fail(e)
    console.print("\n".join(space.templates), highlight=False, markup=False)
    console.print(f"saved to {target}", highlight=False, markup=False)

"""``anybind report``: one self-contained HTML page about a space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from ._common import Split, app, choice, console, fail


@app.command()
def report(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="JSONL manifest to measure on."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    split: Split = choice("test", Split, help="Records to report on."),
    label: Optional[str] = typer.Option(
        None, help="Label key for zero-shot classification (default: the key on most records with the fewest values)."
    ),
    template: list[str] = typer.Option(None, "--template", help="Prompt template with {} (repeatable; default: the space's own, else 'a {}.')."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report's numbers here."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    overwrite: bool = typer.Option(False, help="Replace an existing file that is not an earlier report."),
):
    """One self-contained HTML page about a space: retrieval, recall@K, zero-shot, modality gap, training curves.

    Example:  anybind report spaces/tux data/tux/manifest.jsonl --out report.html --split test --label top
    """
    from ..report import GENERATOR, write_report

    NUMBERS_MARK = b'"anybind": "report numbers"'  # sorted first in the numbers file
    from ..io import check_output_file
    from ..space import Space

    try:
        check_output_file(out, GENERATOR.encode(), overwrite)  # before any work
        if json_out:
            check_output_file(json_out, NUMBERS_MARK, overwrite)
        space = Space.load(space_dir)
        path, numbers = write_report(space, manifest, out, overwrite=overwrite, split=split, label=label,
                                     templates=tuple(template) if template else None, cache=cache,
                                     space_name=str(space_dir), progress=True)
    except AnybindError as e:
        fail(e)
    console.print(f"report written to [bold]{path}[/bold] ({path.stat().st_size / 1024:.0f} KiB; "
                  f"{numbers['records']} {split} records, zero-shot label {numbers['label'] or '-'})", highlight=False)
    if json_out:
        json_out.write_text(json.dumps({"anybind": "report numbers", **numbers}, indent=2, sort_keys=True, default=str))
        console.print(f"numbers written to {json_out}")

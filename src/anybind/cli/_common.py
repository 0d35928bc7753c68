"""Shared pieces of the ``anybind`` command line: the Typer app, the consoles, option parsers."""

from __future__ import annotations


import typer
from rich.console import Console


app = typer.Typer(
    help=(
        "Bind frozen pretrained encoders (text, image, sound, your own) into one shared space, "
        "then search, classify and measure with it.\n\n"
        "Typical session:\n\n"
        "  anybind corpus tuxpaint --out data/tux\n\n"
        "  anybind fit data/tux/manifest.jsonl --modalities image,text,audio --out spaces/tux\n\n"
        "  anybind eval spaces/tux data/tux/manifest.jsonl --split test\n\n"
        "  anybind embed spaces/tux --modality text \"a barking dog\""
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> None:
    from rich.markup import escape

    # one line, never wrapped; the message is text, not markup (a path may hold "[...]")
    err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _parse_encoders(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--encoder takes MODALITY=SPEC (e.g. image=image:efficientnet-lite0), got {v!r}")
        m, spec = v.split("=", 1)
        out[m.strip()] = spec.strip()
    return out


def _split_csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def _ray_target(ray: bool, address: str | None) -> bool | str:
    """``--ray`` / ``--ray-address``: False (no Ray), True (local Ray, or $RAY_ADDRESS), or an address."""
    if address:
        return address
    return bool(ray)

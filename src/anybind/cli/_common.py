"""Shared pieces of the ``anybind`` command line: the Typer app, the consoles, option parsers."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.markup import escape


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
console = Console(soft_wrap=True)  # paths and ids in messages are never split across lines
# Errors and warnings are one line per problem, never wrapped at the terminal width (a user greps and copies
# paths and record ids out of them; without a terminal Rich would wrap at 80 columns).
err = Console(stderr=True, soft_wrap=True, highlight=False)


class _StderrHandler(logging.Handler):
    """The library's log records, as the CLI shows them: ``warning: ...`` lines on stderr, never wrapped."""

    STYLE = {logging.ERROR: "bold red", logging.WARNING: "yellow"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            level = record.levelname.lower()
            style = self.STYLE.get(record.levelno)
            for line in msg.splitlines() or [""]:
                if record.levelno >= logging.WARNING:
                    err.print(f"[{style}]{level}:[/{style}] {escape(line)}" if style else f"{level}: {escape(line)}")
                else:
                    err.print(line, markup=False)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


_handler: _StderrHandler | None = None


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Route the library's ``logging`` (logger ``anybind``) to stderr: info and up by default, debug with -v,
    warnings and errors only with -q."""
    global _handler
    log = logging.getLogger("anybind")
    if _handler is None:
        _handler = _StderrHandler()
        log.addHandler(_handler)
        log.propagate = False
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log.setLevel(level)


def _plain(e: Exception) -> str:
    """An exception as one line (a message that spans lines is joined, so a grep finds it whole)."""
    return " ".join(str(e).split("\n")) if str(e) else type(e).__name__


def fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(_plain(e))}")
    raise typer.Exit(2)


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Debug log lines too."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr (progress bars stay)."),
) -> None:
    configure_logging(verbose, quiet)


def check_out(out, kind: str, overwrite: bool, update: bool = False) -> None:
    """Refuse an unsafe --out before any work starts (see :func:`anybind.io.check_output`)."""
    from ..errors import AnybindError
    from ..io import check_output

    try:
        check_output(out, kind, overwrite, update=update)
    except AnybindError as e:
        fail(e)


def parse_encoders(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--encoder takes MODALITY=SPEC (e.g. image=image:efficientnet-lite0), got {v!r}")
        m, spec = v.split("=", 1)
        out[m.strip()] = spec.strip()
    return out


def split_csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def ray_target(ray: bool, address: str | None) -> bool | str:
    """``--ray`` / ``--ray-address``: False (no Ray), True (local Ray, or $RAY_ADDRESS), or an address."""
    if address:
        return address
    return bool(ray)

"""Shared pieces of the ``anybind`` command line: the Typer app, the consoles, option parsers."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any, Literal, get_args

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

#: a line of a help paragraph that starts a line of its own: an example, or an indented (command) line
_OWN_LINE = re.compile(r"(\s|Example|anybind )")


def join_help_lines(text: str | None) -> str | None:
    """A command's help with each paragraph's prose on one line: Typer (rich markup mode) keeps a docstring's
    single line breaks, so a sentence wrapped in the source broke mid-line at every terminal width.  A break stays
    only before a line of its own (an example, an indented command line)."""
    if not text:
        return text
    paras = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(re.sub(r"\n(?!" + _OWN_LINE.pattern + ")", " ", p) for p in paras)


def tidy_help(typer_app: typer.Typer) -> None:
    """:func:`join_help_lines` on every command and group of ``typer_app`` (after they are all registered)."""
    for info in typer_app.registered_commands:
        info.help = join_help_lines(info.help or inspect.getdoc(info.callback))
    for group in typer_app.registered_groups:
        group.help = join_help_lines(group.help or group.typer_instance.info.help)
        group.typer_instance.info.help = group.help
        tidy_help(group.typer_instance)


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


def parse_encoders(values: list[str] | None, option: str = "--encoder") -> dict[str, str]:
    """``MODALITY=SPEC`` values, each spec checked for its form and prefix before any work starts; relative local
    model paths made absolute (:func:`~anybind.encoders.registry.absolute_spec`)."""
    from ..encoders.registry import absolute_spec, spec_problem
    from ..errors import EncoderError

    out = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(
                f"{option} takes MODALITY=SPEC (e.g. image=image:efficientnet-lite0), got {v!r}",
                param_hint=option,
            )
        m, spec = (x.strip() for x in v.split("=", 1))
        problem = spec_problem(spec)
        if problem:
            fail(EncoderError(f"{option} {v}: {problem}; {option} takes MODALITY=PREFIX:NAME"))
        out[m] = absolute_spec(spec)  # a relative model folder / file: the saved space finds it anywhere
    return out


def split_csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def ray_target(ray: bool, address: str | None) -> bool | str:
    """``--ray`` / ``--ray-address``: False (no Ray), True (local Ray, or $RAY_ADDRESS), or an address."""
    if address:
        return address
    return bool(ray)


# Enumerated options: Typer checks them (listing the allowed values) and shows them in --help.
Precision = Literal["fp32", "fp16", "bf16"]
Split = Literal["train", "val", "test", "all"]
Rerank = Literal["invgc", "qbnorm", "csls"]
ProjectorKind = Literal["mlp", "linear"]


def wise_option(value: str) -> str | float | None:
    """``--wise`` of ``fit`` and ``update``: ``auto``, a mixing coefficient in [0, 1], or ``off`` / ``none``."""
    v = value.strip().lower()
    if v in ("off", "none", "auto"):
        return None if v != "auto" else "auto"
    try:
        alpha = float(v)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:  # NaN too
        raise typer.BadParameter(f"--wise takes 'auto', a number in [0, 1] or 'off' (or 'none'), got {value!r}")
    return alpha


def one_of(values: Any) -> str:
    """The metavar of an enumerated option (a ``Literal``): its values, spaced so that --help wraps them."""
    return "[" + " | ".join(get_args(values)) + "]"


def choice(default: Any, values: Any, *names: str, help: str) -> Any:
    """An option taking one of the ``values`` (a ``Literal``): Typer refuses anything else, listing them, and
    --help shows them."""
    return typer.Option(default, *names, metavar=one_of(values), help=help)


def seed_option(help: str = "Seed of every random draw (a whole number >= 0).") -> Any:
    """``--seed``: refused on the command line, in one line naming it, unless in [0, 2**63 - 1] (a negative one
    failed deep in numpy; :func:`anybind.recipe.check_seed` refuses it in the configs)."""
    from ..recipe import MAX_SEED

    return typer.Option(0, "--seed", min=0, max=MAX_SEED, help=help)


def device_option() -> Any:
    """``--device``: where torch models run (encoders, projector training), see :mod:`anybind.encoders.device`."""
    return typer.Option(
        "auto", "--device", metavar="[auto | cpu | cuda[:N] | mps]",
        help="Where encoders (and projector training) run: auto is CUDA when present, else the CPU.",
    )


def precision_option() -> Any:
    """``--precision``: autocast precision of the torch models."""
    return choice("fp32", Precision, "--precision",
                  help="Autocast precision of the models (fp16 needs a GPU; bf16 also runs on a CPU).")


def use_device(ctx: typer.Context, device: str, precision: str) -> Any:
    """Set the process's device and precision until the command ``ctx`` ends (a device this machine lacks,
    or fp16 on a CPU: error, exit 2)."""
    from ..encoders.device import make_runtime, use_runtime
    from ..errors import AnybindError

    try:
        rt = make_runtime(device, precision)
    except AnybindError as e:
        fail(e)
    return ctx.with_resource(use_runtime(rt))


def _fold_long_words_in_help() -> None:
    """Typer lays --help out in Rich tables that cut a word wider than its column with an ellipsis (a loss
    spec, a cache path, a long option name at 80 columns): fold such a word onto the next line instead, so
    nothing is lost.

    Option names and help texts go through Typer's two option highlighters, defaults ("[default: /usr/...]")
    through its parameter-help builder: both now return folding text.
    """
    from rich.text import Text
    from typer import rich_utils

    build = getattr(rich_utils, "_get_parameter_help", None)
    if build is not None and not getattr(build, "_anybind_folds", False):

        def folding_help(*args, **kw):
            out = build(*args, **kw)
            for part in getattr(out, "renderables", ()):
                if isinstance(part, Text):
                    part.overflow = "fold"
            return out

        folding_help._anybind_folds = True  # type: ignore[attr-defined]
        rich_utils._get_parameter_help = folding_help

    for name in ("highlighter", "negative_highlighter"):
        h = getattr(rich_utils, name, None)
        if h is None or getattr(h, "_anybind_folds", False):
            continue

        class Folding(type(h)):  # type: ignore[misc, valid-type]
            _anybind_folds = True

            def __call__(self, text):
                out = super().__call__(text)
                out.overflow = "fold"
                return out

        setattr(rich_utils, name, Folding())


def _keep_option_names_whole() -> None:
    """Typer lays an options panel out as a Rich table, one row a parameter: [required mark], long names, short
    names, secondary long names (``--no-x``), secondary short names, type, help.  Its columns are Rich's defaults
    (wrappable), so at 80 columns Rich narrows every column alike and splits a long option name (``--no-start-guar``
    / ``d``): a user cannot type a flag the help does not show whole.  Make every column but the last two (type,
    help) ``no_wrap``, so Rich narrows only those, and put a secondary long name under its long name (its column
    stays empty), so the help column keeps the width a second name column would take.  Typer has no setting for
    this: its module's ``Table`` becomes a subclass that does it (tests/test_cli_help_names.py fails loudly when
    Typer changes the layout)."""
    from rich.text import Text
    from typer import rich_utils

    base = getattr(rich_utils, "Table", None)
    if base is None or getattr(base, "_anybind_whole_names", False):
        return

    class OptionsTable(base):  # type: ignore[misc, valid-type]
        _anybind_whole_names = True

        def add_row(self, *renderables, **kw):
            cells = list(renderables)
            names = not self.show_header and len(cells) >= 6  # an options panel's row (the commands panel has 2)
            if names and all(isinstance(c, Text) for c in cells[-6:-2]) and cells[-4].plain:
                cells[-6], cells[-4] = Text("\n").join([cells[-6], cells[-4]]), Text("")
            super().add_row(*cells, **kw)
            if names:
                for column in self.columns[:-2]:
                    column.no_wrap = True

    rich_utils.Table = OptionsTable


def _plain_usage_errors() -> None:
    """Typer prints a usage error (an unknown or missing option, a bad value, typer.BadParameter) boxed in a
    Rich panel, wrapped at the terminal's width (80 columns without one), splitting a long value or path across
    lines.  Print it as the CLI prints every error instead: a usage line, then one unwrapped ``error:`` line."""
    from typer import rich_utils

    if getattr(rich_utils.rich_format_error, "_anybind_plain", False):
        return

    def plain_error(self) -> None:
        if type(self).__name__ == "NoArgsIsHelpError":  # `anybind fit` alone: the help was shown
            return
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            hint = (f"  (see '{ctx.command_path} {ctx.help_option_names[0]}')"
                    if ctx.command.get_help_option(ctx) is not None else "")
            err.print(ctx.get_usage() + hint, markup=False)
        err.print(f"[bold red]error:[/bold red] {escape(' '.join(self.format_message().splitlines()))}")

    plain_error._anybind_plain = True  # type: ignore[attr-defined]
    rich_utils.rich_format_error = plain_error


_fold_long_words_in_help()
_keep_option_names_whole()
_plain_usage_errors()


def load_vector(path: Path, dim: int):
    """``--vector``: one vector of width ``dim`` from a .npy file, read by the library's
    :func:`~anybind.data.series.load_npy` (memory-mapped: a wrong shape is refused by its header; never unpickled),
    checked by :func:`~anybind.index.query.query_vector`."""
    from ..data.series import load_npy
    from ..errors import DataError
    from ..index import QueryError
    from ..index.query import query_vector

    what = f"--vector {path}"
    if not path.is_file():
        raise QueryError(f"{what}: no such file")
    try:
        x = load_npy(what, path)
    except DataError as e:
        raise QueryError(f"{what}: not a .npy array of numbers ({str(e).removeprefix(what + ': ')})") from None
    return query_vector(x, dim, what)


def query_pairs(values: list[str] | None, flag: str = "--query") -> list[tuple[str, str]]:
    """``MODALITY=VALUE`` options as ``(modality, value)`` pairs (a usage error for any other form)."""
    pairs = []
    for q in values or []:
        mod, sep, value = q.partition("=")
        if not sep or not mod.strip() or not value:
            raise typer.BadParameter(f"{flag} takes MODALITY=VALUE (e.g. speech=clip.wav), got {q!r}", param_hint=flag)
        pairs.append((mod.strip(), value))
    return pairs


def query_items(space: Any, pairs: list[tuple[str, str]], flag: str | None = "--query",
                several: bool = False) -> list[tuple[str, Any, str]]:
    """``(modality, value)`` pairs as ``(modality, item, name)`` inputs: a ``.npy`` file given for a modality of
    precomputed features (a ``vectors:`` encoder, which takes a key or the features themselves) is read as those
    features, checked as an upload of it is (:func:`~anybind.encoders.custom.npy_features`: one vector of the
    encoder's width, finite; never unpickled; with ``several``, a 2-D array is one item a row, named ``FILE[i]``);
    a value that is no such file stays a key when the encoder holds one of that name.  Errors start with
    ``FLAG MODALITY=VALUE`` (the value alone without ``flag``)."""
    from ..data.files import file_problem
    from ..encoders.custom import npy_features
    from ..errors import DataError
    from ..index import QueryError

    out: list[tuple[str, Any, str]] = []
    for m, v in pairs:
        enc = space.encoder(m) if space is not None and m in space.modalities else None
        if (enc is None or getattr(enc, "input_kind", "file") != "key" or not getattr(enc, "reads_arrays", False)
                or not v.lower().endswith(".npy")):
            out.append((m, v, v))  # the index or the space checks it as any input
            continue
        what = f"{flag} {m}={v}" if flag else v
        why = file_problem(v)
        try:
            if why == "file does not exist":
                try:
                    enc.load(v)  # a key of that name
                except DataError:
                    raise QueryError(f"{what}: no such file (nor a key of modality {m!r})") from None
                out.append((m, v, v))
                continue
            if why:
                raise QueryError(f"{what}: {why}")
            x = npy_features(Path(v), enc.dim, what, several=several)  # memory-mapped: no 10 GB read
        except DataError as e:
            raise QueryError(_plain(e)) from None
        out += [(m, x, v)] if x.ndim == 1 else [(m, row, f"{v}[{i}]") for i, row in enumerate(x)]
    return out

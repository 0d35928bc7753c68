"""``anybind keys add / revoke / list``: the API key file of ``anybind serve --api-keys``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from ._common import app, console, fail

keys_app = typer.Typer(help="API keys of `anybind serve --api-keys FILE` (only their hashes are stored).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def add(
    file: Path = typer.Argument(..., help="Key file (created if missing; readable by its owner only)."),
    name: str = typer.Argument(..., help="A name for the key (who or what uses it)."),
    scope: str = typer.Option("read", help="read, or write (read + the routes that change the index)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Requests per minute (default: unlimited)."),
    burst: Optional[float] = typer.Option(None, help="Requests at once before --rate applies (default: --rate)."),
):
    """Make a key: prints it once (only its SHA-256 is written to FILE).

    Example:  anybind keys add keys.json web --rate 600   (then: anybind serve ... --api-keys keys.json)
    """
    from ..serve.auth import add_key

    try:
        key = add_key(file, name, scope, rate, burst)
    except AnybindError as e:
        fail(e)
    console.print(key, highlight=False, markup=False)


@keys_app.command("revoke")
def revoke(
    file: Path = typer.Argument(..., help="Key file."),
    name: str = typer.Argument(..., help="The key's name."),
):
    """Revoke a key; a running service stops taking it within a second.

    Example:  anybind keys revoke keys.json web
    """
    from ..serve.auth import revoke_key

    try:
        revoke_key(file, name)
    except AnybindError as e:
        fail(e)
    console.print(f"revoked {name!r} in {file}", highlight=False)


@keys_app.command("list")
def list_keys(file: Path = typer.Argument(..., help="Key file.")):
    """The keys in a key file (names, scopes, limits; never the keys).

    Example:  anybind keys list keys.json
    """
    from ..serve.auth import read_keys

    try:
        keys = read_keys(file)
    except AnybindError as e:
        fail(e)
    for k in keys:
        rate = f"{k.rate_per_minute:g}/min" if k.rate_per_minute else "unlimited"
        console.print(f"{k.name}\t{k.scope}\t{rate}\t{'revoked' if k.revoked else 'active'}\t{k.created}",
                      highlight=False, markup=False)

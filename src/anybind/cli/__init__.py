"""The ``anybind`` command line (Typer + Rich).

Every command's ``--help`` ends with an example; run ``anybind --help`` for the list.
"""

from ._common import app, tidy_help
from . import corpus, fit, measure, search, serve, report, prompts, fuse, keep, keys, trust, caption, explain  # noqa: E402,F401  (each registers its commands, in this order)

tidy_help(app)  # after every command is registered

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

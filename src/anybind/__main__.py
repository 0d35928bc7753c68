"""``python -m anybind``: the ``anybind`` command line (the same as the ``anybind`` script and ``python -m anybind.cli``)."""

from .cli import main

if __name__ == "__main__":
    main()

"""``python -m anybind.cli``."""

from . import main

main()

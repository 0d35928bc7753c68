"""anybind."""

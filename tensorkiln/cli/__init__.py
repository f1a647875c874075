"""The ``tensorkiln`` command line: a thin layer over the public API."""

from tensorkiln.cli.main import main

__all__ = ["main"]

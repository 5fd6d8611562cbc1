"""The ``lynx-edge`` command line."""

from lynx_edge.cli.main import main

__all__ = ["main"]

"""The ``kerno-otel`` command line: a thin click layer over the library."""

from __future__ import annotations

from kerno_otel.cli.app import main

__all__ = ["main"]

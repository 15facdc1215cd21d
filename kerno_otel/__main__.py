"""``python -m kerno_otel``: the same command line as ``kerno-otel``."""

from __future__ import annotations

from kerno_otel.cli import main

main(prog_name="kerno-otel")

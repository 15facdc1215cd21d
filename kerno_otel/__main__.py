"""``python -m kerno_otel``: the same command line as ``kerno-otel``."""

from __future__ import annotations

from kerno_otel.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports this module again
    main(prog_name="kerno-otel")

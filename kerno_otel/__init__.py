"""kerno-otel: a compliance-grade audit log built on OpenTelemetry."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

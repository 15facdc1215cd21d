"""The HTTP server's own instruments, on the daemon's meter (``/metrics`` serves them all).

``/metrics`` is not written here: it is the OpenTelemetry Prometheus reader's
rendering of every instrument on the daemon's meter provider (the audit
pipeline's, the doctor's, the analyzer's, these and any plugin's), so it and
an OTLP metrics export read the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from kerno_otel_plugins._auth_limiter import FailureLimiter
from kerno_otel_plugins._http import HttpServer

#: Every refusal reason, reported at 0 before the first one.
REASONS: Final = ("token_missing", "token_mismatch", "mtls_failure")


def register(meter: Meter, limiter: FailureLimiter, server: HttpServer, started: float) -> None:
    """Observable instruments over the limiter's and the server's counts."""

    def one(read: Callable[[], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda options: [Observation(read())]

    def refusals(options: CallbackOptions) -> Iterable[Observation]:
        counts = {reason: 0 for reason in REASONS}
        counts.update(limiter.refusals)
        return [Observation(n, {"kerno.auth.reason": r}) for r, n in sorted(counts.items())]

    meter.create_observable_counter(
        "kerno.http.auth.failures",
        [refusals],
        "{request}",
        "HTTP requests refused, by reason (folded ones included).",
    )
    meter.create_observable_counter(
        "kerno.http.auth.failure_records",
        [one(lambda: limiter.records)],
        "{record}",
        "auth.failure records written (flood control folds the rest).",
    )
    meter.create_observable_gauge(
        "kerno.http.auth.failures.pending",
        [one(lambda: limiter.pending)],
        "{request}",
        "Refusals counted but not yet written (folded at the end of the interval).",
    )
    meter.create_observable_counter(
        "kerno.http.auth.sources_overflowed",
        [one(lambda: limiter.overflowed)],
        "{request}",
        "Refusals folded into the overflow key because the source table was full.",
    )
    meter.create_observable_counter(
        "kerno.http.connections.shed",
        [one(lambda: server.shed)],
        "{connection}",
        "Connections closed unserved because max_connections were being served.",
    )
    meter.create_observable_gauge(
        "process.uptime",
        [one(lambda: round(time.monotonic() - started, 3))],
        "s",
        "Seconds since the daemon's HTTP server started.",
    )

"""The meter plugins (and the core) record through: metric attributes scrubbed like spans.

A metric attribute leaves the process on every export and scrape, so it gets
the same treatment as a span's (:mod:`kerno_otel.telemetry.redact`): string
values through the audit log's redactor, address and process-id keys replaced
whatever their type. Each instrument is a thin wrapper over the SDK's; an
observable instrument's callbacks are wrapped so their observations are
cleaned too (generator-style callbacks as well, driven as the SDK would).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

# The API names its synchronous gauge _Gauge (still experimental in 1.45).
from opentelemetry.metrics import _Gauge as Gauge
from opentelemetry.util.types import Attributes

from kerno_otel.telemetry.redact import Scrub, clean_attributes

Callback = Any  # the API's CallbackT: a callable or a generator


class _Cleaner:
    def __init__(self, scrub: Scrub) -> None:
        self._scrub = scrub

    def __call__(self, attributes: Attributes) -> Attributes:
        if not attributes:
            return attributes
        return clean_attributes(self._scrub, attributes)

    def callbacks(self, given: Sequence[Callback] | None) -> list[Callback] | None:
        if given is None:
            return None
        return [self._wrap(_plain(cb) if inspect.isgenerator(cb) else cb) for cb in given]

    def _wrap(
        self, callback: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def cleaned(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(o.value, self(o.attributes), o.context) for o in callback(options)]

        return cleaned


def _plain(generator: Any) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A generator-style callback as a plain one, driven as the SDK drives it."""
    next(generator)  # to its first yield

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return generator.send(options)  # type: ignore[no-any-return]
        except StopIteration:
            return []

    return callback


class _Counter(metrics.Counter):
    def __init__(self, inner: metrics.Counter, clean: _Cleaner) -> None:
        # The API's instrument __init__ is abstract with nothing to keep: not called.
        self._inner, self._clean = inner, clean

    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._inner.add(amount, self._clean(attributes), context)


class _UpDownCounter(metrics.UpDownCounter):
    def __init__(self, inner: metrics.UpDownCounter, clean: _Cleaner) -> None:
        self._inner, self._clean = inner, clean

    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._inner.add(amount, self._clean(attributes), context)


class _Histogram(metrics.Histogram):
    def __init__(self, inner: metrics.Histogram, clean: _Cleaner) -> None:
        self._inner, self._clean = inner, clean

    def record(
        self, amount: int | float, attributes: Attributes = None, context: Any = None
    ) -> None:
        self._inner.record(amount, self._clean(attributes), context)


class _Gauge(Gauge):
    def __init__(self, inner: Gauge, clean: _Cleaner) -> None:
        self._inner, self._clean = inner, clean

    def set(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._inner.set(amount, self._clean(attributes), context)


class ScrubbingMeter(metrics.Meter):
    """A :class:`~opentelemetry.metrics.Meter` whose instruments clean their attributes."""

    def __init__(self, inner: metrics.Meter, scrub: Scrub) -> None:
        super().__init__(inner.name, inner.version, inner.schema_url)
        self._inner = inner
        self._clean = _Cleaner(scrub)

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics.Counter:
        return _Counter(self._inner.create_counter(name, unit, description), self._clean)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> metrics.UpDownCounter:
        inner = self._inner.create_up_down_counter(name, unit, description)
        return _UpDownCounter(inner, self._clean)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics.Histogram:
        inner = self._inner.create_histogram(
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )
        return _Histogram(inner, self._clean)

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Gauge:
        return _Gauge(self._inner.create_gauge(name, unit, description), self._clean)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[Callback] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableCounter:
        return self._inner.create_observable_counter(
            name, self._clean.callbacks(callbacks), unit, description
        )

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[Callback] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableGauge:
        return self._inner.create_observable_gauge(
            name, self._clean.callbacks(callbacks), unit, description
        )

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[Callback] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableUpDownCounter:
        return self._inner.create_observable_up_down_counter(
            name, self._clean.callbacks(callbacks), unit, description
        )


__all__ = ["ScrubbingMeter"]

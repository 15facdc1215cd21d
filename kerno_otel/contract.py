"""What plugins register: the typed interfaces of sources, rules, sinks and AI providers.

:mod:`kerno_otel.hookspecs` says which hooks exist and when they are called;
this module says what the things those hooks register must look like. The
data they exchange (:class:`~kerno_otel.findings.Signals`,
:class:`~kerno_otel.findings.Finding`) is in :mod:`kerno_otel.findings`.
Every name here is also importable from ``kerno_otel``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kerno_otel.findings import Finding, Signals

if TYPE_CHECKING:
    from kerno_otel.config import Config

__all__ = [
    "AIProvider",
    "BPFProgram",
    "BPFStats",
    "BPFUnavailable",
    "PluginInfo",
    "ProviderError",
    "Rule",
    "RuleInput",
    "Sink",
    "SinkFactory",
    "Source",
    "SourceFactory",
]


# --- the doctor: sources, rules, sinks ---------------------------------------------------------


class Source(Protocol):
    """Measures signals over a window: ``begin`` at its start, ``end`` at its end.

    ``begin`` returns whatever ``end`` needs (a snapshot of counters); ``end``
    returns one :class:`~kerno_otel.findings.Signals`, listing what it could
    not measure in ``absent``. Either may raise: the cycle notes it and goes on.
    """

    def begin(self) -> Any: ...

    def end(self, begun: Any, window_s: float) -> Signals: ...


class SourceFactory(Protocol):
    """What ``register_sources`` registers: ``factory(config) -> Source | None``.

    Called at the start of every doctor cycle with the whole config in force (the
    plugin's own settings are ``config.section("<plugin name>")``, unchecked: raise
    ConfigError naming the key); None means the source cannot work on this host
    (no root, no procfs).
    """

    def __call__(self, config: Config, /) -> Source | None: ...


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: the merged signals, ``doctor.thresholds``, and earlier findings."""

    #: The cycle's signals, merged from every source (``values``, ``absent``, ``context``).
    signals: Signals
    #: ``doctor.thresholds``: kerno's own and those the loaded rules declare
    #: (``rule.thresholds``), the config's values over the defaults.
    thresholds: Mapping[str, float]
    #: Findings of the rules that ran before (rules with ``runs_last`` see all others').
    earlier: Sequence[Finding] = ()


class Rule(Protocol):
    """What ``register_doctor_rules`` registers: ``rule(RuleInput) -> iterable of Finding``.

    A rule whose signals are absent returns one INFO finding saying so. A rule
    with a true ``runs_last`` attribute runs after all others (``healthy_system``).
    A rule may declare its own thresholds in a ``thresholds`` attribute (name ->
    default number); ``doctor.thresholds`` may then set them, and they reach the
    rule in ``RuleInput.thresholds``. A rule that raises becomes an INFO finding
    ``rule failed: <exception type>`` and a ``plugin.error`` naming its plugin.
    """

    def __call__(self, given: RuleInput, /) -> Iterable[Finding]: ...


class Sink(Protocol):
    """Sends findings somewhere: ``render`` a finding to bytes once, ``deliver`` those bytes.

    ``render`` gets the finding already redacted; ``deliver`` sends exactly the
    bytes ``render`` returned and raises when they were not accepted. The engine
    hashes what ``render`` returned, so ``finding.emit``'s ``payload_hash`` is
    the hash of what was sent.
    """

    def render(self, finding: Finding, cycle_id: str) -> bytes: ...

    def deliver(self, payload: bytes) -> None: ...


class SinkFactory(Protocol):
    """What ``register_sinks`` registers: ``factory(config) -> Sink``.

    Called when a doctor is built, for the sinks ``doctor.sinks`` names; it may
    raise :class:`~kerno_otel.ConfigError` naming a key of its own section.
    """

    def __call__(self, config: Config, /) -> Sink: ...


# --- the analyzer: AI providers ----------------------------------------------------------------


class ProviderError(Exception):
    """An AI provider's call failed; the message is short, fixed text ("HTTP 503", "timeout").

    It goes into the ``ai.call`` record's ``error`` (scrubbed by the pipeline's
    redactor like any free text), so it must never quote the response body.
    """


@runtime_checkable
class AIProvider(Protocol):
    """What ``register_ai_providers`` registers: turns a prompt into text and token counts.

    ``complete`` returns (text, input tokens, output tokens) as the provider
    reports them (0 when it reports none). Raise :class:`ProviderError` with a
    short message on failure; any other exception is recorded by its class
    name only. The analyzer calls it from the doctor's thread, one call at a
    time per cycle, and applies the ``ai`` section's privacy mode, cache and
    rate limit before it. An optional ``default_model`` attribute names the
    model used when ``ai.model`` is not set.
    """

    name: str

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]: ...


# --- BPF programs -------------------------------------------------------------------------------


class BPFUnavailable(Exception):
    """This host cannot load BPF programs at all; the message says why in a few words.

    ("not root", "bcc missing", "no kernel headers", "tracefs not mounted"). A
    :class:`BPFProgram`'s ``load`` raises it before trying; the loader records it
    like any other failure and the doctor keeps working on procfs.
    """


@dataclass(frozen=True)
class BPFStats:
    """What a loaded program has counted since it was loaded (``kerno-otel bpf verify``)."""

    #: Events or samples the program aggregated (its own unit: calls, requests, kills).
    events: int
    #: Events it had to drop (a full map, a full buffer, a taken slot), never silently.
    lost: int


@runtime_checkable
class BPFProgram(Protocol):
    """What ``register_bpf_programs`` registers: a BPF program the daemon loads for you.

    The daemon (and ``kerno-otel doctor``, ``kerno-otel bpf verify``) calls
    ``load`` once for each program ``bpf.programs`` selects, times it and records
    the attempt as a ``bpf.load`` audit record naming ``tracepoints``; ``load``
    compiles and attaches, and raises (with a short message, scrubbed before it
    is written) when it cannot. One program failing leaves the others loaded.
    ``close`` detaches (safe twice, and on a program that never loaded). The
    plugin's sources read the loaded program's maps.
    """

    @property
    def tracepoints(self) -> Sequence[str]:
        """The tracepoints it attaches to (``"raw_syscalls:sys_enter"``)."""
        ...

    def load(self) -> None: ...

    def stats(self) -> BPFStats: ...

    def close(self) -> None: ...


# --- plugins as the daemon sees them -----------------------------------------------------------


@dataclass
class PluginInfo:
    """One loaded plugin, as ``kerno-otel plugins`` lists it (``DaemonContext.plugins``)."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)

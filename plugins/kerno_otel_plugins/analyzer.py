"""The analyzer plugin: explains a cycle's findings with an LLM; every call is an ``ai.call``.

``build(audit, config)`` gives the doctor an :class:`kerno_otel.findings.Analyzer`.
With ``ai.enabled`` and an ``ai.provider`` it asks that provider (Anthropic,
OpenAI or compatible, Ollama, or one a plugin registered through
``register_ai_providers``), within ``ai.privacy_mode``, answering repeated
finding sets from a cache and holding to ``ai.rate_limit_per_minute``; when the
provider fails, is rate-limited or none is configured, a deterministic template
writes the analysis instead. Each call — cache hits, rate-limited skips and
errors included — becomes exactly one ``ai.call`` record, which never holds the
prompt or the response (docs/analyzer.md). With no provider configured, or no
WARNING/CRITICAL finding to explain, nothing leaves the host and no ``ai.call``
is written.

The plugin answers ``make_analyzer``: the daemon puts what it returns in
``DaemonContext.analyzer`` (the same object across reloads: ``ai.*`` changes are
applied to it live), and ``kerno-otel doctor`` asks it for its one cycle.
Providers contributed by plugins come with the hook (``DaemonContext.ai_providers``
in the daemon).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from kerno_otel import (
    AIProvider,
    AuditLog,
    Config,
    ProviderError,
    Telemetry,
    hookimpl,
    parse_duration,
)
from kerno_otel.findings import Analysis, Finding, Signals
from kerno_otel.hookspecs import DaemonContext
from kerno_otel_plugins._ai_limits import ResponseCache, TokenBucket
from kerno_otel_plugins._ai_prompt import (
    SYSTEM_PROMPT,
    PrivacyMode,
    cache_key,
    render_prompt,
    template_text,
)
from kerno_otel_plugins._ai_providers import BUILTIN_PROVIDERS, DEFAULT_MODELS, make_builtin

__all__ = ["NAME", "AIAnalyzer", "build"]

#: Stable plugin name (the entry point's name).
NAME: Final = "analyzer"
#: Provider and model named in an Analysis written by the template with no provider configured.
TEMPLATE: Final = "template"
#: ``error`` texts are short fixed phrases; anything longer is cut.
_MAX_ERROR: Final = 120


@dataclass(frozen=True)
class _Setup:
    """Everything one ``ai`` section decides; swapped whole on a reload."""

    section: Mapping[str, Any]
    provider: AIProvider | None
    provider_name: str
    model: str
    max_tokens: int
    temperature: float
    privacy_mode: PrivacyMode
    cache: ResponseCache
    bucket: TokenBucket


def _seconds(value: Any, default: float) -> float:
    # load_config has checked these keys; a Config built in code may hold anything.
    try:
        return max(parse_duration(value), 0.0) if value is not None else default
    except ValueError:
        return default


def _whole(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return default
    return value


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _setup(
    section: Mapping[str, Any],
    providers: Mapping[str, AIProvider],
    env: Mapping[str, str],
    clock: Callable[[], float],
) -> _Setup:
    name = section.get("provider")
    provider: AIProvider | None = None
    if section.get("enabled") and isinstance(name, str) and name:
        # Built-in names always mean the built-in: a plugin cannot take over "anthropic".
        if name in BUILTIN_PROVIDERS:
            provider = make_builtin(name, section, env)
        elif name in providers:
            provider = providers[name]
    if provider is None:
        name = TEMPLATE
    model = (
        section.get("model")
        or DEFAULT_MODELS.get(str(name))
        or getattr(provider, "default_model", None)
        or ("default" if provider is not None else TEMPLATE)
    )
    mode = section.get("privacy_mode") or "summary"
    if mode not in ("full", "redacted", "summary"):
        mode = "summary"
    return _Setup(
        section=dict(section),
        provider=provider,
        provider_name=str(name),
        model=str(model),
        max_tokens=_whole(section.get("max_tokens"), 0) or 1024,
        temperature=_number(section.get("temperature"), 0.2),
        privacy_mode=cast(PrivacyMode, mode),
        cache=ResponseCache(_seconds(section.get("cache_ttl"), 300.0), clock),
        bucket=TokenBucket(_whole(section.get("rate_limit_per_minute"), 10), clock),
    )


def _close(provider: object) -> None:
    close = getattr(provider, "close", None)
    if callable(close):
        # Best effort: a provider that fails to close must not break a reload.
        with contextlib.suppress(Exception):
            close()


class AIAnalyzer:
    """The :class:`kerno_otel.findings.Analyzer` the analyzer plugin builds.

    Thread-safe: the cache and the rate limit are locked, and a reload swaps
    the whole setup at once (a call in flight finishes with the old one).
    """

    def __init__(
        self,
        audit: AuditLog,
        config: Config,
        *,
        providers: Mapping[str, AIProvider] | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self._providers = dict(providers or {})
        self._env = env if env is not None else os.environ
        self._clock = clock
        self._setup = _setup(config.section("ai"), self._providers, self._env, clock)
        #: The command's telemetry (handed to ``make_analyzer``): each call is a GenAI
        #: client span, and its duration and tokens go to the GenAI metrics.
        self.telemetry: Telemetry = Telemetry.off()

    @property
    def enabled(self) -> bool:
        """Whether a provider is configured (False: template only, no ``ai.call``)."""
        return self._setup.provider is not None

    @property
    def provider_name(self) -> str:
        return self._setup.provider_name

    def reconfigure(self, config: Config) -> bool:
        """Apply a new ``ai`` section; True when it changed (cache and rate limit start afresh)."""
        section = config.section("ai")
        if dict(section) == self._setup.section:
            return False
        old = self._setup
        self._setup = _setup(section, self._providers, self._env, self._clock)
        if old.provider is not None and old.provider_name in BUILTIN_PROVIDERS:
            _close(old.provider)
        return True

    def close(self) -> None:
        """Close the built-in provider's HTTP client. Safe to call twice."""
        if self._setup.provider_name in BUILTIN_PROVIDERS:
            _close(self._setup.provider)

    def analyze(self, cycle_id: str, findings: Sequence[Finding], signals: Signals) -> Analysis:
        """One analysis for the cycle; never raises (the template answers instead)."""
        setup = self._setup
        if setup.provider is None:
            return Analysis(template_text(findings), TEMPLATE, TEMPLATE, "miss", True)
        if not any(f.severity in ("WARNING", "CRITICAL") for f in findings):
            # Nothing to explain: a healthy cycle sends nothing anywhere (and so records
            # no ai.call); the template says so.
            return Analysis(template_text(findings), TEMPLATE, TEMPLATE, "miss", True)
        # One GenAI client span per call (semantic conventions for generative AI);
        # the ai.call record is emitted inside it and carries its ids.
        with self.telemetry.tracer.start_as_current_span(
            f"chat {setup.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": setup.provider_name,
                "gen_ai.request.model": setup.model,
                "kerno.doctor.cycle_id": cycle_id,
            },
        ):
            return self._call(setup, cycle_id, findings, signals)

    def _call(
        self, setup: _Setup, cycle_id: str, findings: Sequence[Finding], signals: Signals
    ) -> Analysis:
        started = time.perf_counter()
        provider = setup.provider
        if provider is None:  # analyze() checked; a reload swaps whole setups only
            return self._fallback(setup, findings)
        key = cache_key(findings)
        cached = setup.cache.get(key)
        if cached is not None:
            self._record(setup, cycle_id, started, cache="hit")
            return Analysis(cached, setup.provider_name, setup.model, "hit", False)
        if not setup.bucket.take():
            self._record(setup, cycle_id, started, error="rate limited")
            return self._fallback(setup, findings)
        prompt_size = 0
        redactions: dict[str, int] = {}
        try:
            prompt = render_prompt(findings, signals, setup.privacy_mode)
            if setup.privacy_mode != "full":
                # summary holds no free-text evidence by construction; the redactor is a
                # second line of defence there (a title quoting a path, a pid as a number).
                prompt, redactions = self.audit.redactor.redact_text(prompt)
            prompt_size = len(SYSTEM_PROMPT.encode()) + len(prompt.encode())
            text, tokens_in, tokens_out = provider.complete(
                prompt, SYSTEM_PROMPT, setup.model, setup.max_tokens, setup.temperature
            )
            if not text.strip():
                raise ProviderError("bad response: empty text")
        except ProviderError as exc:
            error = " ".join(str(exc).split())[:_MAX_ERROR] or "provider error"
            self._record(setup, cycle_id, started, prompt_size, redactions=redactions, error=error)
            return self._fallback(setup, findings)
        except Exception as exc:
            # A third-party provider's own exception: its class name only, never its text.
            error = f"provider raised {type(exc).__name__}"[:_MAX_ERROR]
            self._record(setup, cycle_id, started, prompt_size, redactions=redactions, error=error)
            return self._fallback(setup, findings)
        setup.cache.put(key, text)
        self._record(
            setup,
            cycle_id,
            started,
            prompt_size,
            len(text.encode()),
            tokens=(tokens_in, tokens_out),
            redactions=redactions,
        )
        return Analysis(text, setup.provider_name, setup.model, "miss", False)

    @staticmethod
    def _fallback(setup: _Setup, findings: Sequence[Finding]) -> Analysis:
        return Analysis(template_text(findings), setup.provider_name, setup.model, "miss", True)

    def _record(
        self,
        setup: _Setup,
        cycle_id: str,
        started: float,
        prompt_size: int = 0,
        response_size: int = 0,
        *,
        cache: Literal["hit", "miss"] = "miss",
        tokens: tuple[int, int] = (0, 0),
        redactions: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        details: dict[str, Any] = {
            "provider": setup.provider_name,
            "model": setup.model,
            "cache": cache,
            "tokens": {"input": max(0, int(tokens[0])), "output": max(0, int(tokens[1]))},
            "prompt_size": prompt_size,
            "response_size": response_size,
            "redactions": dict(sorted((redactions or {}).items())),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "privacy_mode": setup.privacy_mode,
            "cycle_id": cycle_id,
        }
        if error is not None:
            details["error"] = error
        self._observe(setup, details, error)
        # Telemetry never raises into the doctor (emit itself does not for a bad record).
        with contextlib.suppress(Exception):
            self.audit.emit(
                "ai.call",
                details=details,
                outcome="failure" if error is not None else "success",
                severity="WARN" if error is not None else None,
            )

    def _observe(self, setup: _Setup, details: Mapping[str, Any], error: str | None) -> None:
        """The call's span attributes and GenAI metrics (the current span is the call's)."""
        span = trace.get_current_span()
        tokens = details["tokens"]
        span.set_attribute("gen_ai.usage.input_tokens", tokens["input"])
        span.set_attribute("gen_ai.usage.output_tokens", tokens["output"])
        span.set_attribute("kerno.ai.cache", details["cache"])
        attributes: dict[str, str] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": setup.provider_name,
            "gen_ai.request.model": setup.model,
        }
        if error is not None:
            # error.type is low-cardinality: the fixed phrase before any detail.
            kind = error.split(":")[0][:40]
            span.set_status(StatusCode.ERROR, kind)
            span.set_attribute("error.type", kind)
            attributes["error.type"] = kind
        if details["cache"] == "hit" or error == "rate limited":
            return  # the provider was not asked: no client operation to measure
        instruments = self.telemetry.instruments
        instruments.ai_duration.record(details["duration_ms"] / 1000.0, attributes)
        if error is None:
            for kind, count in (("input", tokens["input"]), ("output", tokens["output"])):
                instruments.ai_tokens.record(count, {**attributes, "gen_ai.token.type": kind})


def build(
    audit: AuditLog,
    config: Config,
    *,
    providers: Mapping[str, AIProvider] | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AIAnalyzer:
    """The analyzer for ``config``'s ``ai`` section, recording its calls in ``audit``.

    ``providers`` are plugin-contributed providers by name (what
    ``register_ai_providers`` collected); ``env`` is where ``KERNO_AI_API_KEY``
    is read (default ``os.environ``). Never raises for a bad ``ai`` section:
    unusable settings make every call fail, audited, with the template answering.
    """
    return AIAnalyzer(audit, config, providers=providers, env=env, clock=clock)


# --- hooks -------------------------------------------------------------------------------------


@hookimpl
def make_analyzer(
    audit: AuditLog, config: Config, providers: Mapping[str, AIProvider], telemetry: Telemetry
) -> AIAnalyzer:
    built = build(audit, config, providers=providers)
    # The daemon's or kerno-otel doctor's telemetry: each call is a GenAI client span.
    built.telemetry = telemetry
    return built


@hookimpl
def config_reload(context: DaemonContext, new: Config | None, error: str | None) -> None:
    if error is not None or new is None:
        return
    if isinstance(context.analyzer, AIAnalyzer):
        context.analyzer.reconfigure(new)
    elif context.analyzer is None:
        # make_analyzer failed at start-up (recorded as plugin.error); a reload retries it.
        context.analyzer = built = build(context.audit, new, providers=context.ai_providers)
        built.telemetry = context.telemetry


@hookimpl
def daemon_shutdown(context: DaemonContext) -> None:
    if isinstance(context.analyzer, AIAnalyzer):
        context.analyzer.close()

"""LLM providers for the analyzer: the provider protocol and the built-in wire formats over httpx.

Built-ins speak each provider's own HTTP API (no SDKs): Anthropic Messages,
OpenAI Chat Completions (and the many servers compatible with it), Ollama
``/api/chat``. A provider only turns a prompt into text and token counts; what
the prompt may contain, caching, rate limiting and auditing belong to the
analyzer (analyzer.py). The provider protocol and :class:`ProviderError` are the
core's (``kerno_otel.AIProvider``, ``kerno_otel.ProviderError``): third-party
providers implement the same contract.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from kerno_otel import AIProvider, ProviderError, parse_duration

__all__ = [
    "BUILTIN_PROVIDERS",
    "DEFAULT_MODELS",
    "AnthropicProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "ProviderSettings",
    "make_builtin",
]

#: The model asked for when ``ai.model`` is not set.
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "anthropic": "claude-3-5-haiku-latest",
    "openai": "gpt-4o-mini",
    "ollama": "llama3.1",
}
DEFAULT_ENDPOINTS: Final[Mapping[str, str]] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "ollama": "http://127.0.0.1:11434",
}
ANTHROPIC_VERSION: Final = "2023-06-01"
#: The variable read when ``ai.api_key`` is not set.
API_KEY_ENV: Final = "KERNO_AI_API_KEY"


@dataclass(frozen=True)
class ProviderSettings:
    """The transport part of the ``ai`` section, checked."""

    endpoint: str
    api_key: str | None
    timeout: float
    proxy: str | None
    ca_cert_file: str | None

    @classmethod
    def from_section(
        cls, name: str, section: Mapping[str, Any], env: Mapping[str, str]
    ) -> ProviderSettings:
        """Settings for the built-in ``name``; ValueError naming the ``ai.*`` key if bad."""
        endpoint = section.get("endpoint") or DEFAULT_ENDPOINTS[name]
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError("ai.endpoint: expected an http:// or https:// URL")
        try:
            timeout = parse_duration(section.get("timeout", "30s"))
        except ValueError as exc:
            raise ValueError(f"ai.timeout: {exc}") from None
        api_key = section.get("api_key") or env.get(API_KEY_ENV) or None
        ca = section.get("ca_cert_file") or None
        if ca is not None and not os.path.isfile(ca):
            raise ValueError("ai.ca_cert_file: no such file")
        return cls(endpoint.rstrip("/"), api_key, timeout, section.get("proxy") or None, ca)

    def client(self) -> httpx.Client:
        """One client per provider: the proxy, CA file and timeout apply to every request."""
        # verify=<path> is deprecated in httpx 0.28; an SSLContext works in 0.27 too.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.ca_cert_file) if self.ca_cert_file else True
        )
        return httpx.Client(proxy=self.proxy, verify=verify, timeout=self.timeout)


class _HTTPProvider:
    """The shared part of the built-ins: one POST of JSON, errors as short fixed text."""

    name = ""
    path = ""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._client = settings.client()

    def url(self) -> str:
        base = self.settings.endpoint
        # An OpenAI-compatible endpoint is often given with its /v1 already.
        if self.path.startswith("/v1/") and base.endswith("/v1"):
            base = base[: -len("/v1")]
        return base + self.path

    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    def post(self, body: Mapping[str, Any]) -> Any:
        try:
            response = self._client.post(self.url(), json=body, headers=self.headers())
        except httpx.TimeoutException:
            raise ProviderError("timeout") from None
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ProviderError("TLS verification failed") from None
            raise ProviderError("connection failed") from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"transport error: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise ProviderError(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProviderError("bad response: not JSON") from None

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        raise NotImplementedError

    def close(self) -> None:
        self._client.close()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class AnthropicProvider(_HTTPProvider):
    """Anthropic Messages API: ``POST /v1/messages``."""

    name = "anthropic"
    path = "/v1/messages"

    def headers(self) -> dict[str, str]:
        if not self.settings.api_key:
            raise ProviderError(f"no API key (ai.api_key or {API_KEY_ENV})")
        return {
            "content-type": "application/json",
            "x-api-key": self.settings.api_key,
            "anthropic-version": ANTHROPIC_VERSION,
        }

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": prompt}]
        data = self.post(body)
        try:
            text = data["content"][0]["text"]
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("bad response: no content") from None
        if not isinstance(text, str):
            raise ProviderError("bad response: no content")
        return text, _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))


class OpenAIProvider(_HTTPProvider):
    """OpenAI Chat Completions: ``POST /v1/chat/completions`` (and compatible servers)."""

    name = "openai"
    path = "/v1/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        # Compatible local servers (vLLM, llama.cpp) often need no key.
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        data = self.post(body)
        try:
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("bad response: no choices") from None
        if not isinstance(text, str):
            raise ProviderError("bad response: no choices")
        return text, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


class OllamaProvider(_HTTPProvider):
    """Ollama: ``POST /api/chat`` with ``stream: false``."""

    name = "ollama"
    path = "/api/chat"

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body = {
            "model": model,
            "messages": messages,
            "stream": False,
            "options": {"temperature": temperature, "num_predict": max_tokens},
        }
        data = self.post(body)
        try:
            text = data["message"]["content"]
        except (KeyError, TypeError):
            raise ProviderError("bad response: no message") from None
        if not isinstance(text, str):
            raise ProviderError("bad response: no message")
        return text, _count(data.get("prompt_eval_count")), _count(data.get("eval_count"))


BUILTIN_PROVIDERS: Final[Mapping[str, type[_HTTPProvider]]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "ollama": OllamaProvider,
}


class _Misconfigured:
    """Stands in for a built-in whose ``ai`` settings are unusable: every call fails, audited."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        raise ProviderError(f"config error: {self.reason}")


def make_builtin(name: str, section: Mapping[str, Any], env: Mapping[str, str]) -> AIProvider:
    """The built-in provider ``name`` for the ``ai`` section.

    Never raises: unusable settings (a missing CA file, a bad endpoint) give a
    provider whose every call fails with ``config error: ai.<key>``, so the
    problem shows in each ``ai.call`` record and the doctor keeps its template.
    """
    try:
        settings = ProviderSettings.from_section(name, section, env)
    except ValueError as exc:
        return _Misconfigured(name, str(exc).split(":", 1)[0])
    try:
        return BUILTIN_PROVIDERS[name](settings)
    except (OSError, ssl.SSLError):
        return _Misconfigured(name, "ai.ca_cert_file")

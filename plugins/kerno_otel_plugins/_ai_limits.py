"""The analyzer's rate limit and response cache (``ai.rate_limit_per_minute``, ``ai.cache_ttl``)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class TokenBucket:
    """``per_minute`` calls a minute, in bursts of at most ``per_minute``; 0 means no limit."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = float(per_minute)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token; False when none is left (the call must not be made)."""
        if self._capacity <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class ResponseCache:
    """Answers by ``rule:severity`` set, each kept ``ttl`` seconds (0 disables the cache)."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, ...], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: tuple[str, ...], text: str) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            now = self._clock()
            # Expired entries go at each insert, so the cache holds at most a TTL's worth.
            for old in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[old]
            self._entries[key] = (now + self._ttl, text)

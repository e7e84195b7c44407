"""Failed-login counting: in-process by default, in Redis when REDIS_URL is set.

A key (lower-cased login plus client address) is blocked once it has `max_failures`
failures inside a window that starts at its first failure; the block lasts until the
window ends. Redis shares the counts between processes; if it stops answering, the
in-process store takes over (one warning in the log) until Redis answers again.
"""

import logging
import math
import threading
import time
from typing import Protocol

import redis

logger = logging.getLogger("todoapp.throttle")


class FailureStore(Protocol):
    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None when it is not blocked."""

    def record_failure(self, key: str) -> None: ...

    def clear(self, key: str) -> None: ...


class MemoryFailureStore:
    def __init__(self, max_failures: int, window_seconds: int) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        # key -> (failures, monotonic time the window ends)
        self._entries: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def retry_after(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            entry = self._live(key, now)
        if entry is None or entry[0] < self.max_failures:
            return None
        return max(1, math.ceil(entry[1] - now))

    def record_failure(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 100_000:
                self._sweep(now)
            entry = self._live(key, now)
            if entry is None:
                self._entries[key] = (1, now + self.window_seconds)
            else:
                self._entries[key] = (entry[0] + 1, entry[1])

    def clear(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, ends) in self._entries.items() if ends <= now]:
            del self._entries[key]


class RedisFailureStore:
    _PREFIX = "todoapp:login-failures:"

    def __init__(self, client: "redis.Redis", max_failures: int, window_seconds: int) -> None:
        self.client = client
        self.max_failures = max_failures
        self.window_seconds = window_seconds

    def retry_after(self, key: str) -> int | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._PREFIX + key)
        pipe.pttl(self._PREFIX + key)
        count, ttl_ms = pipe.execute()
        if count is None or int(count) < self.max_failures or ttl_ms <= 0:
            return None
        return max(1, math.ceil(int(ttl_ms) / 1000))

    def record_failure(self, key: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(self._PREFIX + key)
        # The window starts at the first failure: NX keeps an existing expiry.
        pipe.expire(self._PREFIX + key, self.window_seconds, nx=True)
        pipe.execute()

    def clear(self, key: str) -> None:
        self.client.delete(self._PREFIX + key)


class FallbackFailureStore:
    """Redis first; the in-process store whenever Redis does not answer."""

    RETRY_SECONDS = 5.0

    def __init__(self, primary: RedisFailureStore, fallback: MemoryFailureStore) -> None:
        self.primary = primary
        self.fallback = fallback
        self._down_until = 0.0
        self._warned = False

    def _use_primary(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.RETRY_SECONDS
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis is not answering (%s); login throttling uses the in-process "
                "store until it does",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            logger.info("Redis answers again; login throttling is shared again")

    def retry_after(self, key: str) -> int | None:
        if self._use_primary():
            try:
                remote = self.primary.retry_after(key)
            except redis.RedisError as exc:
                self._failed(exc)
            else:
                self._recovered()
                local = self.fallback.retry_after(key)
                return max(remote or 0, local or 0) or None
        return self.fallback.retry_after(key)

    def record_failure(self, key: str) -> None:
        self.fallback.record_failure(key)
        if self._use_primary():
            try:
                self.primary.record_failure(key)
            except redis.RedisError as exc:
                self._failed(exc)
            else:
                self._recovered()

    def clear(self, key: str) -> None:
        self.fallback.clear(key)
        if self._use_primary():
            try:
                self.primary.clear(key)
            except redis.RedisError as exc:
                self._failed(exc)


def make_failure_store(
    redis_url: str | None, max_failures: int, window_seconds: int
) -> FailureStore:
    memory = MemoryFailureStore(max_failures, window_seconds)
    if not redis_url:
        return memory
    client = redis.Redis.from_url(
        redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    return FallbackFailureStore(RedisFailureStore(client, max_failures, window_seconds), memory)

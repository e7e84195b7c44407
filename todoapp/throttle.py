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
    def reserve(self, key: str) -> int | None:
        """Count an attempt for `key` before it is checked; None when it may go ahead,
        else the seconds until it may (and then nothing is counted). Counting first
        keeps parallel attempts from all slipping in under the limit."""

    def release(self, key: str) -> None:
        """Take back a reserved attempt that turned out not to be a failure."""

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

    def reserve(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 100_000:
                self._sweep(now)
            entry = self._live(key, now)
            if entry is None:
                self._entries[key] = (1, now + self.window_seconds)
                return None
            if entry[0] >= self.max_failures:
                return max(1, math.ceil(entry[1] - now))
            self._entries[key] = (entry[0] + 1, entry[1])
            return None

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._live(key, time.monotonic())
            if entry is not None:
                self._entries[key] = (max(0, entry[0] - 1), entry[1])

    def clear(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, ends) in self._entries.items() if ends <= now]:
            del self._entries[key]


# Atomic in Redis: count the attempt (the window starts at the first), or, when the
# limit is already reached, take it back and answer the milliseconds left (negative).
_RESERVE = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then
    redis.call('DECR', KEYS[1])
    return -redis.call('PTTL', KEYS[1])
end
return count
"""


class RedisFailureStore:
    _PREFIX = "todoapp:login-failures:"

    def __init__(self, client: "redis.Redis", max_failures: int, window_seconds: int) -> None:
        self.client = client
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._reserve = client.register_script(_RESERVE)

    def reserve(self, key: str) -> int | None:
        answer = int(
            self._reserve(keys=[self._PREFIX + key], args=[self.max_failures, self.window_seconds])
        )
        if answer > 0:
            return None
        return max(1, math.ceil(-answer / 1000))

    def release(self, key: str) -> None:
        self.client.decr(self._PREFIX + key)

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

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.RETRY_SECONDS
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis is not answering (%s); login throttling uses the in-process "
                "store until it does",
                type(exc).__name__,
            )

    def _call(self, method: str, key: str) -> int | None:
        if time.monotonic() >= self._down_until:
            try:
                answer: int | None = getattr(self.primary, method)(key)
            except redis.RedisError as exc:
                self._failed(exc)
            else:
                if self._warned:
                    self._warned = False
                    logger.info("Redis answers again; login throttling is shared again")
                return answer
        fallback: int | None = getattr(self.fallback, method)(key)
        return fallback

    def reserve(self, key: str) -> int | None:
        return self._call("reserve", key)

    def release(self, key: str) -> None:
        self._call("release", key)

    def clear(self, key: str) -> None:
        self._call("clear", key)


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

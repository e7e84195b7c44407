"""Failed-login budgets: in-process by default, in Redis when REDIS_URL is set.

Two budgets are charged for every attempt (LoginThrottle):

- one per account and client address: the account's id once the login names an
  account (its username and its email share it, whatever was typed), else the
  lower-cased login; LOGIN_MAX_FAILURES;
- one per client address across all names: LOGIN_MAX_FAILURES_PER_ADDRESS.

A budget is spent once it has that many failures inside a window that starts at its
first failure, and stays spent until the window ends. A success clears the account's
budget but never the address's (else one account of one's own would reset it).
Redis shares the counts between processes; if it stops answering, the in-process
store takes over (one warning in the log) until Redis answers again.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

from todoapp.errors import TooManyAttempts

logger = logging.getLogger("todoapp.throttle")
TOO_MANY_ATTEMPTS = "Too many failed login attempts; try again later"


class FailureStore(Protocol):
    def reserve(self, key: str, limit: int) -> int | None:
        """Count an attempt for `key` before it is checked; None when it may go ahead,
        else the seconds until it may (and then nothing is counted). Counting first
        keeps parallel attempts from all slipping in under the limit."""

    def release(self, key: str) -> None:
        """Take back a reserved attempt that turned out not to be a failure."""

    def clear(self, key: str) -> None: ...

    def clear_prefix(self, prefix: str) -> None:
        """Forget every key that starts with `prefix`."""


class MemoryFailureStore:
    def __init__(self, window_seconds: int) -> None:
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

    def reserve(self, key: str, limit: int) -> int | None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 100_000:
                self._sweep(now)
            entry = self._live(key, now)
            if entry is None:
                self._entries[key] = (1, now + self.window_seconds)
                return None
            if entry[0] >= limit:
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

    def clear_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[key]

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, ends) in self._entries.items() if ends <= now]:
            del self._entries[key]


# Atomic in Redis: count the attempt (the window starts at the first; a key found
# without an expiry gets one), or, when the limit is already reached, take it back and
# answer the milliseconds left (negative).
_RESERVE = """
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then
    redis.call('DECR', KEYS[1])
    return -redis.call('PTTL', KEYS[1])
end
return count
"""
# Atomic too: a key that expired meanwhile stays gone (a plain DECR would re-create
# it at -1, with no expiry).
_RELEASE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisFailureStore:
    def __init__(self, client: "redis.Redis", window_seconds: int, prefix: str) -> None:
        self.client = client
        self.window_seconds = window_seconds
        self.prefix = prefix + "login-failures:"
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def reserve(self, key: str, limit: int) -> int | None:
        answer = int(self._reserve(keys=[self.prefix + key], args=[limit, self.window_seconds]))
        if answer > 0:
            return None
        return max(1, math.ceil(-answer / 1000))

    def release(self, key: str) -> None:
        self._release(keys=[self.prefix + key])

    def clear(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def clear_prefix(self, prefix: str) -> None:
        pattern = _glob_escape(self.prefix + prefix) + "*"
        keys = list(self.client.scan_iter(match=pattern, count=500))
        if keys:
            self.client.delete(*keys)


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


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

    def _call(self, method: str, *args: str | int) -> int | None:
        if time.monotonic() >= self._down_until:
            try:
                answer: int | None = getattr(self.primary, method)(*args)
            except redis.RedisError as exc:
                self._failed(exc)
            else:
                if self._warned:
                    self._warned = False
                    logger.info("Redis answers again; login throttling is shared again")
                return answer
        fallback: int | None = getattr(self.fallback, method)(*args)
        return fallback

    def reserve(self, key: str, limit: int) -> int | None:
        return self._call("reserve", key, limit)

    def release(self, key: str) -> None:
        self._call("release", key)

    def clear(self, key: str) -> None:
        self._call("clear", key)

    def clear_prefix(self, prefix: str) -> None:
        self._call("clear_prefix", prefix)


def make_failure_store(redis_url: str | None, window_seconds: int, prefix: str) -> FailureStore:
    memory = MemoryFailureStore(window_seconds)
    if not redis_url:
        return memory
    client = redis.Redis.from_url(
        redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    return FallbackFailureStore(RedisFailureStore(client, window_seconds, prefix), memory)


def account_subject(user_id: int | None, login: str) -> str:
    """Whose budget an attempt charges: the account once known, else the name typed."""
    return f"user:{user_id}" if user_id is not None else f"login:{login.lower()[:320]}"


class LoginThrottle:
    """The two failure budgets of every login attempt (see the module's docstring)."""

    def __init__(self, store: FailureStore, *, per_account: int, per_address: int) -> None:
        self.store = store
        self.per_account = per_account
        self.per_address = per_address

    @contextmanager
    def attempt(self, subject: str, address: str, failure: type[BaseException]) -> Iterator[None]:
        """Charge one attempt to both budgets while the block checks the password.

        TooManyAttempts (nothing charged) when either budget is spent. A `failure`
        raised in the block stays counted; any other exception takes the attempt back;
        a block that ends normally clears the account's budget.
        """
        account_key = f"account:{subject}|{address}"
        address_key = f"address:{address}"
        retry_after = self.store.reserve(account_key, self.per_account)
        if retry_after is not None:
            raise TooManyAttempts(TOO_MANY_ATTEMPTS, retry_after=retry_after)
        retry_after = self.store.reserve(address_key, self.per_address)
        if retry_after is not None:
            self.store.release(account_key)
            raise TooManyAttempts(TOO_MANY_ATTEMPTS, retry_after=retry_after)
        try:
            yield
        except failure:
            raise  # a failed attempt: counted
        except BaseException:
            self.store.release(account_key)  # e.g. 403 (disabled) or the database down
            self.store.release(address_key)
            raise
        self.store.clear(account_key)
        self.store.release(address_key)

    def clear_account(self, user_id: int) -> None:
        """Forget the account's failures from every address (e.g. after a reset)."""
        self.store.clear_prefix(f"account:{account_subject(user_id, '')}|")

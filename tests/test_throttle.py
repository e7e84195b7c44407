"""Failed logins are throttled per login and client address: in-process and in Redis."""

import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, AppFactory, Backend, register, settings_for_tests
from todoapp.main import create_app
from todoapp.models import User
from todoapp.throttle import MemoryFailureStore

WRONG = "wrong-password"


def attempt(client: TestClient, name: str, password: str = WRONG) -> int:
    return client.post("/auth/token", data={"username": name, "password": password}).status_code


def test_five_failures_then_429_with_retry_after_even_with_the_right_password(
    client: TestClient,
) -> None:
    register(client, "ada")
    assert [attempt(client, "ada") for _ in range(5)] == [401] * 5
    response = client.post("/auth/token", data={"username": "ADA", "password": PASSWORD})
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 15 * 60
    assert attempt(client, "other-name") == 401  # another key is not blocked


def test_a_successful_login_clears_the_count(client: TestClient) -> None:
    register(client, "ada")
    assert [attempt(client, "ada") for _ in range(4)] == [401] * 4
    assert attempt(client, "ada", PASSWORD) == 200
    assert [attempt(client, "ada") for _ in range(4)] == [401] * 4
    assert attempt(client, "ada", PASSWORD) == 200


def test_the_block_ends_when_the_window_has_passed(app_factory: AppFactory) -> None:
    with TestClient(app_factory(login_window_seconds=1)) as client:
        register(client, "ada")
        for _ in range(5):
            attempt(client, "ada")
        assert attempt(client, "ada", PASSWORD) == 429
        time.sleep(1.1)
        assert attempt(client, "ada", PASSWORD) == 200


def test_only_401s_count_not_403s(client: TestClient, db: Session) -> None:
    user = register(client, "ada")
    db.get_one(User, user["id"]).is_active = False
    db.commit()
    assert [attempt(client, "ada", PASSWORD) for _ in range(7)] == [403] * 7


def test_limits_come_from_the_settings(app_factory: AppFactory) -> None:
    with TestClient(app_factory(login_max_failures=2)) as client:
        assert [attempt(client, "ghost") for _ in range(3)] == [401, 401, 429]


def test_memory_store_counts_attempts_before_they_are_checked() -> None:
    store = MemoryFailureStore(window_seconds=100)
    assert store.reserve("k", 2) is None
    assert store.reserve("k", 2) is None
    retry_after = store.reserve("k", 2)  # two attempts in flight or failed: the third waits
    assert retry_after is not None
    assert 99 <= retry_after <= 100
    store.release("k")  # one of them was not a failure after all
    assert store.reserve("k", 2) is None
    store.clear("k")
    assert store.reserve("other", 2) is None


def _parallel_wrong_logins(client: TestClient, name: str, count: int) -> list[int]:
    barrier = threading.Barrier(count)

    def attempt_at_once(_i: int) -> int:
        barrier.wait(timeout=30)
        return attempt(client, name)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return sorted(pool.map(attempt_at_once, range(count)))


def test_parallel_wrong_guesses_cannot_pass_the_limit(
    committed_client: TestClient,
) -> None:
    register(committed_client, "target")
    assert _parallel_wrong_logins(committed_client, "target", 12) == [401] * 5 + [429] * 7


# --- Redis ----------------------------------------------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def real_redis() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        import os

        if os.environ.get("REQUIRE_POSTGRES") == "1":  # CI: every real service is required
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_prefix(real_redis: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys go afterwards."""
    prefix = f"test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(real_redis)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def test_redis_shares_the_count_between_processes(
    app_factory: AppFactory, real_redis: str, redis_prefix: str
) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    first = TestClient(app_factory(redis_url=real_redis, redis_key_prefix=redis_prefix))
    second = TestClient(app_factory(redis_url=real_redis, redis_key_prefix=redis_prefix))
    with first, second:
        assert [attempt(first, name) for _ in range(3)] == [401] * 3
        assert [attempt(second, name) for _ in range(2)] == [401] * 2
        assert attempt(first, name) == 429
        response = second.post("/auth/token", data={"username": name, "password": WRONG})
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
    client = redis.Redis.from_url(real_redis)
    keys = client.keys(f"{redis_prefix}login-failures:account:login:{name}|*")
    assert len(keys) == 1
    assert client.get(f"{redis_prefix}login-failures:address:testclient") == b"5"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def private_redis(real_redis: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so that stopping it disturbs nobody else."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("private redis-server did not start")
            time.sleep(0.05)
    try:
        yield url, process
    finally:
        process.kill()
        process.wait()


def test_logins_keep_working_when_redis_goes_away_mid_test(
    app_factory: AppFactory,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, server = private_redis
    with TestClient(app_factory(redis_url=url)) as client:
        ada = register(client, "ada")
        assert [attempt(client, "ada") for _ in range(2)] == [401, 401]
        key = f"todoapp:login-failures:account:user:{ada['id']}|testclient"
        assert redis.Redis.from_url(url).get(key) == b"2"
        server.kill()
        server.wait()
        with caplog.at_level(logging.WARNING, logger="todoapp.throttle"):
            assert attempt(client, "ada", PASSWORD) == 200  # no crash, still served
            assert [attempt(client, "ada") for _ in range(5)] == [401] * 5
            assert attempt(client, "ada", PASSWORD) == 429  # the in-process store throttles
    warnings = [r for r in caplog.records if r.name == "todoapp.throttle"]
    assert len(warnings) == 1
    assert "Redis is not answering" in warnings[0].getMessage()


def test_logins_work_when_redis_was_never_there(app_factory: AppFactory) -> None:
    with TestClient(app_factory(redis_url=f"redis://127.0.0.1:{_free_port()}/0")) as client:
        register(client, "ada")
        assert attempt(client, "ada", PASSWORD) == 200
        assert attempt(client, "ada") == 401


def test_parallel_wrong_guesses_cannot_pass_the_limit_in_redis(
    pg_backend: Backend, real_redis: str, redis_prefix: str
) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    app = create_app(
        settings_for_tests(
            database_url=pg_backend.url, redis_url=real_redis, redis_key_prefix=redis_prefix
        )
    )
    with TestClient(app) as client:
        assert _parallel_wrong_logins(client, name, 12) == [401] * 5 + [429] * 7

"""/metrics (Prometheus, every worker counted) and JSON logs, on real uvicorn processes."""

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import PASSWORD, AppFactory, migrate, register
from tests.live import LiveServer


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrate(url)
    return url


def _get(url: str, method: str = "GET", **kwargs: object) -> int:
    # A connection of its own for each request, so that the kernel spreads them over
    # the workers instead of one keep-alive connection pinning them to one.
    with httpx.Client(timeout=20.0, trust_env=False) as client:
        return client.request(method, url, **kwargs).status_code  # type: ignore[arg-type]


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of every sample of `name` in a text exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match[1] or "")))
            found[labels] = float(match[2])
    return found


_OWN_ROUTES = ("/metrics", "/readyz")


def _own(labels: tuple[tuple[str, str], ...]) -> bool:
    return any(("route", route) in labels for route in _OWN_ROUTES)


def _requests_by_pid(directory: Path) -> dict[str, float]:
    """Each worker's own count of todoapp_http_requests_total, from its file."""
    totals: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.split("_")[-1]
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, labels, _help = json.loads(key)
            if name == "todoapp_http_requests_total" and labels["route"] not in _OWN_ROUTES:
                totals[pid] = totals.get(pid, 0.0) + value
    return totals


def test_metrics_count_a_known_set_of_requests_exactly_across_two_workers(
    tmp_path: Path, sqlite_url: str
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = LiveServer(
        {
            "DATABASE_URL": sqlite_url,
            "METRICS_ENABLED": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DRAIN_SECONDS": "0",
        },
        tmp_path / "server.log",
        workers=2,
    )
    try:
        server.wait_ready()
        base = server.url
        # The known set: 60 GET /healthz, 12 unknown paths, 8 wrong methods, 6 reads
        # without a token, 1 registration; sent 8 at a time on fresh connections.
        calls = (
            [("GET", "/healthz")] * 60
            + [("GET", f"/nowhere/secret-{i}") for i in range(12)]
            + [("POST", "/healthz")] * 8
            + [("GET", "/todos/7")] * 6
        )
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda c: _get(base + c[1], c[0]), calls))
        assert Counter(statuses) == {200: 60, 404: 12, 405: 8, 401: 6}
        assert _get(base + "/auth/register", "POST", json=_new_user("metrics_ada")) == 201

        for _scrape in range(3):  # whichever worker answers, every worker's counts add up
            with httpx.Client(timeout=20.0, trust_env=False) as client:
                response = client.get(base + "/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = response.text
            requests = _samples(text, "todoapp_http_requests_total")
            # The scrapes and the start-up's /readyz polls are counted too, but a scrape
            # is counted once its answer has left: only the known set is exact.
            assert {k: v for k, v in requests.items() if not _own(k)} == {
                (("method", "GET"), ("route", "/healthz"), ("status", "200")): 60.0,
                (("method", "GET"), ("route", "unmatched"), ("status", "404")): 12.0,
                (("method", "POST"), ("route", "/healthz"), ("status", "405")): 8.0,
                (("method", "GET"), ("route", "/todos/{todo_id}"), ("status", "401")): 6.0,
                (("method", "POST"), ("route", "/auth/register"), ("status", "201")): 1.0,
            }
            durations = _samples(text, "todoapp_http_request_duration_seconds_count")
            assert durations[(("method", "GET"), ("route", "/healthz"))] == 60.0
            assert durations[(("method", "GET"), ("route", "/todos/{todo_id}"))] == 6.0
            buckets = _samples(text, "todoapp_http_request_duration_seconds_bucket")
            assert buckets[(("le", "+Inf"), ("method", "GET"), ("route", "/healthz"))] == 60.0
            # Sizes of the pool: 20 threads per worker, two live workers.
            pool_size = _samples(text, "todoapp_db_pool_size")
            assert pool_size[(("pool", "threads"),)] == 40.0
            # Neither a path as sent nor a user appears anywhere.
            assert "secret-" not in text
            assert "metrics_ada" not in text
        by_pid = _requests_by_pid(metrics_dir)
        assert len([pid for pid, n in by_pid.items() if n > 0]) == 2, by_pid
        assert sum(by_pid.values()) == 60 + 12 + 8 + 6 + 1
    finally:
        server.stop()


def _new_user(username: str) -> dict[str, str]:
    return {"username": username, "email": f"{username}@example.com", "password": "password123"}


def test_metrics_are_off_by_default_and_can_require_a_bearer_token(
    app_factory: AppFactory,
) -> None:
    with TestClient(app_factory()) as client:
        assert client.get("/metrics").status_code == 404
    with TestClient(app_factory(metrics_enabled=True, metrics_token="s3cret-token")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert response.status_code == 200
        assert "todoapp_http_requests_total" in response.text
        assert "s3cret-token" not in response.text
    # The route is not part of the API's document.
    assert "/metrics" not in app_factory(metrics_enabled=True).openapi()["paths"]


def test_throttled_logins_are_counted(app_factory: AppFactory) -> None:
    def throttled() -> float:
        return REGISTRY.get_sample_value("todoapp_login_throttled_total") or 0.0

    before = throttled()
    with TestClient(app_factory(login_max_failures=2)) as client:
        register(client, "throttled_tom")
        wrong = {"username": "throttled_tom", "password": "wrong-password"}
        statuses = [client.post("/auth/token", data=wrong).status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    assert throttled() - before == 2


def test_refresh_token_reuse_is_counted(client: TestClient) -> None:
    def reused() -> float:
        return REGISTRY.get_sample_value("todoapp_refresh_token_reuse_total") or 0.0

    register(client, "reuse_rita")
    login = client.post("/auth/token", data={"username": "reuse_rita", "password": PASSWORD})
    used_up = {"refresh_token": login.json()["refresh_token"]}
    before = reused()
    assert client.post("/auth/refresh", json=used_up).status_code == 200
    assert reused() == before  # a rotation is no reuse
    assert client.post("/auth/refresh", json=used_up).status_code == 401
    assert reused() - before == 1
    metrics_text = generate_latest(REGISTRY).decode()
    assert used_up["refresh_token"] not in metrics_text


def test_json_logs_are_one_object_per_line_with_the_request_fields(
    tmp_path: Path, sqlite_url: str
) -> None:
    server = LiveServer(
        {"DATABASE_URL": sqlite_url, "LOG_FORMAT": "json", "DRAIN_SECONDS": "0"},
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=20.0, trust_env=False) as client:
            assert client.get("/todos/12", headers={"X-Request-ID": "json-1"}).status_code == 401
            # A path that tries to break the line and forge another entry.
            forged = '/x%0A{"level":"INFO","message":"forged"}'
            assert client.get(forged, headers={"X-Request-ID": "json-2"}).status_code == 404
            client.get("/healthz", headers={"X-Request-ID": "json-3"})
    finally:
        assert server.stop() in (0, -15)
    lines = server.log_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in entries)
    assert any(e["logger"] == "uvicorn.error" for e in entries)  # the server's own lines too
    access = {e["request_id"]: e for e in entries if e["logger"] == "todoapp.access"}
    first = access["json-1"]
    assert first["level"] == "INFO"
    assert (first["method"], first["path"], first["route"], first["status"]) == (
        "GET",
        "/todos/12",
        "/todos/{todo_id}",
        401,
    )
    assert isinstance(first["duration_ms"], float)
    assert first["duration_ms"] >= 0
    assert first["message"].startswith("GET /todos/12 401 ")
    assert access["json-2"]["route"] == "unmatched"
    assert access["json-2"]["status"] == 404
    assert not any(e.get("message") == "forged" for e in entries)
    assert access["json-3"]["route"] == "/healthz"

"""The app, fast lane included, through a real PgBouncer in transaction mode.

PgBouncer (Debian's; `.ci/run` and `make test` install it) runs on deploy/pgbouncer.ini
with a free port and two server connections shared by every client, in front of the
test PostgreSQL server; a real uvicorn serves the app through it.
"""

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from deploy.cluster import PgBouncer
from tests.conftest import PASSWORD, create_pg_database, drop_pg_database, migrate
from tests.live import LiveServer

BOUNCER_PASSWORD = "bouncer-secret"
# Two server connections for everyone, handed out in turn: a statement prepared on one
# is unknown on the other, as in any busy transaction-mode pool.
SMALL_POOL = {
    "default_pool_size": "2",
    "reserve_pool_size": "0",
    "max_db_connections": "2",
    "server_round_robin": "1",
}


@pytest.fixture
def database(pg_server: str) -> Iterator[str]:
    url = create_pg_database(pg_server)
    try:
        migrate(url)
        yield url
    finally:
        drop_pg_database(pg_server, url)


def _bouncer(url: str, **settings: str) -> PgBouncer:
    parsed = make_url(url)
    name = parsed.database
    assert name is not None
    return PgBouncer(
        {name: f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432} dbname={name}"},
        {parsed.username or "postgres": BOUNCER_PASSWORD},
        settings={**SMALL_POOL, **settings},
    ).start()


def _through(bouncer: PgBouncer, url: str) -> str:
    parsed = make_url(url)
    return (
        parsed.set(host="127.0.0.1", port=bouncer.port, password=BOUNCER_PASSWORD)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg2://", "postgresql://")
    )


def _dsn(bouncer: PgBouncer, url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {
        "host": "127.0.0.1",
        "port": bouncer.port,
        "user": parsed.username or "postgres",
        "password": BOUNCER_PASSWORD,
        "dbname": parsed.database,
    }


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _account(client: httpx.Client, username: str) -> dict[str, str]:
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    assert client.post("/auth/register", json=body).status_code == 201
    answer = client.post("/auth/token", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 200
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_app_and_its_fast_lane_work_through_pgbouncer_in_transaction_mode(
    tmp_path: Path, database: str, pg_server: str
) -> None:
    name = make_url(database).database
    with psycopg2.connect(make_url(pg_server).render_as_string(hide_password=False)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            # Server sessions default to another zone: the app must still speak UTC.
            cursor.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tokyo'")
    admin.close()
    bouncer = _bouncer(database)
    server = LiveServer(
        {
            "DATABASE_URL": _through(bouncer, database),
            "DB_POOLER": "transaction",
            "ENVIRONMENT": "production",
            "SECRET_KEY": "a-test-secret-key-of-more-than-32-bytes",
            "METRICS_ENABLED": "true",
            "WORKER_THREADS": "4",
            "FAST_LANE_CONNECTIONS": "3",
            "DRAIN_SECONDS": "0",
        },
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client:
            users = [_account(client, f"bounced_{i}") for i in range(3)]
            for i, headers in enumerate(users):
                for n in range(4):
                    todo = {"title": f"todo {i}.{n}", "priority": n + 1}
                    assert client.post("/todos", json=todo, headers=headers).status_code == 201
                first = client.get("/todos?sort=id", headers=headers).json()["items"][0]
                patched = client.patch(
                    f"/todos/{first['id']}", json={"complete": True}, headers=headers
                )
                assert patched.status_code == 200
            # The routed answer (any parameter but limit and offset takes the app's path).
            expected = [client.get("/todos?sort=id&limit=3", headers=h).content for h in users]

        def lane(turn: int) -> tuple[int, int, bytes]:
            with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as own:
                answer = own.get("/todos?limit=3", headers=users[turn % 3])
            return turn % 3, answer.status_code, answer.content

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lane, range(120)))
        assert {status for _, status, _ in answers} == {200}
        assert all(body == expected[user] for user, _, body in answers)
        page = httpx.Client(trust_env=False).get(
            server.url + "/todos", headers=users[0], timeout=30.0
        )
        stamps = [t[k] for t in page.json()["items"] for k in ("created_at", "updated_at")]
        assert stamps
        assert all(stamp.endswith("Z") for stamp in stamps), stamps

        metrics = httpx.get(server.url + "/metrics", timeout=30.0, trust_env=False).text
        # Every plain GET /todos was the lane's own answer: none was handed over.
        assert _sample(metrics, "todoapp_fastlane_answers_total") == 121
        assert "todoapp_fastlane_handovers_total{" not in metrics
        assert (
            _sample(
                metrics,
                "todoapp_http_requests_total",
                '{method="GET",route="/todos",status="200"}',
            )
            == 121 + 3 + 3
        )
    finally:
        server.stop()
        log = server.log_text()
        bouncer_log = bouncer.log_path.read_text(errors="replace")
        bouncer.stop()
    # No SMTP server here: the one start-up line saying mail is not sent is expected.
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert all("SMTP_HOST is not set" in line for line in warnings), log
    assert " ERROR " not in log
    assert "Traceback" not in log
    assert "prepared" not in bouncer_log.lower()
    # Nothing was left prepared on PgBouncer's server connections.
    check = _bouncer(database)
    try:
        with psycopg2.connect(**_dsn(check, database)) as conn, conn.cursor() as cursor:
            for _ in range(6):
                cursor.execute("SELECT count(*) FROM pg_prepared_statements")
                assert cursor.fetchone() == (0,)
                conn.commit()
    finally:
        check.stop()


def test_without_db_pooler_the_lane_notices_lost_prepared_statements_and_goes_on(
    tmp_path: Path, database: str
) -> None:
    """The safety net for a pooler nobody declared: the statement prepared when the
    lane connected is gone by its first EXECUTE; that read is answered through the app,
    and the lane goes on unprepared for good. The app's own prepared statements
    (prepared.py) notice it too, and go on unprepared: no request fails."""
    # PgBouncer must be told to drop the startup options for the default settings to
    # connect at all (the README says to set DB_POOLER=transaction instead); and it
    # resets each server connection after every transaction (DISCARD ALL), as a pool
    # shared with other applications may, so that a prepared statement never survives.
    bouncer = _bouncer(database, ignore_startup_parameters="options", server_reset_query_always="1")
    server = LiveServer(
        {
            "DATABASE_URL": _through(bouncer, database),
            "METRICS_ENABLED": "true",
            "WORKER_THREADS": "2",
            "FAST_LANE_CONNECTIONS": "1",
            "DRAIN_SECONDS": "0",
        },
        tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client:
            headers = _account(client, "fallback_fay")
            made = client.post("/todos", json={"title": "kept", "priority": 1}, headers=headers)
            assert made.status_code == 201
            expected = client.get("/todos?sort=id", headers=headers).content
            answers = [client.get("/todos", headers=headers) for _ in range(30)]
            metrics = client.get("/metrics").text
    finally:
        server.stop()
        bouncer.stop()
    assert [a.status_code for a in answers] == [200] * 30
    assert all(a.content == expected for a in answers)
    log = server.log_text()
    assert b'"kept"' in expected
    # The lane and the app's threaded path (prepared.py) each notice it once.
    assert log.count("prepared statements do not persist") == 2, log
    assert log.count("fast-lane reads go unprepared") == 1, log
    # One read failed (and was answered by the app); every other one was the lane's.
    assert _sample(metrics, "todoapp_fastlane_handovers_total", '{reason="read_failed"}') == 1
    assert _sample(metrics, "todoapp_fastlane_answers_total") == 29
    assert "Traceback" not in log

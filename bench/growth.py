"""`make bench-growth`: does a page cost the page, not the table? (issue #13)

Bounded (a few minutes) and only ever aimed at 127.0.0.1:

1. recreates the PostgreSQL database todoapp_bench_growth and migrates it;
2. builds the data set with set-based inserts (INSERT ... SELECT generate_series),
   timed, in under 60 s: 10,000 users; user 2 holds 100,000 todos, user 3 10,000,
   user 4 one, every other user (the admin, user 1, included) 100: 1,109,701 todos.
   As pg_restore does, the secondary indexes and the foreign key are dropped for the
   load and made again after it (the triggers that keep todo_counts stay on), then
   the tables are vacuumed and analysed;
3. serves the app as one production uvicorn worker (core 0) and times each request
   over one keep-alive connection: a warm-up, then the median of 15 (in turns with
   its baseline);
4. prints the table of issue #13 (also written to build/bench/growth.md), each row
   with its ratio to the same request of the 1-todo owner in the same run, and
   checks the issue's targets. Exits non-zero when the build is over 60 s, a request
   fails, or a target is missed.

The baseline of a request is the 1-todo owner's request of the same shape (same
path, sort and filters), which goes through the same code: the plain first page
through the fast lane, every other list through the FastAPI route. That owner has no
second page and no admin rights, so a cursor page is compared with their first page
of the same sort, and an admin page with their routed first page
(`/todos?limit=20&sort=id`). Baseline and request are timed in turns, so that the
machine's noise falls on both alike.

The machine is shared and noisy: ratios of a few milliseconds move by tens of
percent from run to run. Standard library, psycopg2, and todoapp for one bcrypt hash.
"""

import http.client
import json
import os
import secrets
import statistics
import sys
import time
import urllib.parse
from dataclasses import dataclass

import psycopg2

from bench.run import (
    BIN,
    HOST,
    OUT,
    BenchError,
    ensure_postgres,
    log,
    recreate_database,
    run_step,
    serve,
)

DB_NAME = "todoapp_bench_growth"
DATABASE_URL = f"postgresql://postgres@{HOST}:5432/{DB_NAME}"
PASSWORD = "password123"
USERS = 10_000
ADMIN, BIG, MID, ONE = 1, 2, 3, 4
BUILD_LIMIT_SECONDS = 60
WARMUP = 3
REPEAT = 15

LOAD_SQL = [
    # One bcrypt hash for everyone (the password is PASSWORD).
    """INSERT INTO users (id, email, username, hash_password, role)
       SELECT g, 'grow' || g || '@example.com', 'grow' || g, %(hash)s,
              CASE WHEN g = 1 THEN 'admin' ELSE 'user' END
       FROM generate_series(1, %(users)s) g""",
    "SELECT setval('users_id_seq', %(users)s)",
    """INSERT INTO todos (title, description, priority, complete, owner_id, created_at,
                          updated_at)
       SELECT 'task ' || n, 'note ' || n, n %% 5 + 1, n %% 3 = 0, owner,
              timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second',
              timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second'
       FROM (
           SELECT 2 AS owner, generate_series(1, 100000) AS n
           UNION ALL SELECT 3, generate_series(1, 10000)
           UNION ALL SELECT 4, 1
           UNION ALL SELECT o, n FROM generate_series(1, %(users)s) o,
                                      generate_series(1, 100) n
           WHERE o NOT IN (2, 3, 4)
       ) AS rows""",
]
EXPECTED_TODOS = 100_000 + 10_000 + 1 + (USERS - 3) * 100


def build() -> tuple[float, dict[str, float]]:
    """Migrate, then load the data set; returns (seconds for the data, seconds by step)."""
    env = {**os.environ, "DATABASE_URL": DATABASE_URL}
    run_step([str(BIN / "alembic"), "upgrade", "head"], timeout=120, env=env)
    from todoapp.security import hash_password  # one hash, at the default cost

    steps: dict[str, float] = {}
    connection = psycopg2.connect(f"host={HOST} port=5432 user=postgres dbname={DB_NAME}")
    connection.autocommit = True
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '256MB'")
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename IN ('users', 'todos') AND indexname NOT LIKE '%%pkey'"
            )
            indexes = cursor.fetchall()
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'todos'::regclass AND contype = 'f'"
            )
            foreign_keys = cursor.fetchall()
            mark = time.perf_counter()
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            for name, _definition in foreign_keys:
                cursor.execute(f'ALTER TABLE todos DROP CONSTRAINT "{name}"')
            params = {"hash": hash_password(PASSWORD), "users": USERS}
            for statement in LOAD_SQL:
                cursor.execute(statement, params)
            steps["insert"] = time.perf_counter() - mark
            mark = time.perf_counter()
            for _name, definition in indexes:
                cursor.execute(definition)
            for name, definition in foreign_keys:
                cursor.execute(f'ALTER TABLE todos ADD CONSTRAINT "{name}" {definition}')
            steps["indexes and keys"] = time.perf_counter() - mark
            mark = time.perf_counter()
            cursor.execute("VACUUM ANALYZE users")
            cursor.execute("VACUUM ANALYZE todos")
            steps["vacuum analyze"] = time.perf_counter() - mark
            cursor.execute("SELECT count(*) FROM todos")
            row = cursor.fetchone()
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    if row is None or row[0] != EXPECTED_TODOS:
        raise BenchError(f"the data set has {row} todos, not {EXPECTED_TODOS}")
    return elapsed, steps


class Client:
    """One keep-alive HTTP/1.1 connection to the worker."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=60)

    def call(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started

    def login(self, username: str) -> dict[str, str]:
        form = urllib.parse.urlencode({"username": username, "password": PASSWORD}).encode()
        status, data, _ = self.call(
            "POST",
            "/auth/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
        )
        if status != 200:
            raise BenchError(f"login of {username} answered {status}")
        return {"Authorization": f"Bearer {json.loads(data)['access_token']}"}

    def page(self, path: str, headers: dict[str, str]) -> dict[str, object]:
        status, data, _ = self.call("GET", path, headers)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {data[:200]!r}")
        result: dict[str, object] = json.loads(data)
        return result

    def timed_ms(self, path: str, headers: dict[str, str]) -> float:
        status, data, seconds = self.call("GET", path, headers)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {data[:200]!r}")
        return seconds * 1000

    def paired(
        self, base: str, base_headers: dict[str, str], path: str, headers: dict[str, str]
    ) -> tuple[float, float]:
        """Medians of REPEAT timings of a baseline request and of a request, taken in
        turns (after a warm-up), so that the machine's noise falls on both alike."""
        for _ in range(WARMUP):
            self.timed_ms(base, base_headers)
            self.timed_ms(path, headers)
        firsts, seconds = [], []
        for _ in range(REPEAT):
            firsts.append(self.timed_ms(base, base_headers))
            seconds.append(self.timed_ms(path, headers))
        return statistics.median(firsts), statistics.median(seconds)


@dataclass
class Row:
    label: str
    ms: dict[str, float]  # by owner column: "1", "10,000", "100,000"
    baseline_ms: float
    target: float | None

    @property
    def ratio(self) -> float:
        measured = self.ms.get("100,000", next(iter(self.ms.values())))
        return measured / self.baseline_ms

    @property
    def ok(self) -> bool:
        return self.target is None or self.ratio <= self.target


def cursor_at(client: Client, headers: dict[str, str], path: str, depth: int) -> str:
    """The cursor of the page that starts after `depth` rows of the listing."""
    sep = "&" if "?" in path else "?"
    before = client.page(f"{path}{sep}limit=1&offset={depth - 1}", headers)
    cursor = before["next_cursor"]
    if not isinstance(cursor, str):
        raise BenchError(f"no cursor after {depth} rows of {path}")
    return urllib.parse.quote(cursor)


def measure(port: int) -> list[Row]:
    client = Client(port)
    who = {
        name: client.login(f"grow{uid}")
        for name, uid in (("admin", ADMIN), ("100,000", BIG), ("10,000", MID), ("1", ONE))
    }
    one = who["1"]
    rows: list[Row] = []
    routed = "/todos?limit=20&sort=id"  # the 1-todo owner's first page, through the route

    def row(
        label: str,
        path: str,
        owners: tuple[str, ...],
        target: float | None,
        baseline_path: str | None = None,
    ) -> None:
        ms: dict[str, float] = {}
        baseline = 0.0
        for owner in owners:
            baseline, ms[owner] = client.paired(baseline_path or path, one, path, who[owner])
        if baseline_path is None:
            ms = {"1": baseline, **ms}
        rows.append(Row(label, ms, baseline, target))

    row("GET /todos?limit=20 (with total)", "/todos?limit=20", ("10,000", "100,000"), 3)
    row("GET /todos?limit=20&offset=99000", "/todos?limit=20&offset=99000", ("100,000",), None)
    for query in (
        "sort=-priority",
        "sort=title",
        "sort=-created_at",
        "complete=true",
        "priority=3",
    ):
        row(f"GET /todos?limit=20&{query}", f"/todos?limit=20&{query}", ("100,000",), 6)
    row("GET /todos?limit=20&q=task 99", "/todos?limit=20&q=task%2099", ("100,000",), 10)
    big = who["100,000"]
    for sort, depths in (("id", (1, 50_000, 99_980)), ("-priority", (50_000,))):
        listing = f"/todos?sort={sort}"
        for depth in depths:
            cursor = cursor_at(client, big, listing, depth)
            row(
                f"GET /todos?limit=20&sort={sort}&cursor=… (after {depth:,} rows)",
                f"{listing}&limit=20&cursor={cursor}",
                ("100,000",),
                1.5,
                baseline_path=f"{listing}&limit=20",
            )
    who["1.1 M rows"] = who["admin"]

    def admin_row(label: str, path: str, target: float | None) -> None:
        row(label, path, ("1.1 M rows",), target, baseline_path=routed)

    admin_row("GET /admin/todos?limit=20 (with total)", "/admin/todos?limit=20", 50)
    admin_row("GET /admin/todos?limit=20&q=note 5", "/admin/todos?limit=20&q=note%205", None)
    admin_row(
        "GET /admin/todos?limit=20&offset=1000000", "/admin/todos?limit=20&offset=1000000", None
    )
    for sort, depth in (("id", 1), ("id", 1_000_000), ("title", 600_000)):
        cursor = cursor_at(client, who["admin"], f"/admin/todos?sort={sort}", depth)
        admin_row(
            f"GET /admin/todos?limit=20&sort={sort}&cursor=… (after {depth:,} rows)",
            f"/admin/todos?sort={sort}&limit=20&cursor={cursor}",
            2,
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| request | owner with 1 todo (baseline) ms | 10,000 ms | 100,000 (admin: 1.1 M) ms "
        "| ratio | target | met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        big = row.ms.get("100,000", row.ms.get("1.1 M rows"))
        mid = row.ms.get("10,000")
        lines.append(
            f"| `{row.label}` | {row.baseline_ms:.2f} | "
            f"{'' if mid is None else f'{mid:.2f}'} | {big:.2f} | {row.ratio:.2f}x | "
            f"{'' if row.target is None else f'<= {row.target:g}x'} | "
            f"{'' if row.target is None else ('yes' if row.ok else 'NO')} |"
        )
    return "\n".join(lines)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        ensure_postgres()
        recreate_database(DB_NAME)
        log("building the data set (10,000 users, 1,109,701 todos)")
        seconds, steps = build()
        detail = ", ".join(f"{name} {value:.1f} s" for name, value in steps.items())
        log(f"data set built in {seconds:.1f} s ({detail})")
        env = {
            **os.environ,
            "DATABASE_URL": DATABASE_URL,
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "LOG_LEVEL": "WARNING",
        }
        with serve("growth", "todoapp.main:app", env, []) as server:
            rows = measure(server.port)
    except BenchError as exc:
        print(f"bench-growth: {exc}", file=sys.stderr)
        return 1
    report = table(rows)
    build_line = f"Data set built in {seconds:.1f} s ({detail}); limit {BUILD_LIMIT_SECONDS} s."
    (OUT / "growth.md").write_text(f"{report}\n\n{build_line}\n")
    print(report)
    print(build_line)
    missed = [row.label for row in rows if not row.ok]
    if seconds > BUILD_LIMIT_SECONDS:
        missed.append(f"data set build {seconds:.1f} s > {BUILD_LIMIT_SECONDS} s")
    if missed:
        print("targets missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    print("every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: load scenarios against one production worker, and the table they print.

Bounded (about fifteen minutes on 2 cores) and only ever aimed at 127.0.0.1:

1. installs wrk if it is missing;
2. recreates the PostgreSQL database todoapp_bench, migrates and seeds it (timed), and
   promotes the last demo user to admin (`python -m todoapp create-admin`);
3. signs everyone the scenarios act as in through the API, once, on a setup worker
   using both cores (bcrypt is the slow part): demo1..demo50 for the route scenarios,
   demo51..demo100 who own the todos DELETE deletes, demo101..demo164 for the session
   mix (one per connection), and the admin;
4. serves bench/ceiling.py, the framework-only ceiling, and the app, each as one
   uvicorn worker (uvloop, httptools) pinned to core 0 (one idle while the other is
   measured), with wrk pinned to core 1; each scenario runs against the ceiling and
   the app in turns, with the same wrk script and data, and each app row is read
   against its own route's ceiling row, measured seconds before it (see bench_app);
5. runs each scenario after a warm-up at 8 and 64 connections (the best of TURNS turns
   of BENCH_SECONDS / TURNS each, on the ceiling and the app alternately), and each
   route also at 256 (the no-error check, one run), plus a memory check, and prints one
   table (also written to build/bench/results.md; wrk's own output and the servers'
   logs are beside it), with issue #17's targets, each met or NOT MET;
6. last, the login flood of issue #14: 40 connections of logins with random usernames
   while 8 connections of signed-in users read GET /users/me and GET /todos.

The scenarios: GET /todos?limit=20 (the hot path), GET /todos/{id}, GET /users/me,
GET /admin/todos?limit=20 and GET /admin/users?limit=20 (reads); POST /todos,
PATCH /todos/{id}, PUT /todos/{id} (a full replacement) and DELETE /todos/{id}
(writes; every DELETE deletes a distinct todo that exists: see DeleteFeed); and the
frontend session mix (bench/session_mix.lua): each connection one virtual user signed
in as its own user, going round list 40%, read one 15%, GET /users/me 10%, create 10%,
edit (PATCH) 10%, complete (PATCH complete=true) 10%, delete one it made 5%, plus a
POST /auth/refresh as each connection's first request and every 200 requests after
(every few minutes of a real user's life). Every answer is checked for its route's own
status (200, 201 or 204) in the wrk scripts; any other is counted as a wrong status,
shown with the statuses seen, and never counted as speed (req/s counts right answers).

Exits non-zero when the seed fails, a request of a non-login scenario gets a wrong
status or errs (socket errors and timeouts included; the ceiling's rows and the reads
during the login flood included), a run gets no answer at all, a session mix
connection was answered but never refreshed, or the worker's memory grows by more than
10% over 90,000 GET /todos made after every scenario has run. Both readings come after
every route has run at 8, 64 and 256 connections, so that the check sees growth with
the number of requests (a leak), not a burst's high-water mark nor the first use of a
route (its code, its statements in SQLAlchemy's cache); when the app is too slow to
make 90,000 within the time bound, the report says so and compares what it reached.
The targets are printed, not enforced.
Standard library only, plus psycopg2 from requirements.txt. BENCH_SECONDS and
BENCH_WARMUP_SECONDS (default 10 and 2) change the length of each run.

`--quick` is a smoke test of every step with 2 s runs (6 s at 256 connections: a run
there always outlasts wrk's 5 s timeout, so that no answer means a stall; written to
build/bench/results-quick.md; its memory check does not fail it). `--only TEXT`
(repeatable) runs only the scenarios whose label contains TEXT, on the ceiling and the
app, without the memory check, the logins and the flood. `--profile` also samples the
worker with py-spy (if installed) while GET /todos runs: build/bench/profile-*.svg
(flame graphs) and build/bench/profile-top.txt (top functions).
"""

import argparse
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = ROOT / "build" / "bench"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # the only address this harness ever sends traffic to
PG_ADMIN_DSN = f"host={HOST} port=5432 user=postgres dbname=postgres connect_timeout=5"
DB_NAME = "todoapp_bench"
DATABASE_URL = f"postgresql://postgres@{HOST}:5432/{DB_NAME}"
BENCH_DSN = f"host={HOST} port=5432 user=postgres dbname={DB_NAME}"
SEED_USERS = 1000
SEED_TODOS = 50
DEMO_USERS = 50
DEMO_PASSWORD = "password123"
IDS_PER_USER = 10  # own todos per demo user that GET/PATCH /todos/{id} rotate through
# demo1..demo50 act in the route scenarios (rotating); demo51..demo100 own the todos that
# DELETE /todos/{id} deletes; demo101..demo164 are the session mix's virtual users, one
# per connection; the last seeded user is promoted to admin for the admin lists.
FODDER_USERS = 50
MIX_USERS = 64  # CONNECTIONS[-1]
ADMIN_USER = f"demo{SEED_USERS}"
SIGN_IN_THREADS = 2  # the app's hashing turns (HASHING_SLOTS): more would wait
SIGN_IN_RETRIES = 20
# Todos to delete: the ceiling's DELETE rate times the run's seconds times this, plus
# FODDER_SPARE per user (the app is never faster than its ceiling).
FODDER_MARGIN = 1.5
FODDER_SPARE = 20
FODDER_FALLBACK_RPS = 20_000.0
# The tokens signed in at the start must outlast the whole bench.
ACCESS_TOKEN_MINUTES = "240"
SERVER_CORE = "0"
WRK_CORE = "1"
CONNECTIONS = (8, 64)
STALL_CONNECTIONS = 256
# At CONNECTIONS, the ceiling and the app take turns this many times (see bench_app).
TURNS = 2
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
QUICK_SECONDS = 2  # --quick: each run this long
WARMUP = int(os.environ.get("BENCH_WARMUP_SECONDS", "2"))
# bcrypt-bound (12 rounds: 2-3 a second on one core): no warm-up, which would leave a
# backlog of hashing behind; reported in a table of their own, never a failure.
LOGIN_DURATION = 8
LOGIN_WARMUP = 0
# The login flood (issue #14): random-username logins at FLOOD_CONNECTIONS while
# signed-in users read at FLOOD_READERS; the flood starts FLOOD_LEAD_SECONDS earlier.
FLOOD_CONNECTIONS = 40
FLOOD_READERS = 8
FLOOD_LEAD_SECONDS = 2
FLOOD_READS_P99_MS = 100.0
# One address floods here; the per-address budget would soon answer it with quick
# 429s, so it is raised: every login is hashed, as in a flood from many addresses.
FLOOD_ADDRESS_BUDGET = "1000000000"
# A request unanswered for this long is a stall: wrk counts it as a timeout error.
WRK_TIMEOUT = "5s"
STALL_MIN_SECONDS = 6  # the shortest run at STALL_CONNECTIONS: past WRK_TIMEOUT
MEMORY_FIRST = 10_000
MEMORY_SECOND = 100_000
MEMORY_FIRST_MAX_SECONDS = 45
MEMORY_SECOND_MAX_SECONDS = 45
# Below the app's pool size: the check is about memory, not about many connections.
MEMORY_CONNECTIONS = 8
MEMORY_CHUNK_SECONDS = 3
MEMORY_TOLERANCE = 0.10
# Other processes taking more than this much of a core make the numbers noisy.
NOISY = 0.25
PROFILE_CONNECTIONS = 8
# Bounds on waiting for the worker to finish what a run left queued (see Server.settle).
SETTLE_AFTER_WARMUP_SECONDS = 10
SETTLE_AFTER_RUN_SECONDS = 15
SETTLED_ANSWER_SECONDS = 0.5

_started = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _started:6.1f}s] {message}", flush=True)


class BenchError(Exception):
    """A step that makes the rest of the run pointless; the message is one line."""


def run_step(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(cmd[:4])} failed ({result.returncode}): {' | '.join(tail)}")
    return result.stdout


# --- tools and database ---------------------------------------------------------------
def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run_step(install, timeout=300, env=env)
    except BenchError:
        run_step(["apt-get", "update", "-q"], timeout=300, env=env)
        run_step(install, timeout=300, env=env)
    if not shutil.which("wrk"):
        raise BenchError("wrk is still missing after apt-get install")


def _postgres_answers() -> bool:
    try:
        psycopg2.connect(PG_ADMIN_DSN).close()
    except psycopg2.OperationalError:
        return False
    return True


def ensure_postgres() -> None:
    if _postgres_answers():
        return
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        raise BenchError("PostgreSQL is not answering at 127.0.0.1:5432 and is not installed")
    log(f"starting PostgreSQL {versions[-1]}")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _postgres_answers():
            return
        time.sleep(0.5)
    raise BenchError("PostgreSQL did not come up at 127.0.0.1:5432 within 30 s")


def recreate_database(name: str = DB_NAME) -> None:
    connection = psycopg2.connect(PG_ADMIN_DSN)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def app_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=DATABASE_URL, **extra)
    return env


def seed() -> tuple[float, str]:
    """Seed the demo data into the fresh database; returns (wall seconds, its output)."""
    cmd = [str(BIN / "python"), "-m", "todoapp", "seed"]
    cmd += ["--users", str(SEED_USERS), "--todos", str(SEED_TODOS)]
    started = time.perf_counter()
    output = run_step(cmd, timeout=300, env=app_env()).strip()
    elapsed = time.perf_counter() - started
    counts = re.search(r"seeded (\d+) new demo users and (\d+) todos", output)
    if counts and (int(counts[1]), int(counts[2])) != (SEED_USERS, SEED_USERS * SEED_TODOS):
        raise BenchError(f"seed made the wrong amount of data: {output}")
    return elapsed, output


# --- processes and CPU accounting ------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """Time all cores together spent on anything but idling, since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK  # less idle and iowait


@cache
def postmaster_pid() -> int:
    """The pid of the PostgreSQL server at 127.0.0.1:5432 (other clusters may run too)."""
    connection = psycopg2.connect(PG_ADMIN_DSN)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            row = cursor.fetchone()
    finally:
        connection.close()
    if row is None:
        raise BenchError("PostgreSQL did not say where its data directory is")
    return int((Path(row[0]) / "postmaster.pid").read_text().split()[0])


def postgres_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of that server's processes (itself, backends, helpers) by pid."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        pid, parent = int(entry.name), int(fields[1])
        if name.startswith("postgres") and postmaster in (pid, parent):
            found[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


def children_cpu() -> float:
    """CPU of this script's finished children: wrk and taskset."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSample:
    at: float
    machine: float
    worker: float
    postgres: dict[int, float]
    children: float
    me: float

    @classmethod
    def take(cls, worker_pid: int) -> "CpuSample":
        return cls(
            at=time.monotonic(),
            machine=machine_busy_seconds(),
            worker=cpu_seconds(worker_pid),
            postgres=postgres_cpu(postmaster_pid()),
            children=children_cpu(),
            me=time.process_time(),
        )


@dataclass
class CpuShare:
    """Cores' worth of CPU (1.0 = one core busy) over an interval."""

    worker: float
    postgres: float
    others: float  # neither the worker, PostgreSQL, wrk nor this script: noise


def cpu_share(before: CpuSample, after: CpuSample) -> CpuShare:
    wall = max(after.at - before.at, 1e-6)
    worker = after.worker - before.worker
    pg = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items())
    ours = (after.children - before.children) + (after.me - before.me)
    others = (after.machine - before.machine) - worker - pg - ours
    return CpuShare(worker / wall, pg / wall, max(others, 0.0) / wall)


def idle_check(seconds: float = 2.0) -> float:
    """How busy the machine is before the bench starts, in cores."""
    before, started = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / (time.monotonic() - started)


def open_connections(port: int) -> int:
    """Connections to the server's port that it still holds (established or closing)."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # 01 ESTABLISHED, 08 CLOSE_WAIT: the client is gone, the server not done yet.
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in ("01", "08"):
                held += 1
    return held


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


# --- servers ----------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    pid: int
    base: str
    port: int

    def settle(self, max_seconds: float) -> float:
        """Wait until the worker is done with what the last run left behind.

        When wrk stops, its connections close with requests still queued in the
        worker, which goes on serving them (uvicorn does not cancel them); a run
        started meanwhile would measure that backlog. Settled means: no connection
        left open and /readyz, which needs a worker thread and a database connection
        in the app, answered promptly. Returns the seconds it took (bounded).
        """
        started = time.monotonic()
        deadline = started + max_seconds
        while time.monotonic() < deadline and open_connections(self.port):
            time.sleep(0.05)
        while time.monotonic() < deadline:
            asked = time.monotonic()
            try:
                status, _ = http(self.base, "GET", "/readyz", timeout=2)
            except OSError:
                status = 0
            if status == 200 and time.monotonic() - asked < SETTLED_ANSWER_SECONDS:
                break
            time.sleep(0.1)
        return time.monotonic() - started


@contextmanager
def serve(
    name: str, target: str, env: dict[str, str], extra: list[str], cores: str = SERVER_CORE
) -> Iterator[Server]:
    """One uvicorn worker on core 0 (or `cores`), ready at /readyz; always stopped on
    the way out."""
    port = free_port()
    cmd = ["taskset", "-c", cores, str(BIN / "uvicorn"), target, *extra]
    cmd += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    cmd += ["--no-access-log", "--timeout-graceful-shutdown", "5"]
    log_path = OUT / f"{name}.log"
    with log_path.open("wb") as server_log:
        # A session of its own, so that stopping it takes its whole process group.
        process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://{HOST}:{port}"
        _wait_ready(process, base, log_path)
        # taskset execs uvicorn, so this pid is the worker itself.
        if b"uvicorn" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
            raise BenchError(f"pid {process.pid} is not the uvicorn worker")
        log(f"{name} serving at {base} (pid {process.pid}, cores {cores}, log {log_path})")
        yield Server(name, process.pid, base, port)
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"server exited ({process.returncode}): {' | '.join(tail)}")
        try:
            status, _ = http(base, "GET", "/readyz", timeout=2)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    raise BenchError(f"{base}/readyz did not answer 200 within 60 s (see {log_path})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def http(
    base: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    form: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    url = base + path  # always http://127.0.0.1:<port>/...
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


# --- wrk ---------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: str
    connections: int
    requests: int
    rps: float  # right answers per second: a wrong status is never counted as speed
    p50_ms: float
    p99_ms: float
    non2xx: int  # answers with another status than the scenario's own ("wrong status")
    errors: int
    cpu: CpuShare
    settle_s: float  # how long the worker went on with queued requests after wrk stopped
    route: str = ""  # the scenario this row measures (a ceiling row: the route it mirrors)
    kind: str = ""  # read, write or mix (the targets that apply); "" for the others
    extra: dict[str, int] = field(default_factory=dict)  # the script's own counters
    wrong: dict[str, int] = field(default_factory=dict)  # wrong answers by status
    login: bool = False
    ceiling: bool = False
    flood: bool = False  # the login flood's table: the flood itself, or the reads during it

    @property
    def clean(self) -> bool:
        return self.requests > 0 and not (self.non2xx or self.errors)


def wrk_command(
    script: str,
    base: str,
    connections: int,
    seconds: int,
    *,
    data: Path | None = None,
    cap: int = 0,
    timeout: str = WRK_TIMEOUT,
    threads: int = 1,
    out: Path | None = None,
) -> list[str]:
    cmd = ["taskset", "-c", WRK_CORE, "wrk", f"-t{threads}", f"-c{connections}"]
    cmd += [f"-d{seconds}s", "--timeout", timeout, "--latency", "-s", str(BENCH / script)]
    return [*cmd, base + "/", "--", str(data) if data else "", str(cap), str(out or "")]


def wrk_numbers(label: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """Keep wrk's output beside the results; the numbers bench/lib.lua's done() prints."""
    (OUT / "wrk").mkdir(exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    (OUT / "wrk" / f"{slug}.txt").write_text(stdout + stderr)
    found = re.search(r"^BENCH_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if returncode != 0 or not found:
        raise BenchError(f"wrk {label} failed ({returncode}): {stderr.strip()}")
    numbers: dict[str, Any] = json.loads(found.group(1))
    return numbers


def wrk(
    label: str,
    script: str,
    base: str,
    connections: int,
    seconds: int,
    *,
    data: Path | None = None,
    cap: int = 0,
    timeout: str = WRK_TIMEOUT,
    threads: int = 1,
    out: Path | None = None,
) -> dict[str, Any]:
    """One wrk run on core 1; returns the numbers that bench/lib.lua's done() prints."""
    cmd = wrk_command(
        script,
        base,
        connections,
        seconds,
        data=data,
        cap=cap,
        timeout=timeout,
        threads=threads,
        out=out,
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return wrk_numbers(label, result.returncode, result.stdout, result.stderr)


def result_row(
    label: str, connections: int, n: dict[str, Any], cpu: "CpuShare", settle: float
) -> "Result":
    seconds = n["duration_us"] / 1e6
    extra = dict(n.get("extra", {}))
    extra.update({k: v for k, v in n.items() if k in ("never_refreshed", "idle", "threads")})
    return Result(
        scenario=label,
        connections=connections,
        requests=n["requests"],
        rps=max(n["requests"] - n["non2xx"], 0) / seconds,
        p50_ms=n["p50_us"] / 1000,
        p99_ms=n["p99_us"] / 1000,
        non2xx=n["non2xx"],
        errors=n["connect"] + n["read"] + n["write"] + n["timeout"],
        cpu=cpu,
        settle_s=settle,
        route=label,
        extra=extra,
        wrong=dict(n.get("wrong", {})),
    )


def wrong(row: "Result") -> str:
    """The wrong answers' count, and their statuses when there are any."""
    if not row.wrong:
        return str(row.non2xx)
    return f"{row.non2xx} (" + ", ".join(f"{k}: {v}" for k, v in row.wrong.items()) + ")"


def log_row(row: "Result", server: "Server") -> None:
    cpu = row.cpu
    log(
        f"{row.scenario:<24} c={row.connections:<3} {row.rps:8.1f} req/s  "
        f"p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms  wrong status {wrong(row)}  "
        f"errors {row.errors}  CPU worker {cpu.worker:.0%} pg {cpu.postgres:.0%} "
        f"others {cpu.others:.0%}  settle {row.settle_s:.1f} s  "
        f"RSS {rss_kib(server.pid) / 1024:.1f} MiB" + (f"  {row.extra}" if row.extra else "")
    )


@dataclass
class Feed:
    """What one wrk run of a scenario reads, and what to do with what it wrote.

    `before(seconds)` gives (data file, out file or None) for a run that long; `after(out)`
    takes the out file back. The plain kind: one data file, nothing written back.
    """

    data: Path | None = None

    def before(self, seconds: int) -> tuple[Path | None, Path | None]:
        return self.data, None

    def after(self, out: Path | None) -> None:
        return None


def measure(
    server: Server,
    label: str,
    script: str,
    connections: int,
    *,
    data: Path | None = None,
    feed: Feed | None = None,
    seconds: int | None = None,
    warmup: int | None = None,
    timeout: str = WRK_TIMEOUT,
    threads: int = 1,
) -> tuple[Result, int]:
    """Warm up, then measure; returns the row and every response seen (warm-up included)."""
    seconds = DURATION if seconds is None else seconds
    warmup = WARMUP if warmup is None else warmup
    feed = feed or Feed(data)
    name = f"{label}-c{connections}"
    seen = 0
    if warmup > 0:
        given, out = feed.before(warmup)
        warm = wrk(
            f"{name}-warmup",
            script,
            server.base,
            connections,
            warmup,
            data=given,
            timeout=timeout,
            threads=threads,
            out=out,
        )
        server.settle(SETTLE_AFTER_WARMUP_SECONDS)
        feed.after(out)
        seen += warm["responses"]
    given, out = feed.before(seconds)
    before = CpuSample.take(server.pid)
    n = wrk(
        name,
        script,
        server.base,
        connections,
        seconds,
        data=given,
        timeout=timeout,
        threads=threads,
        out=out,
    )
    cpu = cpu_share(before, CpuSample.take(server.pid))
    settle = server.settle(SETTLE_AFTER_RUN_SECONDS)
    feed.after(out)
    seen += n["responses"]
    row = result_row(label, connections, n, cpu, settle)
    log_row(row, server)
    return row, seen


# --- who the scenarios act as ----------------------------------------------------------
@dataclass
class Signed:
    """A session of one user, started with POST /auth/token."""

    username: str
    token: str
    refresh: str
    ids: list[int] = field(default_factory=list)  # some of the user's own todo ids


def sign_in(base: str, username: str, *, with_ids: bool) -> Signed:
    form = {"username": username, "password": DEMO_PASSWORD}
    status, body = http(base, "POST", "/auth/token", form=form)
    for _ in range(SIGN_IN_RETRIES):
        if status != 503:  # 503: every hashing turn taken (busy machine); try again
            break
        time.sleep(0.5)
        status, body = http(base, "POST", "/auth/token", form=form)
    if status != 200:
        raise BenchError(f"login as {username} answered {status}")
    signed = Signed(username, body["access_token"], body["refresh_token"])
    if with_ids:
        path = f"/todos?limit={IDS_PER_USER}"
        status, page = http(base, "GET", path, token=signed.token)
        if status != 200 or not page["items"]:
            raise BenchError(f"GET /todos as {username} answered {status} with no todos")
        signed.ids = [item["id"] for item in page["items"]]
    return signed


def sign_in_all(base: str, usernames: list[str], *, with_ids: bool) -> list[Signed]:
    """Each one signed in once (bcrypt: a few a second), SIGN_IN_THREADS at a time."""
    with ThreadPoolExecutor(SIGN_IN_THREADS) as pool:
        return list(pool.map(lambda name: sign_in(base, name, with_ids=with_ids), usernames))


def lua(value: Any) -> str:
    """A Lua literal for JSON-like data (dicts with identifier keys, lists, str, int)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {lua(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua(item) for item in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def write_lua(path: Path, what: str, entries: list[dict[str, Any]]) -> Path:
    """A data file the wrk scripts load with dofile(): `return {entry, ...}`."""
    body = "\n".join(f"  {lua(entry)}," for entry in entries)
    path.write_text(f"-- written by bench/run.py for one run: {what}\nreturn {{\n{body}\n}}\n")
    return path


def users_entries(signed: list[Signed]) -> list[dict[str, Any]]:
    return [{"username": s.username, "token": s.token, "ids": s.ids} for s in signed]


def promote_admin() -> None:
    """ADMIN_USER (a seeded demo user) becomes an admin, as the CLI does it."""
    cmd = [str(BIN / "python"), "-m", "todoapp", "create-admin"]
    cmd += ["--username", ADMIN_USER, "--email", f"{ADMIN_USER}@example.com"]
    output = run_step(cmd, timeout=60, env=app_env()).strip()
    if "admin" not in output:
        raise BenchError(f"create-admin said: {output}")


@dataclass
class Cast:
    """Everyone the scenarios act as, each signed in once at the start (see main)."""

    demo: list[Signed]  # demo1..: every route's scenario, rotating
    fodder: list[Signed]  # the owners of the todos that DELETE /todos/{id} deletes
    mix: list[Signed]  # one per connection of the session mix, its own user each
    admin: Signed

    @property
    def users_path(self) -> Path:
        return OUT / "users.lua"

    def write(self) -> None:
        write_lua(self.users_path, "demo users, tokens, own todo ids", users_entries(self.demo))
        admin = users_entries([self.admin])
        write_lua(OUT / "admin.lua", "the admin and its token", admin)
        self.write_sessions()
        # The ceiling deletes nothing: ranges as large as it likes, in the same shape.
        ranges = [
            {"index": k, "username": s.username, "token": s.token, "ranges": [[1, 2**31 - 1]]}
            for k, s in enumerate(self.fodder, start=1)
        ]
        write_lua(OUT / "fodder-ceiling.lua", "todos to delete (ceiling)", ranges)

    def write_sessions(self) -> Path:
        entries = [
            {"username": s.username, "token": s.token, "refresh": s.refresh, "ids": s.ids}
            for s in self.mix
        ]
        return write_lua(OUT / "sessions.lua", "the session mix's users, tokens", entries)


# --- the todos DELETE /todos/{id} deletes ----------------------------------------------------
def _owners(cursor: Any, usernames: list[str]) -> list[int]:
    cursor.execute("SELECT id FROM users WHERE username = ANY(%s) ORDER BY id", (usernames,))
    return [row[0] for row in cursor.fetchall()]


# Each fodder user's floor (low): the first id a run may send it (see fodder_ranges).
FODDER_INSERT = """
    WITH low AS (SELECT * FROM unnest(%(owners)s::int[], %(floors)s::int[])
                 AS l(owner_id, first_id))
    INSERT INTO todos (title, description, priority, complete, owner_id)
    SELECT 'to delete ' || n, '', n %% 5 + 1, false, have.owner_id
    FROM (SELECT low.owner_id, count(t.id) AS n_todos FROM low
          LEFT JOIN todos t ON t.owner_id = low.owner_id AND t.id >= low.first_id
          GROUP BY low.owner_id) AS have,
         generate_series(1, %(per_user)s - have.n_todos) AS n"""
FODDER_RANGES = """
    WITH low AS (SELECT * FROM unnest(%(owners)s::int[], %(floors)s::int[])
                 AS l(owner_id, first_id))
    SELECT owner_id, min(id), max(id) FROM (
        SELECT t.owner_id, t.id, t.id - row_number() OVER (
            PARTITION BY t.owner_id ORDER BY t.id) AS island
        FROM low JOIN todos t ON t.owner_id = low.owner_id AND t.id >= low.first_id
    ) AS numbered
    GROUP BY owner_id, island ORDER BY owner_id, min(id)"""


def fodder_ranges(
    fodder: list[Signed], per_user: int, floors: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Make sure each fodder user owns at least `per_user` todos with ids from its floor
    up (set-based inserts straight into PostgreSQL, as the seed does: new ids are above
    every floor), then read those as ranges of consecutive ids, for
    bench/todo_delete.lua to delete each of them once. A floor is one past the last id
    an earlier run sent to that user: a delete still in flight then is never resent."""
    floors = floors or {}
    names = [s.username for s in fodder]
    connection = psycopg2.connect(BENCH_DSN)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT username, id FROM users WHERE username = ANY(%s)", (names,))
            owners = dict(cursor.fetchall())
            given = {
                "owners": [owners[name] for name in names],
                "floors": [floors.get(name, 0) for name in names],
                "per_user": per_user,
            }
            cursor.execute(FODDER_INSERT, given)
            cursor.execute(FODDER_RANGES, given)
            found: dict[int, list[list[int]]] = {}
            for owner, first, last in cursor.fetchall():
                found.setdefault(owner, []).append([first, last])
    finally:
        connection.close()
    return [
        {
            "index": index,
            "username": s.username,
            "token": s.token,
            "ranges": found.get(owners[s.username], []),
        }
        for index, s in enumerate(fodder, start=1)
    ]


@dataclass
class DeleteFeed(Feed):
    """Before each run: enough todos for it (the ceiling's DELETE rate bounds the app's),
    written as ranges; each run deletes a distinct existing todo with every request,
    none that an earlier run sent (see fodder_ranges)."""

    fodder: list[Signed] = field(default_factory=list)
    bound_rps: float = 0.0
    floors: dict[str, int] = field(default_factory=dict)

    def before(self, seconds: int) -> tuple[Path | None, Path | None]:
        need = self.bound_rps * seconds * FODDER_MARGIN
        per_user = math.ceil(need / len(self.fodder)) + FODDER_SPARE
        entries = fodder_ranges(self.fodder, per_user, self.floors)
        path = write_lua(OUT / "fodder.lua", "todos to delete, as id ranges", entries)
        out = OUT / "fodder-out.jsonl"
        out.unlink(missing_ok=True)
        return path, out

    def after(self, out: Path | None) -> None:
        if out is None or not out.exists():
            raise BenchError("DELETE /todos/{id} wrote back no ids")
        for line in out.read_text().splitlines():
            sent = json.loads(line)
            name = self.fodder[sent["index"] - 1].username
            self.floors[name] = max(self.floors.get(name, 0), sent["sent"] + 1)


@dataclass
class SessionFeed(Feed):
    """The session mix on the app: each run goes on from the tokens the last one left
    (refreshes rotate them); a session whose refresh was cut off by the end of a run
    is signed in anew."""

    cast: Cast | None = None
    base: str = ""

    def before(self, seconds: int) -> tuple[Path | None, Path | None]:
        if self.cast is None:
            raise BenchError("the session mix has no users")
        out = OUT / "sessions-out.jsonl"
        out.unlink(missing_ok=True)
        return self.cast.write_sessions(), out

    def after(self, out: Path | None) -> None:
        if self.cast is None or out is None or not out.exists():
            raise BenchError("the session mix wrote back no tokens")
        for line in out.read_text().splitlines():
            left = json.loads(line)
            index = left["index"] - 1
            if left["lost"]:
                old = self.cast.mix[index]
                self.cast.mix[index] = sign_in(self.base, old.username, with_ids=False)
                self.cast.mix[index].ids = old.ids
                log(f"session mix: {old.username}'s refresh was cut off; signed in anew")
            else:
                self.cast.mix[index].token = left["token"]
                self.cast.mix[index].refresh = left["refresh"]


# --- the scenarios -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    label: str
    script: str
    kind: str  # read, write or mix: which of issue #17's targets applies
    data: str  # users, admin, fodder or sessions: who it acts as
    per_connection: bool = False  # one wrk thread per connection: a virtual user each
    at_stall: bool = True  # also run at STALL_CONNECTIONS (the no-error check)


MIX_LABEL = "frontend session mix"
SCENARIOS = (
    Scenario("GET /todos?limit=20", "todos_list.lua", "read", "users"),
    Scenario("GET /todos/{id}", "todo_read.lua", "read", "users"),
    Scenario("GET /users/me", "users_me.lua", "read", "users"),
    Scenario("GET /admin/todos?limit=20", "admin_todos.lua", "read", "admin"),
    Scenario("GET /admin/users?limit=20", "admin_users.lua", "read", "admin"),
    Scenario("POST /todos", "todo_create.lua", "write", "users"),
    Scenario("PATCH /todos/{id}", "todo_update.lua", "write", "users"),
    Scenario("PUT /todos/{id}", "todo_replace.lua", "write", "users"),
    Scenario("DELETE /todos/{id}", "todo_delete.lua", "write", "fodder"),
    Scenario(MIX_LABEL, "session_mix.lua", "mix", "sessions", per_connection=True, at_stall=False),
)
LIST = SCENARIOS[0]
ONLY: list[str] = []  # --only: the scenarios whose label contains one of these, alone


def chosen(scenarios: tuple[Scenario, ...]) -> list[Scenario]:
    if not ONLY:
        return list(scenarios)
    return [s for s in scenarios if any(part.lower() in s.label.lower() for part in ONLY)]


LIST_LABEL, LIST_SCRIPT = LIST.label, LIST.script
DELETE_LABEL = "DELETE /todos/{id}"


def feed_for(scenario: Scenario, cast: Cast, *, app: Server | None, bound_rps: float = 0.0) -> Feed:
    """The data a scenario's runs read: on the ceiling (app None) never written back."""
    if scenario.data == "admin":
        return Feed(OUT / "admin.lua")
    if scenario.data == "fodder":
        if app is None:
            return Feed(OUT / "fodder-ceiling.lua")
        return DeleteFeed(fodder=cast.fodder)
    if scenario.data == "sessions":
        if app is None:
            return Feed(cast.write_sessions())
        return SessionFeed(cast=cast, base=app.base)
    return Feed(cast.users_path)


def run_seconds(connections: int) -> int:
    """How long a scenario's run lasts at that many connections (its warm-up aside).

    At STALL_CONNECTIONS a run outlasts wrk's timeout: a request unanswered that long is
    a timeout error, so a run without answers is a stall, never only a short run.
    Elsewhere the ceiling and the app take turns (see bench_app), each turn a share.
    """
    if connections == STALL_CONNECTIONS:
        return max(DURATION, STALL_MIN_SECONDS)
    return max(1, DURATION // TURNS)


def run_scenario(
    server: Server, scenario: Scenario, connections: int, feed: Feed, *, ceiling: bool
) -> tuple[Result, int]:
    label = f"ceiling: {scenario.label}" if ceiling else scenario.label
    threads = connections if scenario.per_connection else 1
    seconds = run_seconds(connections)
    row, seen = measure(
        server, label, scenario.script, connections, feed=feed, threads=threads, seconds=seconds
    )
    row.route, row.kind, row.ceiling = scenario.label, scenario.kind, ceiling
    return row, seen


@dataclass
class Memory:
    start_kib: int = 0
    first_kib: int = 0
    first_requests: int = 0
    second_kib: int = 0
    second_requests: int = 0
    end_kib: int = 0

    @property
    def growth(self) -> float:
        return (self.second_kib - self.first_kib) / self.first_kib if self.first_kib else 0.0

    @property
    def complete(self) -> bool:
        return self.second_requests - self.first_requests >= (MEMORY_SECOND - MEMORY_FIRST) * 0.95


def list_until(
    server: Server,
    data: Path,
    done: int,
    target: int,
    max_seconds: float,
    connections: int = MEMORY_CONNECTIONS,
) -> int:
    """GET /todos?limit=20 until `target` in all, or time is up; returns the new total.

    In short wrk runs capped at what is still missing: wrk's cap stops its thread but
    not its clock.
    """
    deadline = time.monotonic() + max_seconds
    while done < target and time.monotonic() < deadline:
        seconds = max(1, min(MEMORY_CHUNK_SECONDS, round(deadline - time.monotonic())))
        numbers = wrk(
            f"memory-{target}",
            LIST_SCRIPT,
            server.base,
            connections,
            seconds,
            data=data,
            cap=target - done,
        )
        server.settle(SETTLE_AFTER_RUN_SECONDS)
        if numbers["responses"] == 0:
            break  # the app stopped answering: report() shows the shortfall
        done += numbers["responses"]
    return done


def delete_bound(ceiling: list[Result], connections: int) -> float:
    """The most DELETE /todos/{id} per second the app could answer at that many
    connections: its ceiling's rate (the largest one at other counts)."""
    rates = {r.connections: r.rps for r in ceiling if r.route == DELETE_LABEL}
    return rates.get(connections) or max(rates.values(), default=FODDER_FALLBACK_RPS)


def bench_app(server: Server, top: Server, cast: Cast, memory: Memory) -> list[Result]:
    """Each scenario on the ceiling (`top`) and the app in turns, TURNS times at each
    connection count, each turn DURATION / TURNS seconds, and each keeps its best turn.
    The two rows a ratio is made of are thus seconds apart, not the whole bench, and a
    turn that a neighbour's load slowed down counts for neither: on a machine whose
    speed drifts, the ratio measures the code, not the drift. A turn that went wrong
    (a wrong status, an error, no answer) is the one kept, so that it is never hidden."""
    rows: list[Result] = []
    data = cast.users_path
    memory.start_kib = rss_kib(server.pid)
    listed = 0
    for scenario in chosen(SCENARIOS):
        feed = feed_for(scenario, cast, app=server)
        ceiling: list[Result] = []
        for connections in CONNECTIONS:
            tops: list[Result] = []
            apps: list[Result] = []
            for turn in range(TURNS):
                top_feed = feed_for(scenario, cast, app=None)
                tops.append(run_scenario(top, scenario, connections, top_feed, ceiling=True)[0])
                if isinstance(feed, DeleteFeed):
                    feed.bound_rps = max(row.rps for row in tops)
                    if turn == 0:
                        make_fodder(cast, feed.bound_rps, connections, TURNS)
                row, seen = run_scenario(server, scenario, connections, feed, ceiling=False)
                apps.append(row)
                listed += seen if scenario is LIST else 0
            ceiling.append(kept(tops))
            rows += [ceiling[-1], kept(apps)]
        if scenario is LIST:
            top_feed = feed_for(scenario, cast, app=None)
            rows.append(run_scenario(top, scenario, STALL_CONNECTIONS, top_feed, ceiling=True)[0])
        if scenario.at_stall:
            if isinstance(feed, DeleteFeed):
                feed.bound_rps = delete_bound(ceiling, STALL_CONNECTIONS)
                make_fodder(cast, feed.bound_rps, STALL_CONNECTIONS, 1)
            row, seen = run_scenario(server, scenario, STALL_CONNECTIONS, feed, ceiling=False)
            rows.append(row)
            listed += seen if scenario is LIST else 0
    if ONLY:
        memory.end_kib = rss_kib(server.pid)
        return rows
    # Every route has run, at every connection count: RSS is at its high-water mark for
    # bursts and every code path and cached statement is in. From here, it may only
    # grow with the number of requests, which is a leak.
    listed = list_until(server, data, listed, listed + MEMORY_FIRST, MEMORY_FIRST_MAX_SECONDS)
    memory.first_kib, memory.first_requests = rss_kib(server.pid), listed
    log(f"worker RSS after {listed} GET /todos: {memory.first_kib / 1024:.1f} MiB")
    target = listed + MEMORY_SECOND - MEMORY_FIRST
    listed = list_until(server, data, listed, target, MEMORY_SECOND_MAX_SECONDS)
    memory.second_kib, memory.second_requests = rss_kib(server.pid), listed
    log(f"worker RSS after {listed} GET /todos: {memory.second_kib / 1024:.1f} MiB")
    # Last: wrk leaves bcrypt work queued in the worker when a login run ends.
    for connections in CONNECTIONS:
        row, _ = measure(
            server,
            "POST /auth/token",
            "login.lua",
            connections,
            data=data,
            seconds=LOGIN_DURATION,
            warmup=LOGIN_WARMUP,
        )
        row.login = True
        rows.append(row)
    rows += bench_login_flood(server, data)
    memory.end_kib = rss_kib(server.pid)
    return rows


FLOOD_LABEL = "POST /auth/token, random names (the flood)"
FLOOD_READS_LABEL = "GET /users/me + GET /todos during the flood"


def bench_login_flood(server: Server, data: Path) -> list[Result]:
    """Issue #14: logins with random usernames (wrong passwords, each one hashed) at
    FLOOD_CONNECTIONS while signed-in users read at FLOOD_READERS. Logins may be slow
    or refused (503, server busy); the reads must all be 2xx, and fast."""
    server.settle(SETTLE_AFTER_RUN_SECONDS)
    seconds = DURATION + FLOOD_LEAD_SECONDS + 1
    cmd = wrk_command("login_flood.lua", server.base, FLOOD_CONNECTIONS, seconds)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as flood:
        try:
            time.sleep(FLOOD_LEAD_SECONDS)  # the flood is in full swing before the reads
            before = CpuSample.take(server.pid)
            script = "signed_in_reads.lua"
            n = wrk("flood-reads", script, server.base, FLOOD_READERS, DURATION, data=data)
            cpu = cpu_share(before, CpuSample.take(server.pid))
            out, err = flood.communicate(timeout=seconds + 30)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait(timeout=10)
    flooded = wrk_numbers("flood-logins", flood.returncode, out, err)
    settle = server.settle(SETTLE_AFTER_RUN_SECONDS)
    reads = result_row(FLOOD_READS_LABEL, FLOOD_READERS, n, cpu, settle)
    logins = result_row(FLOOD_LABEL, FLOOD_CONNECTIONS, flooded, cpu, settle)
    logins.login = True
    for row in (logins, reads):
        row.flood = True
        log_row(row, server)
    return [logins, reads]


def kept(turns: list[Result]) -> Result:
    """The turn a row reports: the first that went wrong, else the fastest."""
    wrong = [row for row in turns if not row.clean]
    return wrong[0] if wrong else max(turns, key=lambda row: row.rps)


def make_fodder(cast: Cast, bound_rps: float, connections: int, runs: int) -> None:
    """The todos that `runs` DELETE runs of the app at that many connections will delete
    at most, made before the first of them (each run tops them up if it needs more),
    then vacuumed and analysed: the inserts do not set off autovacuum in a run."""
    made = time.monotonic()
    total = bound_rps * (run_seconds(connections) + WARMUP) * FODDER_MARGIN * runs
    fodder_ranges(cast.fodder, math.ceil(total / FODDER_USERS) + FODDER_SPARE)
    connection = psycopg2.connect(BENCH_DSN)
    try:
        connection.autocommit = True  # VACUUM runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE todos")
    finally:
        connection.close()
    log(f"{total:.0f} todos ready for DELETE /todos/{{id}} ({time.monotonic() - made:.1f} s)")


# --- optional profile -------------------------------------------------------------------
def profile(server: Server, data: Path) -> None:
    """py-spy samples of the worker while GET /todos runs: flame graphs and top lists.

    Two views: every busy thread (where a request spends its time, waits on
    PostgreSQL included), and only the thread holding the GIL (where the one
    core's CPU goes: what limits a single worker's throughput).
    """
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists():
        log("--profile: py-spy is not installed (pip install py-spy); skipped")
        return
    summaries = []
    for view, flags in (("threads", []), ("gil", ["--gil"])):
        raw = OUT / f"profile-{view}.txt"
        for fmt, out in (("flamegraph", OUT / f"profile-{view}.svg"), ("raw", raw)):
            server.settle(SETTLE_AFTER_RUN_SECONDS)
            cmd = ["taskset", "-c", WRK_CORE, py_spy, "record", "--pid", str(server.pid)]
            cmd += ["--duration", str(DURATION), "--rate", "250", "--nonblocking"]
            cmd += ["--nolineno", *flags, "--format", fmt, "--output", str(out)]
            with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) as spy:
                try:
                    wrk(
                        f"profile-{view}-{fmt}",
                        LIST_SCRIPT,
                        server.base,
                        PROFILE_CONNECTIONS,
                        DURATION + 1,
                        data=data,
                    )
                    spy.wait(timeout=30)
                finally:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait(timeout=10)
        title = "busy threads" if view == "threads" else "the thread holding the GIL"
        summaries.append(f"## GET /todos?limit=20 at c={PROFILE_CONNECTIONS}: {title}\n\n")
        summaries.append(top_functions(raw) + "\n")
    top = "".join(summaries)
    (OUT / "profile-top.txt").write_text(top)
    log(f"profile: {OUT}/profile-*.svg and profile-top.txt\n{top}")


# Frames under every sample (thread start-up, the CLI, the event loop's entry).
_PLUMBING = re.compile(
    r"\((threading\.py|click/core\.py|uvicorn/(main|server|_compat)\.py|uvicorn"
    r"|asyncio/runners\.py|anyio/_backends/_asyncio\.py)\)$"
)


def top_functions(collapsed: Path, count: int = 30) -> str:
    """Own and total share of samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    if collapsed.exists():
        for line in collapsed.read_text().splitlines():
            stack, _, weight = line.rpartition(" ")
            if not stack or not weight.isdigit():
                continue
            frames = stack.split(";")
            samples += int(weight)
            own[frames[-1]] += int(weight)
            for frame in set(frames):
                total[frame] += int(weight)
    if not samples:
        return "no samples\n"
    packages: Counter[str] = Counter()
    for name, n in own.items():
        where = name.rpartition(" (")[2].rstrip(")")
        packages[where.split("/")[0].removesuffix(".py")] += n
    lines = [f"{samples} samples", "", "own %  package (first folder or module of the file)"]
    lines += [f"{n / samples:6.1%}  {name}" for name, n in packages.most_common(15)]
    lines += ["", "own %  function"]
    lines += [f"{n / samples:6.1%}  {name}" for name, n in own.most_common(count)]
    lines += ["", "total %  function (time spent in it and what it calls; no plumbing)"]
    inner = [(name, n) for name, n in total.most_common() if not _PLUMBING.search(name)]
    lines += [f"{n / samples:7.1%}  {name}" for name, n in inner[:count]]
    return "\n".join(lines) + "\n"


# --- the table ------------------------------------------------------------------------
def ceilings(rows: list[Result]) -> dict[tuple[str, int], float]:
    """Each ceiling row's rate by (the route it mirrors, connections)."""
    return {(row.route, row.connections): row.rps for row in rows if row.ceiling}


def table(rows: list[Result], ceiling_rows: list[Result] | None = None) -> str:
    ceiling = ceilings(ceiling_rows if ceiling_rows is not None else rows)
    lines = [
        "| scenario | connections | req/s | p50 ms | p99 ms | wrong status | errors "
        "| vs its ceiling | vs list ceiling | worker CPU | PostgreSQL CPU | other CPU "
        "| settle s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        measured = row.kind or row.ceiling  # a scenario's row, not a login's
        own = ceiling.get((row.route, row.connections)) if measured else None
        listed = ceiling.get((LIST_LABEL, row.connections)) if measured else None
        ratio = f"{row.rps / own:.2f}" if own else "-"
        vs_list = f"{row.rps / listed:.2f}" if listed else "-"
        lines.append(
            f"| {row.scenario} | {row.connections} "
            f"| {row.rps:.1f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {wrong(row)} "
            f"| {row.errors} | {ratio} | {vs_list} | {row.cpu.worker:.0%} "
            f"| {row.cpu.postgres:.0%} | {row.cpu.others:.0%} | {row.settle_s:.1f} |"
        )
    return "\n".join(lines)


MIX_KINDS = ("list", "read", "me", "create", "patch", "complete", "delete", "refresh")


def scenario_notes(rows: list[Result]) -> list[str]:
    """What the session mix did, request by request kind, and whether DELETE ran dry."""
    notes = []
    for row in rows:
        if row.route == MIX_LABEL and row.extra:
            total = sum(row.extra.get(f"n_{kind}", 0) for kind in MIX_KINDS) or 1
            parts = ", ".join(
                f"{kind} {row.extra.get(f'n_{kind}', 0)} "
                f"({row.extra.get(f'n_{kind}', 0) / total:.1%}, "
                f"{row.extra.get(f'bad_{kind}', 0)} wrong)"
                for kind in MIX_KINDS
            )
            notes.append(
                f"- {row.scenario} at {row.connections} connections: {parts}; "
                f"{row.extra.get('refreshed', 0)} refreshes, "
                f"{row.extra.get('never_refreshed', 0)} of {row.extra.get('threads', 0)} "
                "connections answered without one, "
                f"{row.extra.get('idle', 0)} never answered in the run"
            )
        if row.route == DELETE_LABEL and not row.ceiling and "dry" in row.extra:
            notes.append(
                f"- {row.scenario} at {row.connections} connections: {row.requests} answers, "
                f"{row.non2xx} not 204, ran dry {row.extra['dry']} times"
            )
    return notes


@dataclass
class Run:
    seed_seconds: float = 0.0
    seed_output: str = ""
    idle_before: float = 0.0
    rows: list[Result] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)


def check(run: Run, quick: bool = False) -> list[str]:
    """What makes `make bench` fail: a wrong status or an error in any row but the
    logins' (the ceiling's included: a ratio to a failing ceiling means nothing), a run
    with no answer, a session mix connection that never refreshed, memory."""
    scenarios = [row for row in run.rows if not row.login]
    problems = [
        f"{row.scenario} at c={row.connections}: {row.non2xx} wrong status, {row.errors} errors"
        for row in scenarios
        if row.non2xx or row.errors
    ]
    problems += [
        f"{row.scenario} at c={row.connections}: no response at all in "
        f"{run_seconds(row.connections)} s"
        for row in scenarios
        if row.requests == 0
    ]
    problems += [
        f"{row.scenario} at c={row.connections}: {row.extra['never_refreshed']} connections "
        "were answered but never refreshed their session"
        for row in scenarios
        if row.extra.get("never_refreshed")
    ]
    if abs(run.memory.growth) > MEMORY_TOLERANCE and not quick and not ONLY:
        problems.append(
            f"worker RSS moved {run.memory.growth:+.1%} between {run.memory.first_requests} "
            f"and {run.memory.second_requests} GET /todos requests"
        )
    return problems


HOT_PATH = LIST_LABEL
# Issue #17's targets, against each route's own ceiling in the same run.
TARGET_RATIO = {"read": 0.35, "write": 0.25, "mix": 0.40}
TARGET_HOT_RATIO = 0.60
TARGET_P99_MS = 50.0  # at CONNECTIONS[-1], every route
# Issue #6's: the hot path's p99 at CONNECTIONS[0].
TARGET_HOT_P99_MS = 20.0


def mark(met: bool) -> str:
    return "met" if met else "NOT MET"


def p99_context(row: Result, ceiling_p99: float | None) -> str:
    """What bounds a p99 from below: each wrk connection sends its next request when
    the last is answered, so the mean wait is connections / rate (Little's law), and the
    p99 is no lower than that mean; the ceiling's own p99 is the most wrk and the
    framework allow on this machine."""
    mean = row.connections / row.rps * 1000 if row.rps else math.inf
    said = f" (mean {mean:.1f} ms at {row.rps:.0f} req/s"
    return said + (f"; the ceiling's p99 {ceiling_p99:.1f} ms)" if ceiling_p99 else ")")


def targets(run: Run) -> list[str]:
    """Issue #17's targets (and the earlier ones still standing), each with what this
    run measured and met / NOT MET. A row with a wrong status or an error meets none.

    Printed, not enforced: a ratio on a noisy machine is a reading, not a verdict.
    """
    ceiling = ceilings(run.rows)
    app = {(r.route, r.connections): r for r in run.rows if r.kind and not r.ceiling}
    lines = []
    for scenario in SCENARIOS:
        wanted = TARGET_HOT_RATIO if scenario is LIST else TARGET_RATIO[scenario.kind]
        what = "the hot path" if scenario is LIST else f"a {scenario.kind}"
        for connections in CONNECTIONS:
            row, top = (
                app.get((scenario.label, connections)),
                ceiling.get((scenario.label, connections)),
            )
            if not row or not top:
                lines.append(
                    f"- {scenario.label} at {connections} connections: not measured, NOT MET"
                )
                continue
            ratio = row.rps / top
            lines.append(
                f"- {scenario.label} at {connections} connections >= {wanted:.2f} of its "
                f"ceiling ({what}): {row.rps:.0f} / {top:.0f} = {ratio:.2f}"
                + ("" if row.clean else f" ({row.non2xx} wrong status, {row.errors} errors)")
                + f", {mark(row.clean and ratio >= wanted)}"
            )
    many = CONNECTIONS[-1]
    p99s = {r.route: r.p99_ms for r in run.rows if r.ceiling and r.connections == many}
    for scenario in chosen(SCENARIOS):
        if row := app.get((scenario.label, many)):
            lines.append(
                f"- {scenario.label}: p99 at {many} connections under {TARGET_P99_MS:.0f} ms: "
                f"{row.p99_ms:.1f} ms{p99_context(row, p99s.get(scenario.label))}, "
                f"{mark(row.clean and row.p99_ms < TARGET_P99_MS)}"
            )
    for scenario in chosen(SCENARIOS):
        if row := app.get((scenario.label, STALL_CONNECTIONS)):
            lines.append(
                f"- {scenario.label}: no error at {STALL_CONNECTIONS} connections: "
                f"{row.errors} errors, {row.non2xx} wrong status, {row.rps:.0f} req/s, "
                f"{mark(row.clean)}"
            )
    if low := app.get((HOT_PATH, CONNECTIONS[0])):
        lines.append(
            f"- {HOT_PATH}: p99 under {TARGET_HOT_P99_MS:.0f} ms at {CONNECTIONS[0]} "
            f"connections (issue #6): {low.p99_ms:.1f} ms, "
            f"{mark(low.clean and low.p99_ms < TARGET_HOT_P99_MS)}"
        )
    if reads := next((r for r in run.rows if r.scenario == FLOOD_READS_LABEL), None):
        lines.append(
            f"- reads during the login flood all 2xx: {reads.requests} requests, "
            f"{reads.non2xx} non-2xx, {reads.errors} errors, {mark(reads.clean)}"
        )
        lines.append(
            f"- their p99 under {FLOOD_READS_P99_MS:.0f} ms: {reads.p99_ms:.1f} ms, "
            f"{mark(reads.p99_ms < FLOOD_READS_P99_MS)}"
        )
    memory = run.memory
    lines.append(
        f"- resident memory flat (within {MEMORY_TOLERANCE:.0%}) from "
        f"{memory.first_requests} to {memory.second_requests} requests: "
        f"{memory.growth:+.1%}, {mark(abs(memory.growth) <= MEMORY_TOLERANCE)}"
    )
    met = sum(line.endswith(", met") for line in lines)
    lines.append(f"- {met} of {len(lines)} targets met")
    return lines


def report(run: Run, problems: list[str], quick: bool = False) -> str:
    memory, mib = run.memory, 1024
    noisy = [r for r in run.rows if r.cpu.others > NOISY]
    routes = [r for r in run.rows if not r.login and not r.flood]
    parts = [
        "# make bench" + (" --quick (a smoke test: the numbers mean nothing)" if quick else ""),
        "",
        f"One uvicorn worker (uvloop, httptools) on core {SERVER_CORE}, wrk on core "
        f"{WRK_CORE} (one thread; the session mix one per connection), PostgreSQL "
        f"unpinned. Database {DB_NAME}: {SEED_USERS} users x {SEED_TODOS} todos, seeded in "
        f"{run.seed_seconds:.1f} s ({run.seed_output}).",
        f"Each row at {' and '.join(map(str, CONNECTIONS))} connections: the best of "
        f"{TURNS} turns of {run_seconds(CONNECTIONS[0])} s, the ceiling's and the app's "
        f"alternating (a turn with a wrong status or an error is the one shown); at "
        f"{STALL_CONNECTIONS}: one run of {run_seconds(STALL_CONNECTIONS)} s; each "
        f"after a {WARMUP} s warm-up, wrk timeout {WRK_TIMEOUT} "
        "(a request unanswered that long counts as an error). 'req/s': right answers "
        "per second (the route's own status: 200, 201 or 204); any other status is "
        "counted under 'wrong status' and not as speed. 'vs its ceiling': req/s over "
        "bench/ceiling.py's route of the same shape, driven by the same script and data "
        "at the same connections (the targets use it); 'vs list ceiling': over the "
        "ceiling's GET /todos?limit=20 (as earlier tables gave it). CPU columns: cores' "
        "worth (100% = one core) of the worker, of PostgreSQL, and of anything else on the "
        "machine (not wrk): other CPU is noise. 'settle s': how long the worker went on "
        "with requests left queued when wrk stopped, until /readyz answered within "
        f"{SETTLED_ANSWER_SECONDS} s (at most {SETTLE_AFTER_RUN_SECONDS} s; each run "
        "starts on a settled worker).",
        "",
        table([r for r in routes if not r.ceiling] + [r for r in routes if r.ceiling]),
        "",
        *scenario_notes(routes),
        "",
        f"Logins, bcrypt-bound, apart ({LOGIN_DURATION} s each, no warm-up; errors here do "
        "not fail the bench):",
        "",
        table([r for r in run.rows if r.login and not r.flood], run.rows),
        "",
        f"Login flood (issue #14): {FLOOD_CONNECTIONS} connections of logins with random "
        f"usernames and wrong passwords (from one address, its failure budget raised to "
        f"{FLOOD_ADDRESS_BUDGET}, so every login is hashed as in a flood from many "
        f"addresses), and {FLOOD_READERS} connections of signed-in users reading "
        f"GET /users/me and GET /todos?limit=20 in turn, for {DURATION} s, starting "
        f"{FLOOD_LEAD_SECONDS} s into the flood. The flood's non-2xx (401, 503 server busy) "
        "are expected; the reads' fail the bench. CPU columns: during the reads.",
        "",
        table([r for r in run.rows if r.flood], run.rows),
        "",
        f"Worker RSS: {memory.start_kib / mib:.1f} MiB at start, "
        f"{memory.end_kib / mib:.1f} MiB at the end.",
        f"Memory check, GET /todos?limit=20 at {MEMORY_CONNECTIONS} connections, after "
        f"every scenario ran: {memory.first_kib / mib:.1f} MiB after "
        f"{memory.first_requests} requests, {memory.second_kib / mib:.1f} MiB after "
        f"{memory.second_requests} ({memory.growth:+.1%}; allowed +/-{MEMORY_TOLERANCE:.0%}).",
    ]
    if not memory.complete:
        parts.append(
            f"NOTE: the memory check stopped at {memory.second_requests - memory.first_requests}"
            f" of {MEMORY_SECOND - MEMORY_FIRST} "
            f"requests: the app is too slow to reach them within the time bound "
            f"({MEMORY_SECOND_MAX_SECONDS} s of top-up)."
        )
    unsettled = [r for r in run.rows if r.settle_s >= SETTLE_AFTER_RUN_SECONDS - 0.1]
    if unsettled:
        parts.append(
            f"NOTE: {len(unsettled)} runs left the worker busy for over "
            f"{SETTLE_AFTER_RUN_SECONDS} s; the row after each of them started on a backlog."
        )
    if run.idle_before > NOISY or noisy:
        parts.append(
            f"NOTE: other processes were busy (machine at {run.idle_before:.0%} of a core "
            f"before the start; other CPU over {NOISY:.0%} in {len(noisy)} rows): "
            "the numbers are noisy, run again on a quiet machine."
        )
    parts += [
        "",
        "Targets (issue #17; the hot path's p99 of issue #6, the login flood's of "
        "issue #14, memory):",
        "",
        *targets(run),
    ]
    parts += ["", "Result: " + ("FAIL: " + "; ".join(problems) if problems else "PASS")]
    return "\n".join(parts) + "\n"


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that every `finally` stops its server


def make_quick() -> None:
    """--quick: every step, in runs of a few seconds (a smoke test, not a measurement)."""
    global DURATION, WARMUP, LOGIN_DURATION, MEMORY_FIRST, MEMORY_SECOND
    global MEMORY_FIRST_MAX_SECONDS, MEMORY_SECOND_MAX_SECONDS
    DURATION, WARMUP, LOGIN_DURATION = QUICK_SECONDS, 1, QUICK_SECONDS
    MEMORY_FIRST, MEMORY_SECOND = 1_000, 5_000
    MEMORY_FIRST_MAX_SECONDS = MEMORY_SECOND_MAX_SECONDS = 10


def sign_in_cast(base: str, *, demo_only: bool = False) -> Cast:
    """Everyone the scenarios act as, signed in through the API (bcrypt: the slow part)."""
    demo = sign_in_all(base, [f"demo{k}" for k in range(1, DEMO_USERS + 1)], with_ids=True)
    if demo_only:
        return Cast(demo=demo, fodder=[], mix=[], admin=demo[0])
    first = DEMO_USERS + 1
    names = [f"demo{k}" for k in range(first, first + FODDER_USERS)]
    fodder = sign_in_all(base, names, with_ids=False)
    first += FODDER_USERS
    names = [f"demo{k}" for k in range(first, first + MIX_USERS)]
    mix = sign_in_all(base, names, with_ids=True)
    admin = sign_in(base, ADMIN_USER, with_ids=False)
    return Cast(demo=demo, fodder=fodder, mix=mix, admin=admin)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="also profile with py-spy")
    parser.add_argument(
        "--flood-only", action="store_true", help="only the login flood (no ceiling, no table)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: every step in {QUICK_SECONDS} s runs (results-quick.md)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only the scenarios whose label contains TEXT (repeatable; no memory check, "
        "no logins, no flood)",
    )
    args = parser.parse_args()
    if args.quick:
        make_quick()
    ONLY.extend(args.only)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    OUT.mkdir(parents=True, exist_ok=True)
    results = OUT / ("results-quick.md" if args.quick else "results.md")
    results.unlink(missing_ok=True)
    shutil.rmtree(OUT / "wrk", ignore_errors=True)  # only this run's wrk outputs
    run = Run()
    try:
        ensure_wrk()
        ensure_postgres()
        run.idle_before = idle_check()
        if run.idle_before > NOISY:
            log(f"warning: the machine is busy ({run.idle_before:.0%} of a core) before start")
        recreate_database()
        run_step([str(BIN / "alembic"), "upgrade", "head"], timeout=120, env=app_env())
        log(f"database {DB_NAME} recreated and migrated")
        run.seed_seconds, run.seed_output = seed()
        log(f"seed took {run.seed_seconds:.1f} s: {run.seed_output}")
        promote_admin()
        secret = secrets.token_urlsafe(48)  # 64 characters
        env = app_env(
            ENVIRONMENT="production",
            SECRET_KEY=secret,
            LOGIN_MAX_FAILURES_PER_ADDRESS=FLOOD_ADDRESS_BUDGET,
            ACCESS_TOKEN_EXPIRE_MINUTES=ACCESS_TOKEN_MINUTES,
        )
        # Signing in is bcrypt work: done once, on both cores, before anything is measured.
        started = time.monotonic()
        with serve("setup", "todoapp.main:app", env, [], cores=f"{SERVER_CORE},{WRK_CORE}") as s:
            cast = sign_in_cast(s.base, demo_only=args.flood_only)
        cast.write()
        log(
            f"signed in {len(cast.demo) + len(cast.fodder) + len(cast.mix) + 1} sessions in "
            f"{time.monotonic() - started:.1f} s; data in {OUT}/*.lua"
        )

        if args.flood_only:
            with serve("app", "todoapp.main:app", env, []) as s:
                print("\n" + table(bench_login_flood(s, cast.users_path)), flush=True)
            return 0
        # Both on core 0, one idle while the other is measured.
        ceiling_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (
            serve("ceiling", "ceiling:app", ceiling_env, ["--app-dir", str(BENCH)]) as top,
            serve("app", "todoapp.main:app", env, []) as s,
        ):
            rows = bench_app(s, top, cast, run.memory)
            run.rows = [r for r in rows if not r.ceiling] + [r for r in rows if r.ceiling]
            if args.profile:
                profile(s, cast.users_path)
    except (BenchError, subprocess.TimeoutExpired, OSError, psycopg2.Error) as exc:
        log(f"FAILED: {exc}")
        return 1
    problems = check(run, quick=args.quick)
    text = report(run, problems, quick=args.quick)
    results.write_text(text)
    print("\n" + text, flush=True)
    log(f"written to {results}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

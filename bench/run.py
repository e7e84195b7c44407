"""`make bench`: load scenarios against one production worker, and the table they print.

Bounded (about five minutes) and only ever aimed at 127.0.0.1:

1. installs wrk if it is missing;
2. recreates the PostgreSQL database todoapp_bench, migrates and seeds it (timed);
3. serves bench/ceiling.py, the framework-only ceiling, then the app, each as one
   uvicorn worker (uvloop, httptools) pinned to core 0, with wrk pinned to core 1;
4. runs each scenario for a fixed time after a warm-up, at 8 and 64 connections (and
   GET /todos at 256), plus a memory check, and prints one table (also written to
   build/bench/results.md; wrk's own output and the servers' logs are beside it);
5. last, the login flood of issue #14: 40 connections of logins with random usernames
   while 8 connections of signed-in users read GET /users/me and GET /todos.

Exits non-zero when the seed fails, a request of a non-login scenario errs (non-2xx
or socket error, timeouts included; the reads during the login flood included) or a
run gets no answer at all, or the worker's memory grows by more than 10% between the
~10,000th and the ~100,000th GET /todos.
Both memory readings come after a short burst at 64 and at 256 connections, so that
the check sees growth with the number of requests (a leak), not a burst's high-water
mark; when the app is too slow to reach 100,000 within the time bound, the report
says so and compares what it reached. Standard library only, plus psycopg2 from
requirements.txt. BENCH_SECONDS and BENCH_WARMUP_SECONDS (default 10 and 2) change
the length of each run.

`--profile` also samples the worker with py-spy (if installed) while GET /todos runs:
build/bench/profile-*.svg (flame graphs) and build/bench/profile-top.txt (top functions).
"""

import argparse
import json
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
SEED_USERS = 1000
SEED_TODOS = 50
DEMO_USERS = 50
DEMO_PASSWORD = "password123"
IDS_PER_USER = 10  # own todos per demo user that GET/PATCH /todos/{id} rotate through
SERVER_CORE = "0"
WRK_CORE = "1"
CONNECTIONS = (8, 64)
STALL_CONNECTIONS = 256
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
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
MEMORY_FIRST = 10_000
MEMORY_SECOND = 100_000
MEMORY_FIRST_MAX_SECONDS = 45
MEMORY_SECOND_MAX_SECONDS = 45
# Below the app's pool size: the check is about memory, not about many connections.
MEMORY_CONNECTIONS = 8
MEMORY_BURST_SECONDS = 2
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


def recreate_database() -> None:
    connection = psycopg2.connect(PG_ADMIN_DSN)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{DB_NAME}"')
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
def serve(name: str, target: str, env: dict[str, str], extra: list[str]) -> Iterator[Server]:
    """One uvicorn worker on core 0, ready at /readyz; always stopped on the way out."""
    port = free_port()
    cmd = ["taskset", "-c", SERVER_CORE, str(BIN / "uvicorn"), target, *extra]
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
        log(f"{name} serving at {base} (pid {process.pid}, core {SERVER_CORE}, log {log_path})")
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
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int
    cpu: CpuShare
    settle_s: float  # how long the worker went on with queued requests after wrk stopped
    login: bool = False
    ceiling: bool = False
    flood: bool = False  # the login flood's table: the flood itself, or the reads during it


def wrk_command(
    script: str,
    base: str,
    connections: int,
    seconds: int,
    *,
    data: Path | None = None,
    cap: int = 0,
    timeout: str = WRK_TIMEOUT,
) -> list[str]:
    cmd = ["taskset", "-c", WRK_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    cmd += ["--timeout", timeout, "--latency", "-s", str(BENCH / script), base + "/"]
    return [*cmd, "--", str(data) if data else "", str(cap)]


def wrk_numbers(label: str, returncode: int, stdout: str, stderr: str) -> dict[str, int]:
    """Keep wrk's output beside the results; the numbers bench/lib.lua's done() prints."""
    (OUT / "wrk").mkdir(exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    (OUT / "wrk" / f"{slug}.txt").write_text(stdout + stderr)
    found = re.search(r"^BENCH_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if returncode != 0 or not found:
        raise BenchError(f"wrk {label} failed ({returncode}): {stderr.strip()}")
    numbers: dict[str, int] = json.loads(found.group(1))
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
) -> dict[str, int]:
    """One wrk run on core 1; returns the numbers that bench/lib.lua's done() prints."""
    cmd = wrk_command(script, base, connections, seconds, data=data, cap=cap, timeout=timeout)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return wrk_numbers(label, result.returncode, result.stdout, result.stderr)


def result_row(
    label: str, connections: int, n: dict[str, int], cpu: "CpuShare", settle: float
) -> "Result":
    return Result(
        scenario=label,
        connections=connections,
        requests=n["requests"],
        rps=n["requests"] / (n["duration_us"] / 1e6),
        p50_ms=n["p50_us"] / 1000,
        p99_ms=n["p99_us"] / 1000,
        non2xx=n["non2xx"],
        errors=n["connect"] + n["read"] + n["write"] + n["timeout"],
        cpu=cpu,
        settle_s=settle,
    )


def log_row(row: "Result", server: "Server") -> None:
    cpu = row.cpu
    log(
        f"{row.scenario:<24} c={row.connections:<3} {row.rps:8.1f} req/s  "
        f"p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms  non-2xx {row.non2xx}  "
        f"errors {row.errors}  CPU worker {cpu.worker:.0%} pg {cpu.postgres:.0%} "
        f"others {cpu.others:.0%}  settle {row.settle_s:.1f} s  "
        f"RSS {rss_kib(server.pid) / 1024:.1f} MiB"
    )


def measure(
    server: Server,
    label: str,
    script: str,
    connections: int,
    *,
    data: Path | None = None,
    seconds: int = DURATION,
    warmup: int = WARMUP,
    timeout: str = WRK_TIMEOUT,
) -> tuple[Result, int]:
    """Warm up, then measure; returns the row and every response seen (warm-up included)."""
    name = f"{label}-c{connections}"
    seen = 0
    if warmup > 0:
        warm = wrk(
            f"{name}-warmup", script, server.base, connections, warmup, data=data, timeout=timeout
        )
        seen += warm["responses"]
        server.settle(SETTLE_AFTER_WARMUP_SECONDS)
    before = CpuSample.take(server.pid)
    n = wrk(name, script, server.base, connections, seconds, data=data, timeout=timeout)
    cpu = cpu_share(before, CpuSample.take(server.pid))
    settle = server.settle(SETTLE_AFTER_RUN_SECONDS)
    seen += n["responses"]
    row = result_row(label, connections, n, cpu, settle)
    log_row(row, server)
    return row, seen


# --- the app's scenarios -------------------------------------------------------------
def demo_users(base: str) -> list[dict[str, Any]]:
    """Tokens for demo1..demo50 and some ids of each one's own todos, via the API."""
    users: list[dict[str, Any]] = []
    for k in range(1, DEMO_USERS + 1):
        username = f"demo{k}"
        form = {"username": username, "password": DEMO_PASSWORD}
        status, body = http(base, "POST", "/auth/token", form=form)
        if status != 200:
            raise BenchError(f"login as {username} answered {status}")
        token = body["access_token"]
        status, page = http(base, "GET", f"/todos?limit={IDS_PER_USER}", token=token)
        if status != 200 or not page["items"]:
            raise BenchError(f"GET /todos as {username} answered {status} with no todos")
        ids = [item["id"] for item in page["items"]]
        users.append({"username": username, "token": token, "ids": ids})
    return users


def write_lua_data(users: list[dict[str, Any]]) -> Path:
    """build/bench/users.lua, which the wrk scripts load: tokens and own todo ids."""
    entries = [
        f"  {{username = {json.dumps(u['username'])}, token = {json.dumps(u['token'])}, "
        f"ids = {{{', '.join(str(i) for i in u['ids'])}}}}},"
        for u in users
    ]
    path = OUT / "users.lua"
    header = "-- written by bench/run.py for one run: demo users, tokens, own todo ids\n"
    path.write_text(header + "return {\n" + "\n".join(entries) + "\n}\n")
    return path


SCENARIOS = (
    ("GET /todos?limit=20", "todos_list.lua"),
    ("GET /todos/{id}", "todo_read.lua"),
    ("POST /todos", "todo_create.lua"),
    ("PATCH /todos/{id}", "todo_update.lua"),
    ("GET /users/me", "users_me.lua"),
)
LIST_LABEL, LIST_SCRIPT = SCENARIOS[0]


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
        return self.second_requests >= MEMORY_SECOND * 0.95


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


def bench_app(server: Server, data: Path, memory: Memory) -> list[Result]:
    rows: list[Result] = []
    memory.start_kib = rss_kib(server.pid)
    # A first burst at each high connection count lifts RSS to its high-water mark
    # (buffers and objects of that many requests in flight) before the first reading,
    # so that the check sees growth with the number of requests, a leak, only.
    listed = 0
    for connections in (CONNECTIONS[-1], STALL_CONNECTIONS):
        listed = list_until(server, data, listed, MEMORY_FIRST, MEMORY_BURST_SECONDS, connections)
    listed = list_until(server, data, listed, MEMORY_FIRST, MEMORY_FIRST_MAX_SECONDS)
    memory.first_kib, memory.first_requests = rss_kib(server.pid), listed
    log(f"worker RSS after {listed} GET /todos: {memory.first_kib / 1024:.1f} MiB")
    for label, script in SCENARIOS:
        for connections in CONNECTIONS:
            row, seen = measure(server, label, script, connections, data=data)
            rows.append(row)
            listed += seen if script == LIST_SCRIPT else 0
    row, seen = measure(server, LIST_LABEL, LIST_SCRIPT, STALL_CONNECTIONS, data=data)
    rows.append(row)
    listed += seen
    listed = list_until(server, data, listed, MEMORY_SECOND, MEMORY_SECOND_MAX_SECONDS)
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


def bench_ceiling(server: Server) -> list[Result]:
    rows = []
    for connections in (*CONNECTIONS, STALL_CONNECTIONS):
        row, _ = measure(server, "ceiling (no DB, no auth)", "ceiling.lua", connections)
        row.ceiling = True
        rows.append(row)
    return rows


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
def table(rows: list[Result]) -> str:
    ceiling = {row.connections: row.rps for row in rows if row.ceiling}
    lines = [
        "| scenario | connections | req/s | p50 ms | p99 ms | non-2xx | errors | vs ceiling "
        "| worker CPU | PostgreSQL CPU | other CPU | settle s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        top = ceiling.get(row.connections)
        ratio = f"{row.rps / top:.2f}" if top else "-"
        lines.append(
            f"| {row.scenario} | {row.connections} "
            f"| {row.rps:.1f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.non2xx} "
            f"| {row.errors} | {ratio} | {row.cpu.worker:.0%} | {row.cpu.postgres:.0%} "
            f"| {row.cpu.others:.0%} | {row.settle_s:.1f} |"
        )
    return "\n".join(lines)


@dataclass
class Run:
    seed_seconds: float = 0.0
    seed_output: str = ""
    idle_before: float = 0.0
    rows: list[Result] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)


def check(run: Run) -> list[str]:
    """What makes `make bench` fail: errors or silence in the app's non-login rows, memory.

    The ceiling's rows are a reference, not the app: shown, never a failure.
    """
    scenarios = [row for row in run.rows if not row.login and not row.ceiling]
    problems = [
        f"{row.scenario} at c={row.connections}: {row.non2xx} non-2xx, {row.errors} errors"
        for row in scenarios
        if row.non2xx or row.errors
    ]
    problems += [
        f"{row.scenario} at c={row.connections}: no response at all in {DURATION} s"
        for row in scenarios
        if row.requests == 0
    ]
    if abs(run.memory.growth) > MEMORY_TOLERANCE:
        problems.append(
            f"worker RSS moved {run.memory.growth:+.1%} between {run.memory.first_requests} "
            f"and {run.memory.second_requests} GET /todos requests"
        )
    return problems


HOT_PATH = "GET /todos?limit=20"
TARGET_RATIO = 0.50
TARGET_P99_MS = 20.0


def targets(run: Run) -> list[str]:
    """The hot path's targets (issue #6), each with what this run measured.

    Printed, not enforced: a ratio on a noisy machine is a reading, not a verdict.
    """
    ceiling = {r.connections: r.rps for r in run.rows if r.ceiling}
    hot = {r.connections: r for r in run.rows if r.scenario == HOT_PATH}

    def mark(met: bool) -> str:
        return "met" if met else "NOT MET"

    lines = []
    for connections in CONNECTIONS:
        row, top = hot.get(connections), ceiling.get(connections)
        if row and top:
            ratio = row.rps / top
            lines.append(
                f"- {HOT_PATH} at {connections} connections >= {TARGET_RATIO:.0%} of the "
                f"ceiling: {row.rps:.0f} / {top:.0f} = {ratio:.2f}, {mark(ratio >= TARGET_RATIO)}"
            )
    if low := hot.get(CONNECTIONS[0]):
        lines.append(
            f"- p99 under {TARGET_P99_MS:.0f} ms at {CONNECTIONS[0]} connections: "
            f"{low.p99_ms:.1f} ms, {mark(low.p99_ms < TARGET_P99_MS)}"
        )
    if many := hot.get(STALL_CONNECTIONS):
        clean = not (many.errors or many.non2xx) and many.requests > 0
        lines.append(
            f"- no error and no stall at {STALL_CONNECTIONS} connections: {many.errors} "
            f"errors, {many.non2xx} non-2xx, {many.rps:.0f} req/s, {mark(clean)}"
        )
    if reads := next((r for r in run.rows if r.scenario == FLOOD_READS_LABEL), None):
        clean = not (reads.errors or reads.non2xx) and reads.requests > 0
        lines.append(
            f"- reads during the login flood all 2xx: {reads.requests} requests, "
            f"{reads.non2xx} non-2xx, {reads.errors} errors, {mark(clean)}"
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
    return lines


def report(run: Run, problems: list[str]) -> str:
    memory, mib = run.memory, 1024
    noisy = [r for r in run.rows if r.cpu.others > NOISY]
    parts = [
        "# make bench",
        "",
        f"One uvicorn worker (uvloop, httptools) on core {SERVER_CORE}, wrk -t1 on core "
        f"{WRK_CORE}, PostgreSQL unpinned. Database {DB_NAME}: {SEED_USERS} users x "
        f"{SEED_TODOS} todos, seeded in {run.seed_seconds:.1f} s ({run.seed_output}).",
        f"Each row: {DURATION} s after a {WARMUP} s warm-up, wrk timeout {WRK_TIMEOUT} "
        "(a request unanswered that long counts as an error). 'vs ceiling': req/s over "
        "bench/ceiling.py's at the same connections. CPU columns: cores' worth (100% = "
        "one core) of the worker, of PostgreSQL, and of anything else on the machine "
        "(not wrk): other CPU is noise. 'settle s': how long the worker went on with "
        "requests left queued when wrk stopped, until /readyz answered within "
        f"{SETTLED_ANSWER_SECONDS} s (at most {SETTLE_AFTER_RUN_SECONDS} s; each run "
        "starts on a settled worker).",
        "",
        table([r for r in run.rows if not r.login and not r.flood]),
        "",
        f"Logins, bcrypt-bound, apart ({LOGIN_DURATION} s each, no warm-up; errors here do "
        "not fail the bench):",
        "",
        table([r for r in run.rows if r.login and not r.flood]),
        "",
        f"Login flood (issue #14): {FLOOD_CONNECTIONS} connections of logins with random "
        f"usernames and wrong passwords (from one address, its failure budget raised to "
        f"{FLOOD_ADDRESS_BUDGET}, so every login is hashed as in a flood from many "
        f"addresses), and {FLOOD_READERS} connections of signed-in users reading "
        f"GET /users/me and GET /todos?limit=20 in turn, for {DURATION} s, starting "
        f"{FLOOD_LEAD_SECONDS} s into the flood. The flood's non-2xx (401, 503 server busy) "
        "are expected; the reads' fail the bench. CPU columns: during the reads.",
        "",
        table([r for r in run.rows if r.flood]),
        "",
        f"Worker RSS: {memory.start_kib / mib:.1f} MiB at start, "
        f"{memory.end_kib / mib:.1f} MiB at the end.",
        f"Memory check, GET /todos?limit=20 (after a {MEMORY_BURST_SECONDS} s burst at "
        f"{CONNECTIONS[-1]} and at {STALL_CONNECTIONS} connections, then at "
        f"{MEMORY_CONNECTIONS}): {memory.first_kib / mib:.1f} MiB after "
        f"{memory.first_requests} requests, {memory.second_kib / mib:.1f} MiB after "
        f"{memory.second_requests} ({memory.growth:+.1%}; allowed +/-{MEMORY_TOLERANCE:.0%}).",
    ]
    if not memory.complete:
        parts.append(
            f"NOTE: the memory check stopped at {memory.second_requests} of {MEMORY_SECOND} "
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
    parts += ["", "Targets for the hot path and the login flood:", "", *targets(run)]
    parts += ["", "Result: " + ("FAIL: " + "; ".join(problems) if problems else "PASS")]
    return "\n".join(parts) + "\n"


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that every `finally` stops its server


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="also profile with py-spy")
    parser.add_argument(
        "--flood-only", action="store_true", help="only the login flood (no ceiling, no table)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").unlink(missing_ok=True)
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

        ceiling: list[Result] = []
        if not args.flood_only:
            with serve(
                "ceiling",
                "ceiling:app",
                {**os.environ, "PYTHONPATH": str(ROOT)},
                ["--app-dir", str(BENCH)],
            ) as s:
                ceiling = bench_ceiling(s)
        secret = secrets.token_urlsafe(48)  # 64 characters
        env = app_env(
            ENVIRONMENT="production",
            SECRET_KEY=secret,
            LOGIN_MAX_FAILURES_PER_ADDRESS=FLOOD_ADDRESS_BUDGET,
        )
        with serve("app", "todoapp.main:app", env, []) as s:
            data = write_lua_data(demo_users(s.base))
            log(f"tokens and todo ids of {DEMO_USERS} demo users in {data}")
            if args.flood_only:
                print("\n" + table(bench_login_flood(s, data)), flush=True)
                return 0
            run.rows = bench_app(s, data, run.memory) + ceiling
            if args.profile:
                profile(s, data)
    except (BenchError, subprocess.TimeoutExpired, OSError, psycopg2.Error) as exc:
        log(f"FAILED: {exc}")
        return 1
    problems = check(run)
    text = report(run, problems)
    (OUT / "results.md").write_text(text)
    print("\n" + text, flush=True)
    log(f"written to {OUT / 'results.md'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

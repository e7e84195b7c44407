"""`make soak`: the cluster of `make cluster` under load through a database restart, a
Redis restart and a rolling restart of both app hosts, then every acknowledged write
checked against the database.

Bounded (about two minutes) and only ever aimed at 127.0.0.1; not part of `make test`.

1. A PostgreSQL cluster of its own (`soak`, port 5433, trust for local connections),
   created on first use and reused after, and a private Redis on port 6380, so both
   can be restarted without touching the shared servers on 5432 and 6379.
2. The database todoapp_soak is recreated, migrated and seeded with demo1..demo200.
3. deploy/'s shape serves it (deploy/cluster.py): PgBouncer in transaction mode in front
   of PostgreSQL, two app hosts (uvicorn, 2 workers each, uvloop, httptools, the drain,
   a 20 s graceful shutdown, ENVIRONMENT=production, one random SECRET_KEY,
   DB_POOLER=transaction, DB_POOL_TIMEOUT=3), and HAProxy in front of both.
4. soak/clients.py runs 50 clients for 60 s through HAProxy, each with four users and a
   ledger; meanwhile this process polls /readyz on both hosts and HAProxy's view of
   them, and at t=12 s stops the database for about 5 s; at t=26 s restarts Redis; from
   t=32 s restarts host A (SIGTERM, its drain, exit, start, back in HAProxy), then B.
5. soak/report.py judges it all; the report is printed and written to
   build/soak/report.md (the hosts' logs, the ledgers and every request are beside it).

Exits 0 when nothing was violated, 1 on any violation, 2 when the soak could not run.
Every process it started is stopped in the end, and so is the soak cluster (which stays
created for the next run).
"""

# Running the project's tools and the system's is this harness's job; no argument
# comes from outside.
# ruff: noqa: S603

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import psycopg2
import redis

from deploy.cluster import (
    GRACEFUL_SECONDS,
    AppHost,
    ClusterError,
    HAProxy,
    PgBouncer,
    app_environment,
)
from soak.clients import check_ledger
from soak.report import Judge, ServerFacts, SoakFacts

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "soak"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # the only address this harness ever sends traffic to
CLUSTER = "soak"
PG_PORT = 5433
REDIS_PORT = 6380
DB_NAME = "todoapp_soak"
DATABASE_URL = f"postgresql://postgres@{HOST}:{PG_PORT}/{DB_NAME}"
ADMIN_DSN = f"host={HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=5"
SOAK_DSN = f"host={HOST} port={PG_PORT} user=postgres dbname={DB_NAME} connect_timeout=5"
USERS = 200
TODOS_PER_USER = 5
CLIENTS = 50
USERS_PER_CLIENT = 4
PROBERS = 4  # clients that also log in again every second
DURATION = float(os.environ.get("SOAK_SECONDS", "60"))
# The events, as fractions of the run: the database at t=3 s of 60, then the rolling
# restart from t=13 s, once both hosts are back from the outage (a host takes 10-25 s
# from SIGTERM back to rotation on two busy cores: 5 s of drain, its exit, two workers
# starting), with Redis restarted at t=20 s while host A is away.
DB_STOP_AT = DURATION * 3 / 60
DB_DOWN_SECONDS = 5.0
ROLLING_RESTART_AT = DURATION * 13 / 60
REDIS_RESTART_AT = DURATION * 20 / 60
REDIS_DOWN_SECONDS = 3.0
DB_POOL_TIMEOUT = "3"
GRACEFUL_SHUTDOWN = GRACEFUL_SECONDS
WORKERS_PER_HOST = 2
BACK_IN_ROTATION_TIMEOUT = 30.0
# bcrypt cost of the seeded hashes and of the servers: the soak is about durability and
# failures, not hashing; 200 logins at cost 12 would take half a minute of both cores.
BCRYPT_ROUNDS = os.environ.get("SOAK_BCRYPT_ROUNDS", "4")
POLL_EVERY = 0.25
READY_TIMEOUT = 30.0
LOAD_START_TIMEOUT = 150.0
LOAD_END_GRACE = 90.0
PG_HBA = """\
# Written by soak/run.py: a throwaway cluster for `make soak`, reachable from this
# machine only, without passwords.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
"""

# conf.d/soak.conf: listen on the loopback address only.
SOAK_CONF = f"""\
# Written by soak/run.py.
listen_addresses = '{HOST}'
"""

_started = time.monotonic()


def log(message: str) -> None:
    print(f"[soak {time.monotonic() - _started:6.1f}s] {message}", flush=True)


class SoakError(Exception):
    """A step that makes the rest of the run pointless; the message is one line."""


def privileged(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def run_step(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        raise SoakError(f"{' '.join(cmd[:5])} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SoakError(f"{' '.join(cmd[:5])} failed ({result.returncode}): {' | '.join(tail)}")
    return result.stdout


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def machine_busy_seconds() -> float:
    """Time all cores together spent on anything but idling, since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def sleep_until(when: float) -> None:
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 0.5))


# --- processes ------------------------------------------------------------------------
class Processes:
    """Every process the soak starts, so that each one is stopped in the end."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []

    def spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> "subprocess.Popen[bytes]":
        sink = log_path.open("ab")
        self.logs.append(sink)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            stderr=sink,
            start_new_session=True,  # a Ctrl-C reaches this process only, which stops them
        )
        self.started.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: "subprocess.Popen[bytes]", grace: float) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
                self.stop(proc, GRACEFUL_SHUTDOWN + 5 if name.startswith("server") else 5)
        for sink in self.logs:
            sink.close()


# --- PostgreSQL: the soak's own cluster ---------------------------------------------------
class Cluster:
    def __init__(self) -> None:
        base = Path("/etc/postgresql")
        versions = [d.name for d in base.iterdir() if d.name[:1].isdigit()] if base.is_dir() else []
        if not versions:
            raise SoakError("PostgreSQL is not installed (no /etc/postgresql/<version>)")
        self.version = max(versions, key=lambda v: [int(part) for part in v.split(".")])
        self.conf_dir = base / self.version / CLUSTER
        self.log_file = Path(f"/var/log/postgresql/postgresql-{self.version}-{CLUSTER}.log")

    def ctl(self, action: str, *, timeout: float = 90) -> None:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, CLUSTER, action]
        if action in {"stop", "restart"}:
            cmd[1:1] = ["--mode", "fast"]
        run_step(privileged(cmd), timeout=timeout)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        if path.is_file() and path.read_text() == text:
            return
        if os.geteuid() == 0:
            path.write_text(text)
        else:
            cmd = ["sudo", "-n", "tee", str(path)]
            subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=30, check=True)

    def running(self) -> bool:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, CLUSTER, "status"]
        return subprocess.run(privileged(cmd), capture_output=True, timeout=30).returncode == 0

    def ensure_started(self) -> None:
        if not self.conf_dir.is_dir():
            if port_taken(PG_PORT):
                raise SoakError(f"port {PG_PORT} is taken: cannot create the soak cluster there")
            log(f"creating PostgreSQL {self.version} cluster '{CLUSTER}' on port {PG_PORT}")
            run_step(
                privileged(
                    [
                        "pg_createcluster",
                        self.version,
                        CLUSTER,
                        "--port",
                        str(PG_PORT),
                        "--start-conf",
                        "manual",
                    ]
                ),
                timeout=180,
            )
        conf = (self.conf_dir / "postgresql.conf").read_text()
        if f"port = {PG_PORT}" not in conf:
            raise SoakError(f"cluster {self.version}/{CLUSTER} exists but not on port {PG_PORT}")
        self._write(self.conf_dir / "pg_hba.conf", PG_HBA)
        self._write(self.conf_dir / "conf.d" / "soak.conf", SOAK_CONF)
        if self.running():
            log(f"cluster {self.version}/{CLUSTER} already running: reloading its settings")
            self.ctl("reload")
        else:
            if port_taken(PG_PORT):
                raise SoakError(f"port {PG_PORT} is taken by something else than the soak cluster")
            log(f"starting cluster {self.version}/{CLUSTER}")
            self.ctl("start")
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline:
                raise SoakError(f"the soak cluster does not answer on {HOST}:{PG_PORT}")
            time.sleep(0.5)

    @staticmethod
    def answers() -> bool:
        try:
            psycopg2.connect(ADMIN_DSN).close()
        except psycopg2.OperationalError:
            return False
        return True

    def stop_if_running(self) -> None:
        if self.conf_dir.is_dir() and self.running():
            log(f"stopping cluster {self.version}/{CLUSTER} (it stays created for the next run)")
            self.ctl("stop")


def recreate_database() -> None:
    connection = psycopg2.connect(ADMIN_DSN)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS todoapp_soak WITH (FORCE)")
            cursor.execute("CREATE DATABASE todoapp_soak")
    finally:
        connection.close()


def app_env(**settings: str) -> dict[str, str]:
    return app_environment(
        {"DATABASE_URL": DATABASE_URL, "BCRYPT_ROUNDS": BCRYPT_ROUNDS, **settings}
    )


# --- Redis: the soak's own --------------------------------------------------------------
def start_redis(processes: Processes) -> "subprocess.Popen[bytes]":
    if port_taken(REDIS_PORT):
        raise SoakError(f"port {REDIS_PORT} is taken: the soak's Redis cannot listen there")
    cmd = ["redis-server", "--port", str(REDIS_PORT), "--bind", HOST, "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(OUT)]
    proc = processes.spawn("redis", cmd, log_path=OUT / "redis.log")
    client = redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SoakError(
                    f"the soak's Redis did not start (see {OUT / 'redis.log'})"
                ) from None
            time.sleep(0.1)
        else:
            client.close()
            return proc


# --- the app hosts ------------------------------------------------------------------------
class Host:
    """An app host of the cluster (deploy.cluster.AppHost) and what is noted about it."""

    def __init__(self, app: AppHost) -> None:
        self.app = app
        self.facts = ServerFacts(name=app.name, port=app.port, pid=0, log=app.log_path)

    @property
    def url(self) -> str:
        return self.app.url

    def start(self) -> None:
        self.app.start()
        assert self.app.proc is not None
        self.facts.pids.append(self.app.proc.pid)
        self.facts.pid = self.facts.pid or self.app.proc.pid

    def restart(self, proxy: HAProxy, events: dict[str, float]) -> None:
        """SIGTERM, wait for its exit (after its drain), start it, wait until HAProxy has
        it back in rotation."""
        name = self.facts.name
        self.sample_cpu()
        self.facts.sigterm_at = events[f"restart_{name}_sigterm"] = time.time()
        self.app.terminate()
        self.facts.returncode = self.app.wait_exit(GRACEFUL_SHUTDOWN + 10)
        self.facts.exited_at = events[f"restart_{name}_exited"] = time.time()
        self.start()
        self.app.wait_ready()
        self.facts.ready_again_at = events[f"restart_{name}_ready"] = time.time()
        proxy.wait_state(name.lower(), "UP", BACK_IN_ROTATION_TIMEOUT)
        self.facts.up_again_at = events[f"restart_{name}_in_rotation"] = time.time()

    def sample_cpu(self) -> None:
        """CPU seconds of the host's processes (supervisor and workers) so far."""
        proc = self.app.proc
        if proc is None:
            return
        total = 0.0
        for pid in [proc.pid, *_children(proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        self.facts.cpu_by_pid[proc.pid] = total
        self.facts.cpu_seconds = sum(self.facts.cpu_by_pid.values())

    def final_stop(self) -> None:
        self.sample_cpu()
        self.facts.final_stop_at = time.time()
        self.app.terminate()
        self.facts.final_returncode = self.app.wait_exit(GRACEFUL_SHUTDOWN + 10)
        self.facts.final_exited_at = time.time()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def poll_ready(host: Host, polls: list[list[Any]], stop: threading.Event) -> None:
    """GET /readyz every POLL_EVERY seconds until told to stop (through restarts)."""
    with httpx.Client(timeout=20.0, trust_env=False) as client:
        while not stop.is_set():
            started = time.time()
            status: int | None = None
            error: str | None = None
            try:
                status = client.get(f"{host.url}/readyz").status_code
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            polls.append([started, time.time(), host.facts.name, status, error])
            host.sample_cpu()
            stop.wait(POLL_EVERY)


def poll_balancer(proxy: HAProxy, polls: list[list[Any]], stop: threading.Event) -> None:
    """HAProxy's view of the hosts every POLL_EVERY seconds: [time, {"A": "UP", ...}]."""
    while not stop.is_set():
        try:
            states = {name.upper(): state for name, state in proxy.server_states().items()}
        except Exception as exc:
            states = {"error": type(exc).__name__}
        polls.append([time.time(), states])
        stop.wait(POLL_EVERY)


# --- the database at the end --------------------------------------------------------------
SOAK_ROWS = """
SELECT t.id, u.username, t.title, t.description, t.priority, t.complete
FROM todos t JOIN users u ON u.id = t.owner_id
WHERE t.title LIKE 'soak %'
"""
SEEDED_INTACT = """
SELECT count(*) FROM todos t JOIN users u ON u.id = t.owner_id
WHERE u.username ~ '^demo[0-9]+$' AND t.title ~ '^Demo todo [0-9]+$'
  AND t.description = 'Something to do, number ' || substr(t.title, 11)
  AND t.priority = substr(t.title, 11)::int % 5 + 1
  AND t.complete = (substr(t.title, 11)::int % 3 = 0)
"""
FOREIGN = "SELECT count(*) FROM todos WHERE title NOT LIKE 'soak %' AND title !~ '^Demo todo '"


def read_database() -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    connection = psycopg2.connect(SOAK_DSN)
    try:
        with connection.cursor() as cursor:
            cursor.execute(SOAK_ROWS)
            rows = cursor.fetchall()
            facts: dict[str, Any] = {
                "users_expected": USERS,
                "seeded_expected": USERS * TODOS_PER_USER,
            }
            for name, query in (
                ("users", "SELECT count(*) FROM users"),
                ("seeded_intact", SEEDED_INTACT),
                ("foreign", FOREIGN),
            ):
                cursor.execute(query)
                facts[name] = cursor.fetchone()[0]  # type: ignore[index]
        return rows, facts
    finally:
        connection.close()


# --- the run ------------------------------------------------------------------------------
class Load:
    """The load process (soak/clients.py) and the lines it prints: START."""

    def __init__(self, processes: Processes, port: int) -> None:
        config = {
            "ports": [port],
            "clients": CLIENTS,
            "users_per_client": USERS_PER_CLIENT,
            "duration": DURATION,
            "probers": PROBERS,
            "seed": secrets.randbelow(10**6),
        }
        config_path = OUT / "load-config.json"
        config_path.write_text(json.dumps(config))
        self.result_path = OUT / "load.json"
        self.result_path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "soak.clients", str(config_path), str(self.result_path)]
        self.proc = processes.spawn("load", cmd, log_path=OUT / "load.log", stdout_pipe=True)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, name="load-stdout", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, word: bytes, timeout: float) -> float | None:
        """The time printed with the next line starting with `word`, or None in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None:
                    return None
                continue
            if line.startswith(word + b" "):
                return float(line.split()[1])
        return None


def soak(
    processes: Processes,
    cluster: Cluster,
    events: dict[str, float],
    stack: list[Callable[[], None]],
) -> SoakFacts:
    """The run; `stack` gets what stops each part of the cluster, in the order started."""
    cluster.ensure_started()
    redis_proc = start_redis(processes)
    log(f"recreating {DB_NAME}, migrating, seeding {USERS} users")
    recreate_database()
    run_step([str(BIN / "alembic"), "upgrade", "head"], timeout=120, env=app_env())
    seed_cmd = [str(BIN / "python"), "-m", "todoapp", "seed", "--users", str(USERS)]
    seed_cmd += ["--todos", str(TODOS_PER_USER)]
    seeded = run_step(seed_cmd, timeout=120, env=app_env()).strip()
    log(seeded)

    password = secrets.token_urlsafe(24)
    bouncer = PgBouncer(
        {DB_NAME: f"host={HOST} port={PG_PORT} dbname={DB_NAME}"}, {"postgres": password}
    )
    stack.append(bouncer.stop)
    bouncer.start()
    log(f"pgbouncer (transaction mode) on {HOST}:{bouncer.port}")
    settings = {
        "DATABASE_URL": f"postgresql://postgres:{password}@{HOST}:{bouncer.port}/{DB_NAME}",
        "DB_POOLER": "transaction",
        "BCRYPT_ROUNDS": BCRYPT_ROUNDS,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),  # 48 random bytes, one for both hosts
        "REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
        "DB_POOL_TIMEOUT": DB_POOL_TIMEOUT,
        "METRICS_ENABLED": "true",
        "LOG_LEVEL": "INFO",
    }
    hosts = []
    for name in ("A", "B"):
        log_path = OUT / f"server-{name}.log"
        log_path.unlink(missing_ok=True)
        host = Host(AppHost(name, settings, log_path, workers=WORKERS_PER_HOST))
        stack.append(host.app.stop)
        host.start()
        hosts.append(host)
    for host in hosts:
        host.app.wait_ready()
    proxy = HAProxy([h.app.port for h in hosts], OUT / "haproxy.log")
    (OUT / "haproxy.log").unlink(missing_ok=True)
    stack.append(proxy.stop)
    proxy.start()
    for host in hosts:
        proxy.wait_state(host.facts.name.lower(), "UP", BACK_IN_ROTATION_TIMEOUT)
    log(
        f"haproxy on {proxy.url} in front of "
        + ", ".join(f"{h.facts.name} on {h.url}" for h in hosts)
    )

    polls: list[list[Any]] = []
    balancer_polls: list[list[Any]] = []
    stop_polling = threading.Event()
    pollers = [
        threading.Thread(target=poll_ready, args=(h, polls, stop_polling), daemon=True)
        for h in hosts
    ]
    pollers.append(
        threading.Thread(
            target=poll_balancer, args=(proxy, balancer_polls, stop_polling), daemon=True
        )
    )
    for poller in pollers:
        poller.start()
    load = Load(processes, proxy.port)
    t0_or_none = load.wait_for(b"START", LOAD_START_TIMEOUT)
    if t0_or_none is None:
        raise SoakError(f"the clients did not log in within {LOAD_START_TIMEOUT:.0f} s")
    t0 = t0_or_none
    busy_before = machine_busy_seconds()
    log(f"{CLIENTS} clients logged in; running for {DURATION:.0f} s")

    sleep_until(t0 + DB_STOP_AT)
    log("stopping the database")
    events["db_stop_begin"] = time.time()
    cluster.ctl("stop")
    events["db_stop_done"] = time.time()
    sleep_until(events["db_stop_done"] + DB_DOWN_SECONDS)
    log("starting the database")
    events["db_start_begin"] = time.time()
    cluster.ctl("start")
    events["db_start_done"] = time.time()

    redis_failure: list[str] = []

    def restart_redis() -> None:  # beside the rolling restart, which takes its time
        sleep_until(t0 + REDIS_RESTART_AT)
        log("restarting Redis")
        events["redis_stop_begin"] = time.time()
        Processes.stop(redis_proc, 10)
        events["redis_stopped"] = time.time()
        time.sleep(REDIS_DOWN_SECONDS)
        events["redis_start_begin"] = time.time()
        try:
            start_redis(processes)
        except SoakError as exc:
            redis_failure.append(str(exc))
        events["redis_up"] = time.time()

    redis_restart = threading.Thread(target=restart_redis, name="redis-restart", daemon=True)
    redis_restart.start()

    sleep_until(t0 + ROLLING_RESTART_AT)
    # Not before both hosts are back from the database outage: a host that drains before
    # it has answered /readyz 200 again would blur the outage's end.
    for host in hosts:
        try:
            host.app.wait_ready(BACK_IN_ROTATION_TIMEOUT)
            proxy.wait_state(host.facts.name.lower(), "UP", BACK_IN_ROTATION_TIMEOUT)
        except ClusterError as exc:
            raise SoakError(f"after the database restart: {exc}") from None
    for host in hosts:
        log(f"rolling restart: host {host.facts.name} (SIGTERM, drain, exit, start)")
        try:
            host.restart(proxy, events)
        except ClusterError as exc:
            raise SoakError(f"rolling restart of {host.facts.name}: {exc}") from None
        log(
            f"host {host.facts.name} back in rotation after "
            f"{(host.facts.up_again_at or 0) - (host.facts.sigterm_at or 0):.1f} s "
            f"(exit code {host.facts.returncode})"
        )

    redis_restart.join(30)
    if redis_failure:
        raise SoakError(redis_failure[0])
    try:
        load.proc.wait(max(1.0, t0 + DURATION + LOAD_END_GRACE - time.time()))
    except subprocess.TimeoutExpired:
        raise SoakError("the load did not stop by itself") from None
    events["load_end"] = time.time()
    busy = machine_busy_seconds() - busy_before
    stop_polling.set()
    for poller in pollers:
        poller.join(25)
    log("load done; stopping the hosts")
    for host in hosts:
        host.final_stop()

    if load.proc.returncode != 0:
        raise SoakError(f"the load exited with {load.proc.returncode} (see {OUT / 'load.log'})")
    result = json.loads(load.result_path.read_text())
    events["load_end"] = result["ended"]
    log("comparing the ledgers with the database")
    rows, database = read_database()
    ledger = check_ledger(result["entries"], rows)
    (OUT / "readyz.json").write_text(json.dumps(polls))
    (OUT / "haproxy-states.json").write_text(json.dumps(balancer_polls))
    (OUT / "events.json").write_text(json.dumps(events))
    return SoakFacts(
        t0=result["t0"],
        duration=DURATION,
        events=events,
        servers=[h.facts for h in hosts],
        polls=polls,
        load=result,
        ledger=ledger,
        database=database,
        balancer_polls=balancer_polls,
        settings={
            "database": f"PostgreSQL {cluster.version} cluster '{CLUSTER}' on {HOST}:{PG_PORT}, "
            f"database {DB_NAME} ({seeded}), behind PgBouncer (deploy/pgbouncer.ini, "
            f"transaction mode) on {HOST}:{bouncer.port}",
            "redis": f"private redis-server on {HOST}:{REDIS_PORT}, no persistence",
            "balancer": f"HAProxy (deploy/haproxy.cfg) on {proxy.url}, health check GET "
            "/readyz every second",
            "hosts": ", ".join(f"{h.facts.name} on port {h.facts.port}" for h in hosts)
            + f"; each uvicorn --workers {WORKERS_PER_HOST} --loop uvloop --http httptools "
            f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN} --proxy-headers, "
            f"ENVIRONMENT=production, one random 48-byte SECRET_KEY, DB_POOLER=transaction, "
            f"DB_POOL_TIMEOUT={DB_POOL_TIMEOUT}, BCRYPT_ROUNDS={BCRYPT_ROUNDS}, DRAIN_SECONDS 5",
            "load": f"{CLIENTS} clients x {USERS_PER_CLIENT} users for {DURATION:.0f} s, all "
            f"through HAProxy; {PROBERS} clients also log in every second",
            "cpu": f"machine busy {busy / (events['load_end'] - t0):.2f} of {os.cpu_count()} "
            f"cores during the load; CPU seconds: load {result['cpu_seconds']:.1f}, "
            + ", ".join(f"host {h.facts.name} {h.facts.cpu_seconds:.1f}" for h in hosts),
            "files": f"{OUT.relative_to(ROOT)}/: report.md, server-*.log, haproxy.log, "
            "load.json (every request and ledger), readyz.json, haproxy-states.json, "
            f"events.json, redis.log; PostgreSQL's log: {cluster.log_file}",
        },
    )


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    OUT.mkdir(parents=True, exist_ok=True)
    report_path = OUT / "report.md"
    report_path.unlink(missing_ok=True)
    processes = Processes()
    events: dict[str, float] = {}
    stack: list[Callable[[], None]] = []  # the cluster's parts, stopped last first
    teardown: list[Callable[[], None]] = [lambda: [step() for step in reversed(stack)]]
    teardown.append(processes.stop_all)
    try:
        cluster = Cluster()
        teardown.append(cluster.stop_if_running)
        facts = soak(processes, cluster, events, stack)
        judge = Judge(facts)
        report = judge.verdict()
        code = 1 if judge.violations else 0
    except SoakError as exc:
        report = f"# Soak report\n\n**ABORTED**: {exc}\n"
        code = 2
    except Exception as exc:  # a defect of the harness: still stop everything, and say so
        traceback.print_exc()
        report = f"# Soak report\n\n**ABORTED** by a harness error: {type(exc).__name__}: {exc}\n"
        code = 2
    finally:
        for step in teardown:
            try:
                step()
            except (SoakError, ClusterError, OSError, subprocess.SubprocessError) as exc:
                log(f"teardown: {exc}")
    report_path.write_text(report)
    print()
    print(report)
    log(f"report written to {report_path.relative_to(ROOT)}; exit {code}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

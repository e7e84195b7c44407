"""`make cluster`: the production shape on this machine, with deploy/'s own config files.

    HAProxy (deploy/haproxy.cfg)  ->  app host A, app host B  (uvicorn, 2 workers each)
                                          |            |
                                   PgBouncer, transaction mode (deploy/pgbouncer.ini)
                                          |
                                      PostgreSQL        Redis (login throttling)

Every address is a loopback one. Each app "host" is `make serve` on a port of its own,
with its own metrics directory, as two machines would run it. PostgreSQL and Redis are
used where they already answer (127.0.0.1:5432 and :6379), else started; the database
`todoapp_cluster` is created when missing and migrated directly (not through PgBouncer).
PgBouncer and HAProxy run on the files of deploy/, rendered with this run's ports and
paths into build/cluster/. Ctrl-C stops everything this started, in reverse order.

The classes here are also what `make soak` and the tests use to run PgBouncer, HAProxy
and app hosts.
"""

# Running the system's servers is this module's job; no argument comes from outside.
# ruff: noqa: S603, S607

import csv
import io
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
HOST = "127.0.0.1"  # the only address anything here listens on or sends to
BIN = Path(sys.executable).parent
# Settings of the app that must not leak in from the caller's environment.
APP_VARIABLES = (
    "DATABASE_URL",
    "SECRET_KEY",
    "ENVIRONMENT",
    "REDIS_URL",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "CORS_ORIGINS",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "BCRYPT_ROUNDS",
    "WORKER_THREADS",
    "FAST_LANE_CONNECTIONS",
    "DB_POOL_TIMEOUT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_ENABLED",
    "METRICS_TOKEN",
    "DRAIN_SECONDS",
    "DB_POOLER",
    "PROMETHEUS_MULTIPROC_DIR",
)
GRACEFUL_SECONDS = 20


class ClusterError(Exception):
    """Something that stops the cluster from starting; the message is one line."""


def log(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int, timeout: float = 1.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((HOST, port)) == 0


def wait_listening(port: int, proc: "subprocess.Popen[bytes]", what: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-4:])
            raise ClusterError(f"{what} did not start listening on {HOST}:{port}: {tail}")
        time.sleep(0.05)


def stop_process(proc: "subprocess.Popen[bytes]", grace: float, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def app_environment(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
    env.update(settings)
    return env


def missing_commands(commands: Sequence[str]) -> list[str]:
    return [c for c in commands if shutil.which(c) is None]


def runtime_dir(prefix: str) -> Path:
    """A fresh directory the servers can write in, also when they drop root for postgres."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    return path


# --- PgBouncer ------------------------------------------------------------------------
def render_ini(text: str, settings: Mapping[str, str], databases: Mapping[str, str]) -> str:
    """deploy/pgbouncer.ini with `settings` in [pgbouncer] and `databases` as [databases]."""
    out: list[str] = []
    section = ""
    pending = dict(settings)
    for line in text.splitlines():
        header = re.fullmatch(r"\[(\w+)\]\s*", line)
        if header:
            if section == "pgbouncer":
                out += [f"{k} = {v}" for k, v in pending.items()]
                pending = {}
            section = header[1]
            out.append(line)
            if section == "databases":
                out += [f"{name} = {conn}" for name, conn in databases.items()]
            continue
        if section == "databases" and line and not line.startswith(";"):
            continue  # replaced above
        key = re.match(r"(\w+)\s*=", line)
        if section == "pgbouncer" and key and key[1] in settings:
            out.append(f"{key[1]} = {pending.pop(key[1], settings[key[1]])}")
            continue
        out.append(line)
    out += [f"{k} = {v}" for k, v in pending.items()]
    return "\n".join(out) + "\n"


class PgBouncer:
    """Debian's pgbouncer on deploy/pgbouncer.ini, with this run's port, paths and users.

    `users` maps user names to passwords (SCRAM towards the clients, the same password
    towards PostgreSQL); `databases` maps names to PgBouncer connection strings.
    """

    def __init__(
        self,
        databases: Mapping[str, str],
        users: Mapping[str, str],
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = runtime_dir("todoapp-pgbouncer-")
        self.log_path = self.dir / "pgbouncer.log"
        userlist = self.dir / "userlist.txt"
        userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        ini = render_ini(
            (DEPLOY / "pgbouncer.ini").read_text(),
            {
                "listen_addr": HOST,
                "listen_port": str(self.port),
                "auth_file": str(userlist),
                "logfile": str(self.log_path),
                "pidfile": str(self.dir / "pgbouncer.pid"),
                **(settings or {}),
            },
            databases,
        )
        self.ini = self.dir / "pgbouncer.ini"
        self.ini.write_text(ini)
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            for path in (userlist, self.ini):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
                path.chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "PgBouncer":
        if missing_commands(["pgbouncer"]):
            raise ClusterError("pgbouncer is not installed (apt-get install pgbouncer)")
        # It refuses to run as root: as root, it is told to become postgres.
        cmd = ["pgbouncer", *(["-u", "postgres"] if os.geteuid() == 0 else []), str(self.ini)]
        console = (self.dir / "console.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True
        )
        console.close()
        wait_listening(self.port, self.proc, "pgbouncer", self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)  # SIGTERM: immediate shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


# --- HAProxy ---------------------------------------------------------------------------
class HAProxy:
    """Debian's haproxy on deploy/haproxy.cfg, in the foreground, with loopback addresses."""

    def __init__(self, backends: Sequence[int], log_path: Path, *, port: int | None = None):
        self.port = port or free_port()
        self.stats_port = free_port()
        self.backends = backends
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "HAProxy":
        if missing_commands(["haproxy"]):
            raise ClusterError("haproxy is not installed (apt-get install haproxy)")
        env = {
            **os.environ,
            "TODOAPP_BIND": f"{HOST}:{self.port}",
            "TODOAPP_APP_A": f"{HOST}:{self.backends[0]}",
            "TODOAPP_APP_B": f"{HOST}:{self.backends[1]}",
            "TODOAPP_STATS_BIND": f"{HOST}:{self.stats_port}",
        }
        cmd = ["haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")]
        sink = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True,
        )  # fmt: skip
        sink.close()
        wait_listening(self.port, self.proc, "haproxy", self.log_path)
        return self

    def server_states(self) -> dict[str, str]:
        """{"a": "UP", "b": "DOWN", ...} from HAProxy's statistics (CSV)."""
        import httpx  # the app's dependency; imported late so `--help` needs nothing

        with httpx.Client(timeout=2.0, trust_env=False) as client:
            text = client.get(f"http://{HOST}:{self.stats_port}/stats;csv").text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"].split(" ")[0]
            for row in rows
            if row["pxname"] == "app" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def wait_state(self, server: str, state: str, timeout: float) -> float:
        """Seconds until `server` is in `state` (e.g. "UP"), or ClusterError."""
        started = time.monotonic()
        while True:
            try:
                if self.server_states().get(server) == state:
                    return time.monotonic() - started
            except Exception:  # noqa: S110 - not answering yet: try again
                pass
            if time.monotonic() - started > timeout:
                raise ClusterError(f"haproxy did not see server {server} {state} in {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10, signal.SIGUSR1)  # soft stop: finish what is open


# --- Redis ----------------------------------------------------------------------------------
class Redis:
    def __init__(self, port: int, directory: Path, log_path: Path) -> None:
        self.port = port
        self.directory = directory
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Redis":
        if missing_commands(["redis-server"]):
            raise ClusterError("redis-server is not installed (apt-get install redis-server)")
        cmd = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.directory)]
        sink = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
        )
        sink.close()
        wait_listening(self.port, self.proc, "redis-server", self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


# --- the app's hosts ------------------------------------------------------------------------
class AppHost:
    """One app "host": `make serve` (uvicorn, uvloop, httptools, graceful shutdown, drain)
    with `workers` workers on a port of its own and a metrics directory of its own."""

    def __init__(
        self,
        name: str,
        settings: Mapping[str, str],
        log_path: Path,
        *,
        workers: int = 2,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.settings = dict(settings)
        self.log_path = log_path
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "AppHost":
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        # A fresh directory for each start, as `make serve` makes one.
        self.metrics_dir = Path(tempfile.mkdtemp(prefix=f"todoapp-metrics-{self.name}-"))
        cmd = [str(BIN / "uvicorn"), "todoapp.main:app", "--host", HOST, "--port", str(self.port)]
        cmd += ["--workers", str(self.workers), "--loop", "uvloop", "--http", "httptools"]
        cmd += ["--no-access-log", "--timeout-graceful-shutdown", str(GRACEFUL_SECONDS)]
        cmd += ["--proxy-headers", f"--forwarded-allow-ips={HOST}"]
        env = app_environment({**self.settings, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)})
        sink = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True,
        )  # fmt: skip
        sink.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise ClusterError(f"app host {self.name} exited ({self.proc.returncode})")
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ClusterError(f"app host {self.name} not ready in {timeout:.0f} s")
                time.sleep(0.2)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, GRACEFUL_SECONDS + 15)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


# --- make cluster ----------------------------------------------------------------------------
PG_PORT = int(os.environ.get("CLUSTER_PG_PORT", "5432"))
REDIS_PORT = int(os.environ.get("CLUSTER_REDIS_PORT", "6379"))
PORT = int(os.environ.get("CLUSTER_PORT", "8080"))
APP_PORTS = (8001, 8002)
PGBOUNCER_PORT = 6433  # beside a system PgBouncer's 6432
DB_NAME = "todoapp_cluster"
OUT = ROOT / "build" / "cluster"


def _ensure_postgres() -> None:
    import psycopg2

    dsn = f"host={HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=3"
    for attempt in range(2):
        try:
            connection = psycopg2.connect(dsn)
        except psycopg2.OperationalError:
            if attempt or PG_PORT != 5432 or not Path("/etc/postgresql").is_dir():
                raise ClusterError(f"PostgreSQL does not answer on {HOST}:{PG_PORT}") from None
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            log(f"starting PostgreSQL {version}/main")
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
                timeout=120,
            )
            time.sleep(2)
            continue
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cursor.fetchone() is None:
                log(f"creating database {DB_NAME}")
                cursor.execute(f'CREATE DATABASE "{DB_NAME}"')
        connection.close()
        return


def main() -> int:
    missing = missing_commands(["haproxy", "pgbouncer", "redis-server"])
    if missing:
        log(f"missing: {', '.join(missing)} (`make cluster` installs them)")
        return 2
    for port in (PORT, PGBOUNCER_PORT, *APP_PORTS):
        if answers(port):
            log(f"port {port} is taken: is another `make cluster` running?")
            return 2
    OUT.mkdir(parents=True, exist_ok=True)
    started: list[object] = []
    stopping = False

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        _ensure_postgres()
        direct_url = f"postgresql://postgres@{HOST}:{PG_PORT}/{DB_NAME}"
        log(f"migrating {DB_NAME} (directly, not through PgBouncer)")
        subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"],
            cwd=ROOT,
            env=app_environment({"DATABASE_URL": direct_url}),
            check=True,
            timeout=120,
        )
        if not answers(REDIS_PORT):
            log(f"starting redis-server on {HOST}:{REDIS_PORT}")
            started.append(Redis(REDIS_PORT, OUT, OUT / "redis.log").start())
        password = secrets.token_urlsafe(24)
        bouncer = PgBouncer(
            {DB_NAME: f"host={HOST} port={PG_PORT} dbname={DB_NAME}"},
            {"postgres": password},
            port=PGBOUNCER_PORT,
        ).start()
        started.append(bouncer)
        log(f"pgbouncer (transaction mode) on {HOST}:{bouncer.port}, config {bouncer.ini}")
        settings = {
            "DATABASE_URL": f"postgresql://postgres:{password}@{HOST}:{bouncer.port}/{DB_NAME}",
            "DB_POOLER": "transaction",
            "REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),  # one key for both hosts
            "METRICS_ENABLED": "true",
            "WORKER_THREADS": "10",
            "FAST_LANE_CONNECTIONS": "4",
        }
        hosts = [
            AppHost(name, settings, OUT / f"app-{name}.log", port=port)
            for name, port in zip(("a", "b"), APP_PORTS, strict=True)
        ]
        for host in hosts:
            started.append(host.start())
        for host in hosts:
            host.wait_ready()
            log(f"app host {host.name} on {host.url} (2 workers; log {host.log_path})")
        proxy = HAProxy([h.port for h in hosts], OUT / "haproxy.log", port=PORT).start()
        started.append(proxy)
        proxy.wait_state("a", "UP", 15)
        proxy.wait_state("b", "UP", 15)
        log(f"haproxy on {proxy.url}, statistics on http://{HOST}:{proxy.stats_port}/stats")
        print(
            f"\n  todoapp: {proxy.url}   (docs {proxy.url}/docs, metrics {proxy.url}/metrics)"
            "\n  Ctrl-C stops everything this started.\n",
            flush=True,
        )
        while True:
            for host in hosts:
                if host.proc is not None and host.proc.poll() is not None:
                    raise ClusterError(f"app host {host.name} exited ({host.proc.returncode})")
            time.sleep(1.0)
    except KeyboardInterrupt:
        stopping = True
        return 0
    except (ClusterError, subprocess.SubprocessError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if stopping:
            log("stopping")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        for thing in started:  # both hosts drain at once
            if isinstance(thing, AppHost):
                thing.terminate()
        for thing in reversed(started):
            log(f"stopping {type(thing).__name__}")
            thing.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(main())

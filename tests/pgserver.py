"""A throwaway PostgreSQL for the suite, where no server answers but the binaries exist.

`make test` never passes with the PostgreSQL half missing: conftest asks for the server
at TEST_DATABASE_URL (default DEFAULT_PG); when nothing answers there, it starts one of
these (initdb into a temporary folder, trust authentication, a free port of 127.0.0.1),
and stops and deletes it at the end of the run. Without initdb and pg_ctl it stops the
run at once with one line saying what to install or set (missing_message).
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from todoapp.database import database_url

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# Where Debian's `postgresql` package puts them, newest version first; then PATH.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
BINDIR_VARIABLE = "TEST_PG_BINDIR"  # a folder holding initdb and pg_ctl, instead of those


def admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def shown(url: str) -> str:
    return make_url(url).render_as_string()  # the password, if any, as ***


class Refused(Exception):
    """A server answers at the URL but refuses the connection (a wrong password, user or
    database name): a mistake to report, not a reason to start another server."""


def answers(url: str, timeout: int = 3) -> bool:
    """Whether a PostgreSQL server accepts a connection at this URL: False when none
    answers there, Refused when one answers but will not have us."""
    engine = create_engine(database_url(url), connect_args={"connect_timeout": timeout})
    try:
        with engine.connect():
            return True
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc))
        if "FATAL:" in reason:
            first = reason.split("FATAL:", 1)[1].strip().splitlines()[0]
            raise Refused(f"PostgreSQL at {shown(url)} refused the connection: {first}") from exc
        return False
    finally:
        engine.dispose()


def _version(bindir: str) -> tuple[int, ...]:
    name = Path(bindir).parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def find_bindir() -> Path | None:
    """A folder holding PostgreSQL's initdb and pg_ctl, or None."""
    override = os.environ.get(BINDIR_VARIABLE)
    candidates = (
        [override]
        if override is not None
        else [
            *sorted(glob.glob(DEBIAN_BINDIRS), key=_version, reverse=True),
            *[str(Path(found).parent) for found in [shutil.which("initdb")] if found],
        ]
    )
    for candidate in candidates:
        folder = Path(candidate)
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    return None


def missing_message(url: str) -> str:
    """The one line that stops a run with no PostgreSQL and no way to start one."""
    return (
        f"no PostgreSQL answers at {shown(url)} and initdb/pg_ctl are not installed to "
        "start a throwaway one: install Debian's `postgresql` package (apt-get install "
        "postgresql), or set TEST_DATABASE_URL to a reachable server, or run "
        "`make test-sqlite` for the SQLite half alone"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    """initdb + pg_ctl in a temporary folder; start() gives its admin URL, stop() ends it.

    PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user
    (which Debian's package creates), in a folder that user owns.
    """

    def __init__(self, bindir: Path, port: int | None = None) -> None:
        self.bindir = bindir
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="todoapp-test-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{log}")

    def start(self) -> str:
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        # Throwaway data: no fsync. The socket lives in the folder, not /var/run.
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.folder} -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "start", "--wait", "-D", str(self.data), "-l", str(self.log), "-o", options
        )
        self.started = True
        return self.url

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "stop", "--wait", "-D", str(self.data), "-m", "immediate")
                self.started = False
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

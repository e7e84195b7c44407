"""`make test` never passes half: with no PostgreSQL answering, the run starts a throwaway
one (tests/pgserver.py), or stops at once with one line when it cannot."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tests import pgserver
from tests.conftest import ROOT


def _environment(**changes: str) -> dict[str, str]:
    """This environment for a nested pytest run, less what pytest and xdist set."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "TEST_PG_")) and name != "TEST_DATABASE_URL"
    }
    return {**kept, **changes}


def _nothing_at(port: int) -> str:
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert not pgserver.answers(url), f"something answers at {url}"
    return url


def _bindir() -> Path:
    bindir = pgserver.find_bindir()
    if bindir is None:
        pytest.fail("these tests start PostgreSQL: install Debian's `postgresql` package")
    return bindir


@pytest.mark.postgres_only
def test_a_throwaway_server_comes_up_where_nothing_listened_and_is_stopped() -> None:
    port = pgserver.free_port()
    url = _nothing_at(port)
    server = pgserver.ThrowawayPostgres(_bindir(), port)
    try:
        assert server.start() == url
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('port')")
            assert cursor.fetchone() == ("postgres", str(port))
        connection.close()
    finally:
        server.stop()
    assert not pgserver.answers(url)
    assert not server.folder.exists()  # its data is gone too


@pytest.mark.postgres_only
def test_a_run_with_no_server_starts_one_for_its_workers_and_stops_it() -> None:
    url = _nothing_at(pgserver.free_port())
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "1", "-p", "no:cacheprovider",
         "tests/test_pg_async.py::test_a_read_gives_its_rows_with_bound_parameters"],
        cwd=ROOT, env=_environment(TEST_DATABASE_URL=url),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 1 passed" in run.stdout
    header = next(line for line in run.stdout.splitlines() if "throwaway PostgreSQL" in line)
    port = int(header.split("127.0.0.1:")[1].split()[0])
    folder = Path(header.split("(in ")[1].split(")")[0])
    # Stopped at the end, its folder deleted.
    assert not pgserver.answers(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert not folder.exists()


def test_without_a_server_or_the_binaries_the_run_stops_with_one_line(tmp_path: Path) -> None:
    url = _nothing_at(pgserver.free_port())
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "tests/test_cli.py"],
        cwd=ROOT, env=_environment(TEST_DATABASE_URL=url, TEST_PG_BINDIR=str(tmp_path)),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [f"ERROR: {pgserver.missing_message(url)}"]
    message = pgserver.missing_message(url)
    assert "`postgresql` package" in message
    assert "TEST_DATABASE_URL" in message


def test_a_server_that_refuses_us_stops_the_run_instead_of_another_starting(
    pg_server: str,
) -> None:
    wrong = make_url(pg_server).set(database="todoapp_no_such_database")
    url = wrong.render_as_string(hide_password=False)
    with pytest.raises(pgserver.Refused, match='"todoapp_no_such_database" does not exist'):
        pgserver.answers(url)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_cli.py"],
        cwd=ROOT, env=_environment(TEST_DATABASE_URL=url),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"ERROR: PostgreSQL at {pgserver.shown(url)} refused the connection")
    assert line.endswith("fix TEST_DATABASE_URL")

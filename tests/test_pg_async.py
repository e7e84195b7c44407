"""AsyncReader: reads on the event loop, over real PostgreSQL connections.

Whatever goes wrong, a read either gives its rows or raises ReadFailed, and the reader
stays usable: no connection is reused in an unknown state and no slot is lost.
"""

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import psycopg2
import pytest
from psycopg2.errors import QueryCanceled

from tests.conftest import Backend
from todoapp import pg_async
from todoapp.pg_async import AsyncReader, ReadFailed
from todoapp.prepared import PreparedStatement

T = TypeVar("T")


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


def reader_for(backend: Backend, size: int = 2, timeout: float = 2.0) -> AsyncReader:
    return pg_async.reader_for(backend.database, size=size, timeout=timeout)


def test_a_read_gives_its_rows_with_bound_parameters(pg_backend: Backend) -> None:
    reader = reader_for(pg_backend)

    async def work() -> list[tuple[Any, ...]]:
        try:
            return await reader.fetch_all(
                "SELECT %(n)s + 1, %(text)s, current_setting('TimeZone')",
                {"n": 41, "text": "it's"},
            )
        finally:
            reader.close()

    assert run(work) == [(42, "it's", "UTC")]


def test_never_more_connections_than_its_size_and_every_read_answered(
    pg_backend: Backend,
) -> None:
    reader = reader_for(pg_backend, size=2)
    most_open = 0

    async def one(n: int) -> int:
        nonlocal most_open
        rows = await reader.fetch_all("SELECT %(n)s FROM pg_sleep(0.02)", {"n": n})
        most_open = max(most_open, reader._open)
        return int(rows[0][0])

    async def work() -> list[int]:
        try:
            return list(await asyncio.gather(*(one(n) for n in range(12))))
        finally:
            reader.close()

    assert run(work) == list(range(12))
    assert most_open == 2


def test_a_failed_statement_discards_its_connection_and_the_next_read_works(
    pg_backend: Backend,
) -> None:
    reader = reader_for(pg_backend, size=1)

    async def work() -> list[tuple[Any, ...]]:
        try:
            with pytest.raises(ReadFailed):
                await reader.fetch_all("SELECT 1/0", {})
            assert reader._open == 0
            return await reader.fetch_all("SELECT 1", {})
        finally:
            reader.close()

    assert run(work) == [(1,)]


def test_a_slow_read_and_its_waiter_time_out_and_free_their_slot(pg_backend: Backend) -> None:
    reader = reader_for(pg_backend, size=1, timeout=0.3)

    async def work() -> tuple[list[Any], float, list[tuple[Any, ...]]]:
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                reader.fetch_all("SELECT pg_sleep(5)", {}),
                reader.fetch_all("SELECT 2", {}),  # waits for the only connection
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            return list(outcomes), elapsed, await reader.fetch_all("SELECT 3", {})
        finally:
            reader.close()

    outcomes, elapsed, after = run(work)
    assert [type(outcome) for outcome in outcomes] == [ReadFailed, ReadFailed]
    assert elapsed < 2
    assert after == [(3,)]


def test_a_connection_killed_by_the_server_fails_one_read_then_is_replaced(
    pg_backend: Backend,
) -> None:
    reader = reader_for(pg_backend, size=1)

    async def work() -> list[tuple[Any, ...]]:
        try:
            [(pid,)] = await reader.fetch_all("SELECT pg_backend_pid()", {})
            with pg_backend.engine.connect() as connection:
                connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            with pytest.raises(ReadFailed):
                await reader.fetch_all("SELECT 1", {})
            [(new_pid,)] = await reader.fetch_all("SELECT pg_backend_pid()", {})
            assert new_pid != pid
            return [(new_pid,)]
        finally:
            reader.close()

    assert run(work)


def test_an_unreachable_database_fails_fast_and_is_not_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = AsyncReader(
        {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"},
        size=2,
        timeout=5,
    )
    attempts: list[float] = []
    real_connect = psycopg2.connect

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(pg_async.psycopg2, "connect", counting_connect)

    async def work() -> float:
        started = time.monotonic()
        for _ in range(5):
            with pytest.raises(ReadFailed):
                await reader.fetch_all("SELECT 1", {})
        return time.monotonic() - started

    assert run(work) < 1
    assert len(attempts) == 1  # the rest went straight to the ordinary path
    assert reader._open == 0


def test_a_closed_reader_refuses_reads_and_holds_no_connection(pg_backend: Backend) -> None:
    reader = reader_for(pg_backend)

    async def work() -> None:
        await reader.fetch_all("SELECT 1", {})
        assert reader._open == 1
        reader.close()
        assert reader._open == 0
        with pytest.raises(ReadFailed):
            await reader.fetch_all("SELECT 1", {})

    run(work)


def test_a_prepared_statement_numbers_each_parameter_once() -> None:
    statement = PreparedStatement("p", "SELECT %(a)s, %(b)s WHERE x = %(a)s")
    name = statement.name
    assert name.startswith("p_")
    assert statement.prepare == f"PREPARE {name} AS SELECT $1, $2 WHERE x = $1"
    assert statement.execute == f"EXECUTE {name}(%(a)s, %(b)s)"
    plain = PreparedStatement("q", "SELECT 1")
    assert plain.execute == f"EXECUTE {plain.name}"
    modulo = PreparedStatement("m", "SELECT %(a)s %% 7")
    assert modulo.prepare == f"PREPARE {modulo.name} AS SELECT $1 % 7"
    assert modulo.sql == "SELECT %(a)s %% 7"  # run unprepared, with parameters
    # Another statement under the same name gets another server-side name.
    assert PreparedStatement("p", "SELECT %(b)s, %(a)s").name != name


def test_every_new_connection_prepares_the_statements(pg_backend: Backend) -> None:
    doubled = PreparedStatement("doubled", "SELECT %(n)s::int * 2 + 10 %% 3")
    reader = pg_async.reader_for(pg_backend.database, size=1, timeout=2, prepared=(doubled,))

    async def work() -> list[tuple[Any, ...]]:
        try:
            assert await reader.fetch_all(doubled, {"n": 4}) == [(9,)]
            [(pid,)] = await reader.fetch_all("SELECT pg_backend_pid()", {})
            with pg_backend.engine.connect() as connection:
                connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            with pytest.raises(ReadFailed):
                await reader.fetch_all(doubled, {"n": 5})
            return await reader.fetch_all(doubled, {"n": 5})  # a new connection
        finally:
            reader.close()

    assert run(work) == [(11,)]
    assert reader.preparing


def test_statements_the_server_lost_switch_the_reader_to_unprepared_reads(
    pg_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # Behind PgBouncer in transaction mode an EXECUTE can land on a server session
    # that never saw the PREPARE: here, a statement that no session prepared.
    kept = PreparedStatement("kept", "SELECT 1")
    lost = PreparedStatement("lost", "SELECT %(n)s::int")
    reader = pg_async.reader_for(pg_backend.database, size=1, timeout=2, prepared=(kept,))

    async def work() -> list[tuple[Any, ...]]:
        try:
            with pytest.raises(ReadFailed):
                await reader.fetch_all(lost, {"n": 7})
            assert not reader.preparing
            return await reader.fetch_all(lost, {"n": 7})
        finally:
            reader.close()

    assert run(work) == [(7,)]
    assert "go unprepared" in caplog.text


def test_a_statement_already_prepared_on_the_session_switches_to_unprepared_at_once(
    pg_backend: Backend,
) -> None:
    doubled = PreparedStatement("twice", "SELECT %(n)s::int * 2")
    reader = pg_async.reader_for(
        pg_backend.database, size=1, timeout=2, prepared=(doubled, doubled)
    )

    async def work() -> list[tuple[Any, ...]]:
        try:
            with pytest.raises(ReadFailed):
                await reader.fetch_all(doubled, {"n": 4})
            return await reader.fetch_all(doubled, {"n": 4})  # no reconnect pause
        finally:
            reader.close()

    assert run(work) == [(8,)]
    assert not reader.preparing


def test_closing_fails_the_reads_still_waiting_at_once(pg_backend: Backend) -> None:
    reader = reader_for(pg_backend, size=1, timeout=5)

    async def work() -> tuple[list[Any], float]:
        busy = asyncio.ensure_future(reader.fetch_all("SELECT pg_sleep(0.3)", {}))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(reader.fetch_all("SELECT 1", {}))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        reader.close()
        outcomes = await asyncio.gather(busy, waiting, return_exceptions=True)
        return [type(outcome) for outcome in outcomes], time.monotonic() - started

    kinds, elapsed = run(work)
    assert kinds == [list, ReadFailed]  # the read in flight finishes; the waiter does not
    assert elapsed < 2
    assert reader._open == 0  # the busy connection was closed, not kept


def test_a_silent_database_times_out_and_is_not_retried_at_once() -> None:
    # A listener that never answers: the TCP handshake completes in the kernel's
    # backlog, then nothing, as with a database behind a dropped network.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        reader = AsyncReader(
            {"host": "127.0.0.1", "port": silent.getsockname()[1], "user": "postgres"},
            size=2,
            timeout=0.3,
        )

        async def work() -> tuple[float, float]:
            started = time.monotonic()
            with pytest.raises(ReadFailed):
                await reader.fetch_all("SELECT 1", {})
            first = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(ReadFailed):
                await reader.fetch_all("SELECT 1", {})  # within the pause: no new attempt
            return first, time.monotonic() - started

        first, second = run(work)
    assert 0.25 < first < 2
    assert second < 0.1
    assert reader._open == 0


def test_a_read_past_its_timeout_is_stopped_on_the_server_too(pg_backend: Backend) -> None:
    # The connection settings the app's lane uses, with a timeout of 0.3 s; the reader
    # itself is made to wait far longer, so what stops the read is the server's
    # statement_timeout (a read the app gave up on must not keep running there).
    reader = reader_for(pg_backend, size=1, timeout=0.3)
    reader.timeout = 30.0

    async def work() -> tuple[BaseException, list[tuple[Any, ...]]]:
        try:
            with pytest.raises(ReadFailed) as failed:
                await reader.fetch_all("SELECT pg_sleep(20)", {})
            return failed.value, await reader.fetch_all("SELECT 1", {})
        finally:
            reader.close()

    failure, after = run(work)
    # The server cancelled it (the client would have waited 30 s for the 20 s sleep).
    assert isinstance(failure.__cause__, QueryCanceled)
    assert "canceling statement due to statement timeout" in str(failure.__cause__)
    assert after == [(1,)]  # and the reader goes on


def test_the_lanes_prepared_statements_are_planned_once(pg_backend: Backend) -> None:
    # A generic plan, made once per connection: planning the lane's statement anew on
    # every execution cost PostgreSQL about three times the read itself.
    lane = PreparedStatement("lane_like", "SELECT count(*) FROM users WHERE id = %(n)s")
    reader = pg_async.reader_for(pg_backend.database, size=1, timeout=2, prepared=(lane,))

    async def work() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        try:
            for n in range(8):
                await reader.fetch_all(lane, {"n": n})
            mode = await reader.fetch_all("SHOW plan_cache_mode", {})
            plans = await reader.fetch_all(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name = %(name)s",
                {"name": lane.name},
            )
            return mode, plans
        finally:
            reader.close()

    mode, plans = run(work)
    assert mode == [("force_generic_plan",)]
    assert plans == [(8, 0)]

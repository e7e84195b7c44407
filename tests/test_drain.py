"""The drain on SIGTERM (todoapp/drain.py), on a real two-worker uvicorn."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import migrate
from tests.live import LiveServer

DRAIN = 3.0


def _slow_body(body: bytes, start_after: float, spread: float) -> Iterator[bytes]:
    """The body in pieces: the first at once, the last `start_after + spread` s later."""
    yield body[:1]
    time.sleep(start_after)
    pieces = [body[i : i + 8] for i in range(1, len(body), 8)]
    for piece in pieces:
        time.sleep(spread / len(pieces))
        yield piece


def test_sigterm_first_fails_readyz_while_serving_then_shuts_down_gracefully(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'drain.db'}"
    migrate(url)
    server = LiveServer(
        {"DATABASE_URL": url, "DRAIN_SECONDS": str(DRAIN)}, tmp_path / "server.log", workers=2
    )
    server.wait_ready()
    keep_alive = httpx.Client(base_url=server.url, timeout=30.0, trust_env=False)
    fresh_statuses: list[tuple[float, int]] = []
    kept: list[tuple[float, int, str]] = []
    slow: dict[str, object] = {}
    try:
        before = keep_alive.get("/healthz")
        assert before.status_code == 200
        assert before.headers.get("connection") != "close"

        # A registration whose body is still arriving when the graceful shutdown begins.
        body = json.dumps(
            {"username": "slow_sam", "email": "sam@example.com", "password": "password123"}
        ).encode()

        def register_slowly() -> None:
            with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client:
                try:
                    response = client.post(
                        "/auth/register",
                        content=_slow_body(body, DRAIN - 0.5, 1.5),
                        headers={"Content-Type": "application/json"},
                    )
                    slow["status"] = response.status_code
                except httpx.HTTPError as exc:
                    slow["error"] = repr(exc)

        sent_at = time.monotonic()
        server.terminate()  # SIGTERM to uvicorn's supervisor, which passes it on
        uploader = threading.Thread(target=register_slowly)
        uploader.start()
        while time.monotonic() < sent_at + DRAIN - 0.8:
            with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as fresh:
                fresh_statuses.append(
                    (time.monotonic() - sent_at, fresh.get("/readyz").status_code)
                )
            answer = keep_alive.get("/healthz")
            kept.append(
                (time.monotonic() - sent_at, answer.status_code, answer.headers.get("connection"))
            )
            time.sleep(0.05)
        uploader.join(30)
        code = server.proc.wait(30)
        exited_after = time.monotonic() - sent_at
    finally:
        keep_alive.close()
        server.stop()

    # /readyz turns 503 at once (within a second) and stays so; everything else is served,
    # each answer asking the client to close its connection.
    late = [status for when, status in fresh_statuses if when > 1.0]
    assert late
    assert set(late) == {503}, fresh_statuses
    assert {status for _, status, _ in kept} == {200}, kept
    assert all(connection == "close" for when, _, connection in kept if when > 1.0), kept
    # The request in flight when the shutdown began was answered, not reset.
    assert slow == {"status": 201}
    # Only after the drain did the workers shut down, cleanly.
    assert exited_after >= DRAIN
    assert code in (0, -15)
    log = server.log_text()
    assert log.count("draining for 3 s") == 2  # each worker
    assert "Traceback" not in log
    assert "Cancel" not in log

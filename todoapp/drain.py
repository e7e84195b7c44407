"""Draining on SIGTERM: leave the balancer's rotation first, then shut down gracefully.

Without it, uvicorn stops accepting at once on SIGTERM and closes idle keep-alive
connections, while the balancer, which has not noticed yet, is still sending requests
there: they are refused or reset. With it, a worker that gets SIGTERM first answers
`/readyz` with 503 for DRAIN_SECONDS while it goes on serving everything else (each
answer asks the client to close its connection, so keep-alive clients move on); the
balancer's health check takes it out of rotation meanwhile. Only then is the signal
handed to uvicorn, whose graceful shutdown lets the requests in flight finish.

A second SIGTERM during the drain, or DRAIN_SECONDS=0, hands it on at once; SIGINT
(Ctrl-C) is left to uvicorn. Installed only where the server handles signals in the main
thread (uvicorn does); an app served in a thread (the test client) has nothing to drain.
"""

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

logger = logging.getLogger("todoapp")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[int, FrameType | None], Any] | int | None

DRAINING = "shutting down: draining connections"
_CLOSE = (b"connection", b"close")


class Drain:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False
        self._previous: Handler = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed = False

    def install(self) -> None:
        """Take SIGTERM over from the server (call in its event loop, at start-up)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def uninstall(self) -> None:
        """Give SIGTERM back to the server (at shutdown)."""
        if self._installed:
            self._installed = False
            previous = self._previous
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.draining or self.seconds <= 0 or self._loop is None:
            self._hand_on(signum, frame)
            return
        self.draining = True
        # A signal handler may not touch the loop's internals: schedule the rest from it.
        self._loop.call_soon_threadsafe(self._begin, signum)

    def _begin(self, signum: int) -> None:
        logger.info(
            "SIGTERM: draining for %g s (/readyz answers 503), then shutting down", self.seconds
        )
        assert self._loop is not None
        self._loop.call_later(self.seconds, self._hand_on, signum, None)

    def _hand_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
            return
        # The default action (or whatever was there): restore it and signal ourselves.
        self.uninstall()
        signal.raise_signal(signum)


class DrainMiddleware:
    """While draining, every answer says `Connection: close`."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), _CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)

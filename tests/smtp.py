"""A real SMTP server for the tests: aiosmtpd on a free local port, in its own thread.

It can be stopped and started again on the same port (an SMTP server that is down for
a while), made to refuse every mail with a 451, or made slow; with a TLS context it
speaks TLS, after STARTTLS (required before anything else) or from the first byte.
"""

import asyncio
import email
import email.policy
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    envelope_from: str
    envelope_to: list[str]
    message: EmailMessage
    over_tls: bool = False

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())

    @property
    def token(self) -> str:
        found = re.search(r"token=([A-Za-z0-9_-]+)", self.text)
        assert found, self.text
        return found.group(1)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl), as PEM files."""
    certificate, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


class SmtpServer:
    def __init__(self, tls: ssl.SSLContext | None = None, implicit_tls: bool = False) -> None:
        # With `tls`: STARTTLS is offered and required first (or, with `implicit_tls`,
        # every connection is TLS from the start), and AUTH only ever over TLS.
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.received: list[Received] = []
        self.refuse = False
        self.delay = 0.0
        self.port = 0
        # (username, password): the server then requires AUTH (over plain text: a test).
        self.credentials: tuple[str, str] | None = None
        self.logins: list[str] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None

    # aiosmtpd calls handle_DATA on the handler object: this one.
    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse:
            return "451 4.3.0 try again later"
        content = envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._changed:
            transport = server.transport
            over_tls = transport is not None and transport.get_extra_info("ssl_object") is not None
            self.received.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, over_tls)
            )
            self._changed.notify_all()
        return "250 OK"

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        assert isinstance(data, LoginPassword)
        given = (data.login.decode(), data.password.decode())
        if given != self.credentials:
            return AuthResult(success=False, handled=False)
        self.logins.append(given[0])
        return AuthResult(success=True)

    def _protocol(self) -> SMTP:
        starttls = self.tls is not None and not self.implicit_tls
        tls_options: dict[str, Any] = (
            {"tls_context": self.tls, "require_starttls": True} if starttls else {}
        )
        if self.credentials is None:
            return SMTP(self, hostname="smtp.test", loop=self._loop, **tls_options)
        return SMTP(
            self,
            hostname="smtp.test",
            loop=self._loop,
            authenticator=self._authenticate,
            auth_required=True,
            # Over plain text only in the plain tests. (Implicit TLS: aiosmtpd does not see
            # that the connection is TLS, so it would never offer AUTH.)
            auth_require_tls=starttls,
            **tls_options,
        )

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def start(self) -> None:
        """Listen on 127.0.0.1: a free port the first time, the same port afterwards."""

        async def listen() -> asyncio.Server:
            return await self._loop.create_server(
                self._protocol,
                "127.0.0.1",
                self.port,
                ssl=self.tls if self.implicit_tls else None,
            )

        self._server = self._run(listen())
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening: new connections are refused until start()."""
        server, self._server = self._server, None
        if server is None:
            return

        async def close() -> None:
            server.close()
            if hasattr(server, "close_clients"):
                server.close_clients()

        self._run(close())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least `count` mails arrived; all of them so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.received)} mails arrived, {count} expected: "
                        f"{[(m.to, m.subject) for m in self.received]}"
                    )
                self._changed.wait(left)
            return list(self.received)

    def to(self, address: str) -> list[Received]:
        return [mail for mail in self.received if mail.to == address]

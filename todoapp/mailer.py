"""Mail delivery: the worker that the app's lifespan starts, and its transports.

The worker wakes every MAIL_POLL_SECONDS, claims due mail one row at a time
(services.mail.claim_next), makes its token and message, hands it to the SMTP server
with the standard library's smtplib, and marks it sent. All of that runs in a thread
of its own, never on the event loop. A failed attempt is retried with a pause that
doubles each time (MAIL_RETRY_BASE_SECONDS up to MAIL_RETRY_MAX_SECONDS) until
MAIL_GIVE_UP_HOURS after the mail was queued. On shutdown it finishes the mail in
hand, hands back what it claimed, and stops.
"""

import asyncio
import contextlib
import logging
import smtplib
import ssl
import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from typing import Protocol

from todoapp import metrics
from todoapp.config import Settings
from todoapp.database import Database, SchemaNotReady
from todoapp.logs import loggable
from todoapp.services import mail

logger = logging.getLogger("todoapp.mail")
PURGE_EVERY_SECONDS = 600.0


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand one message over; raise when it was not accepted."""

    def close(self) -> None:
        """End the connection, if any (called after each round)."""


class SmtpTransport:
    """smtplib, one connection for the mail of a round (STARTTLS, SSL or plain)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.timeout = settings.smtp_timeout
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.username:
                password = self.password.get_secret_value() if self.password else ""
                smtp.login(self.username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(message)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class LogTransport:
    """Development without SMTP_HOST: each mail goes to the log, link included, as one
    line (its text's lines joined by spaces), as every log record is."""

    def send(self, message: EmailMessage) -> None:
        text = message.get_body(preferencelist=("plain",))
        content = text.get_content() if text is not None else ""
        logger.info(
            "mail (development, not sent) to %s, subject %r: %s",
            loggable(str(message["To"])),
            message["Subject"],
            " ".join(content.split()),
        )

    def close(self) -> None:
        pass


def make_transport(settings: Settings) -> Transport | None:
    if settings.smtp_host:
        return SmtpTransport(settings)
    if settings.environment == "development":
        return LogTransport()
    return None


def _reason(exc: BaseException) -> str:
    """Why an attempt failed, without anything the server echoed (it may hold data)."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"{type(exc).__name__} {codes}"
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


class MailWorker:
    def __init__(self, database: Database, settings: Settings, transport: Transport | None) -> None:
        self.database = database
        self.settings = settings
        self.transport = transport
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_purge = 0.0

    # --- on the event loop ---------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="mail-worker")

    async def stop(self) -> None:
        self._stopping.set()
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except SchemaNotReady:
                pass  # said once at start-up; mail waits in the outbox meanwhile
            except Exception as exc:  # the database down, say: try again next round
                logger.warning("mail delivery round failed (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.mail_poll_seconds)

    # --- in the worker's thread ----------------------------------------------------
    def run_once(self) -> int:
        """One round: purge when it is time, then deliver what is due. Returns mails sent."""
        if time.monotonic() >= self._next_purge:
            mail.purge(self.database, self.settings)
            self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        state = self.database.read(mail.queue_state)
        now = mail.utcnow()
        waited = (now - state.oldest).total_seconds() if state.oldest else 0.0
        metrics.MAIL_OLDEST_QUEUED_AGE.set(max(waited, 0.0))
        if self.transport is None or state.next_due is None or state.next_due > now:
            return 0
        sent = 0
        try:
            while not self._stopping.is_set():
                claimed = self._claim()
                if claimed is None:
                    break
                if not self._deliver(claimed):
                    break  # the server is down or refusing: the rest waits for next round
                sent += 1
        finally:
            self.transport.close()
        return sent

    def _claim(self) -> mail.ClaimedMail | None:
        claim_for = timedelta(seconds=self.settings.mail_claim_seconds)
        with self.database.session_factory() as db:
            return mail.claim_next(db, mail.utcnow(), claim_for)

    def _deliver(self, claimed: mail.ClaimedMail) -> bool:
        """Send one claimed mail; False when the attempt failed."""
        assert self.transport is not None
        settings = self.settings
        if claimed.created_at < mail.utcnow() - timedelta(hours=settings.mail_give_up_hours):
            with self.database.session_factory() as db:
                mail.give_up(db, claimed.id, "not delivered within MAIL_GIVE_UP_HOURS")
            metrics.MAIL_FAILED.inc()
            logger.error(
                "mail %d (%s) given up after %d attempts",
                claimed.id,
                claimed.kind,
                claimed.attempts - 1,
            )
            return True
        if self._stopping.is_set():
            with self.database.session_factory() as db:
                mail.release(db, claimed.id)
            return False
        with self.database.session_factory() as db:
            prepared = mail.prepare(db, claimed, settings)
        if prepared is None:
            return True  # dropped (no account for it, or over the hourly limit)
        try:
            self.transport.send(prepared.message)
        except Exception as exc:
            pause = min(
                settings.mail_retry_base_seconds * 2 ** (claimed.attempts - 1),
                settings.mail_retry_max_seconds,
            )
            reason = _reason(exc)
            metrics.MAIL_FAILED.inc()
            with self.database.session_factory() as db:
                mail.retry_later(db, claimed, prepared.token_id, reason, timedelta(seconds=pause))
            logger.warning(
                "mail %d (%s) not delivered, attempt %d (%s): next attempt in %.3g s",
                claimed.id,
                claimed.kind,
                claimed.attempts,
                reason,
                pause,
            )
            return False
        # Accepted by the server. Should the mark fail (a crash, the database gone),
        # the claim runs out and the mail goes again: twice at worst, never lost.
        metrics.MAIL_SENT.inc()
        with self.database.session_factory() as db:
            mail.mark_sent(db, claimed.id)
        logger.info("mail %d (%s) sent", claimed.id, claimed.kind)
        return True

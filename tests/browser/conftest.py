"""Fixtures for the browser tests: a live server, a real SMTP catcher, Debian's Chromium.

The server is the app as production builds it (`uvicorn todoapp.main:app`) on a migrated
SQLite database in a temporary folder, sending its mail over SMTP to an aiosmtpd server
of this suite. Chromium is Debian's (/usr/bin/chromium), driven by Playwright; every
request for another host is aborted and fails the test. All browser tests run on one
xdist worker (one server, one browser), and each test gets a fresh browser context.
"""

import email
import email.policy
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)
from playwright.sync_api import Response as PlaywrightResponse
from sqlalchemy import create_engine, text

from tests.conftest import PASSWORD, migrate
from tests.live import HOST, ROOT, LiveServer, free_port

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "build" / "web"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]

expect.set_options(timeout=TIMEOUT_MS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One worker runs them all: one server and one browser, started once.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


# --- mail: a real SMTP server on a free port ----------------------------------------
class Outbox:
    """Every message the app delivered to the catcher, parsed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._lock = threading.Condition()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
            self._lock.notify_all()
        return "250 OK"

    def wait_for(
        self, to: str, *, subject: str = "", text: str = "", nth: int = 1, timeout: float = 20.0
    ) -> EmailMessage:
        """The nth message to `to` with `subject` in its subject and `text` in its text."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [m for m in self.messages if _is(m, to, subject, text)]
                if len(found) >= nth:
                    return found[nth - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(str(m["To"]), str(m["Subject"])) for m in self.messages]
                    raise AssertionError(f"no mail {nth} to {to} ({subject!r}, {text!r}): {seen}")
                self._lock.wait(left)

    def count(self, to: str, *, subject: str = "", text: str = "") -> int:
        with self._lock:
            return sum(1 for message in self.messages if _is(message, to, subject, text))


def _is(message: EmailMessage, to: str, subject: str, text: str) -> bool:
    return (
        to.lower() in str(message["To"]).lower()
        and subject.lower() in str(message["Subject"]).lower()
        and text in mail_text(message)
    )


def mail_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    content: str = part.get_content()
    return content


def link_in(message: EmailMessage, fragment: str) -> str:
    """The first link in the mail's text that contains `fragment`."""
    for url in re.findall(r"https?://[^\s\"'<>]+", mail_text(message)):
        if fragment in url:
            return str(url)
    raise AssertionError(f"no link with {fragment!r} in: {mail_text(message)!r}")


@pytest.fixture(scope="package")
def outbox() -> Iterator[Outbox]:
    box = Outbox()
    controller = Controller(box, hostname=HOST, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# --- the live server -------------------------------------------------------------------
@dataclass
class Server:
    base: str
    database_url: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=15, trust_env=False)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory, outbox: Outbox) -> Iterator[Server]:
    """`uvicorn todoapp.main:app` on a migrated SQLite file, mailing the catcher."""
    workdir = tmp_path_factory.mktemp("web")
    database_url = f"sqlite:///{workdir / 'web.db'}"
    migrate(database_url)
    port = free_port()
    base = f"http://{HOST}:{port}"
    settings = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ENVIRONMENT": "test",  # not development: the refresh cookie is Secure, as deployed
        "SMTP_HOST": HOST,
        "SMTP_PORT": str(outbox.port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "todoapp@example.com",
        "MAIL_POLL_SECONDS": "0.2",
        "PASSWORD_RESET_URL": f"{base}/#/reset-password?token={{token}}",
        "EMAIL_VERIFY_URL": f"{base}/#/verify-email?token={{token}}",
    }
    live = LiveServer(settings, workdir / "server.log", port=port)
    try:
        live.wait_ready()
        yield Server(base, database_url)
    finally:
        live.stop()


# --- people ----------------------------------------------------------------------------
@dataclass
class Person:
    id: int
    username: str
    email: str
    password: str = PASSWORD

    def token(self, server: Server) -> str:
        with server.api() as api:
            answer = api.post(
                "/auth/token", data={"username": self.username, "password": self.password}
            )
            assert answer.status_code == 200, answer.text
            token: str = answer.json()["access_token"]
            return token


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_person(server: Server) -> Callable[..., Person]:
    """Register someone over HTTP (the UI's own sign-up has its own test)."""

    def make(prefix: str = "user", *, role: str = "user") -> Person:
        username = unique_name(prefix)
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        with server.api() as api:
            answer = api.post("/auth/register", json=body)
        assert answer.status_code == 201, answer.text
        person = Person(answer.json()["id"], username, body["email"])
        if role != "user":
            # As an operator would: straight in the database (create-admin does the same).
            engine = create_engine(server.database_url)
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE users SET role = :role WHERE id = :id"),
                    {"role": role, "id": person.id},
                )
            engine.dispose()
        return person

    return make


# --- the browser -------------------------------------------------------------------------
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
        ],
    )
    yield browser
    browser.close()


FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d{3})")
NETWORK_FAILURE = re.compile(r"^Failed to load resource: net::ERR_")


@dataclass
class Watch:
    """What the pages of one test did that could be wrong; checked when the test ends.

    Chromium logs every 4xx answer as a console error ("Failed to load resource"); a test
    that provokes one on purpose says so with allow(status). Anything else logged as an
    error, any uncaught exception, any 5xx and any request for another host fails.
    """

    origin: tuple[str, str | None, int | None]
    allowed: set[int] = field(default_factory=set)
    network_failures_allowed: bool = False
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_answers: list[tuple[int, str]] = field(default_factory=list)
    other_hosts: list[str] = field(default_factory=list)

    def allow(self, *statuses: int) -> None:
        self.allowed.update(statuses)

    def allow_network_failures(self) -> None:
        self.network_failures_allowed = True

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def on_response(self, response: PlaywrightResponse) -> None:
        if response.status >= 400:
            self.failed_answers.append((response.status, response.url))

    def guard(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if (url.scheme, url.hostname, url.port) == self.origin:
            route.continue_()
        else:
            self.other_hosts.append(route.request.url)
            route.abort("blockedbyclient")

    def problems(self) -> list[str]:
        found = [f"page error: {error}" for error in self.page_errors]
        found += [f"request for another host: {url}" for url in self.other_hosts]
        for status, url in self.failed_answers:
            if status not in self.allowed:  # a 5xx only where a test stands in for one
                found.append(f"unexpected {status} for {url}")
        for text_ in self.console_errors:
            status_match = FAILED_LOAD.match(text_)
            if status_match and int(status_match.group(1)) in self.allowed:
                continue
            if NETWORK_FAILURE.match(text_) and self.network_failures_allowed:
                continue
            found.append(f"console error: {text_}")
        return found


@pytest.fixture
def watch(server: Server) -> Watch:
    url = urlsplit(server.base)
    return Watch(origin=(url.scheme, url.hostname, url.port))


def new_context(browser: Browser, watch: Watch, **options: Any) -> BrowserContext:
    context = browser.new_context(viewport=DESKTOP, **options)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", watch.guard)

    def attach(page: Page) -> None:
        page.on("console", watch.on_console)
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        page.on("response", watch.on_response)

    context.on("page", attach)
    return context


@pytest.fixture
def contexts(browser: Browser, watch: Watch) -> Iterator[Callable[..., BrowserContext]]:
    """New browser contexts (each one a separate device); checked and closed at the end."""
    made: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = new_context(browser, watch, **options)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()
    problems = watch.problems()
    assert not problems, "\n".join(problems)


@pytest.fixture
def context(contexts: Callable[..., BrowserContext]) -> BrowserContext:
    return contexts()


@pytest.fixture
def page(context: BrowserContext, server: Server) -> Page:
    page = context.new_page()
    page.goto(server.base + "/")
    return page


# --- helpers the tests share ------------------------------------------------------------
def sign_in(page: Page, login: str, password: str = PASSWORD) -> None:
    """Sign in through the form; ends on the todos screen."""
    page.get_by_label("Username or email").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("list", name="Todos")).to_be_attached()
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()


def expect_signed_out(page: Page) -> None:
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_have_count(0)


def add_todos(server: Server, person: Person, *titles: str, **fields: Any) -> list[dict[str, Any]]:
    """Todos made over HTTP, for tests about something else than adding."""
    token = person.token(server)
    made = []
    with server.api() as api:
        for title in titles:
            body = {"title": title, "priority": 3, **fields}
            answer = api.post("/todos", json=body, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 201, answer.text
            made.append(answer.json())
    return made


def shoot(page: Page, name: str) -> None:
    """Screenshots of the current screen at desktop and phone widths, in build/web/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(path=SHOTS / f"{name}-{label}.png", full_page=True)
    page.set_viewport_size(size)

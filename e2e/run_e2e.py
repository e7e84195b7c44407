#!/usr/bin/env python3
"""`make e2e`: the API docs in a real, headless Chromium, with every other host cut off.

Migrates a temporary SQLite database, serves the app with uvicorn on 127.0.0.1 (a free
port), registers a user over HTTP, then opens /docs, /redoc and /scalar in Debian's
Chromium driven by Playwright. Any request for another host is aborted and recorded;
the pages must render this API's operations without one. On /docs it logs in through
Swagger UI's Authorize dialog (the OAuth2 password flow) and runs GET /users/me with
"Try it out" -> "Execute". Screenshots go to build/e2e/. Exits non-zero on any problem.

Not a pytest module: tests/ holds the suite, this needs a browser and a live server.
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "e2e"
HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)
USERNAME = "e2e_docs_user"

# Loads the pages' Content-Security-Policy refuses and that the pages do not need.
EXPECTED_REFUSALS = {
    # ReDoc's "API docs by Redocly" sidebar logo; the <img> removes itself on error.
    ("/redoc", "img-src", "https://cdn.redoc.ly/redoc/logo-mini.svg"),
    # Zod's feature probe `Function("")` in Scalar's bundle: without eval, Zod interprets.
    ("/scalar", "script-src", "eval"),
}
# Records every refused load (Chromium's securitypolicyviolation event) for the checks.
CSP_RECORDER = """
window.__refused = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__refused.push([event.effectiveDirective, event.blockedURI]);
});
"""


@dataclass
class Operation:
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str


@dataclass
class Run:
    base: str
    operations: list[Operation]
    password: str
    problems: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        print(f"  FAIL {text}")
        self.problems.append(text)


# --- the server ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    assert url.startswith(f"http://{HOST}:")  # this script talks to its own server only
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextmanager
def server(workdir: Path) -> Iterator[str]:
    """A migrated SQLite database and uvicorn serving the app on it; yields the base URL."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'e2e.db'}",
        SECRET_KEY=secrets.token_urlsafe(48),
        ENVIRONMENT="e2e",
    )
    bin_dir = Path(sys.executable).parent
    subprocess.run(  # noqa: S603 - the venv's alembic, fixed arguments
        [str(bin_dir / "alembic"), "upgrade", "head"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    base = f"http://{HOST}:{port}"
    log_path = OUT / "server.log"
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "todoapp.main:app",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    sys.exit(f"e2e: the server exited ({process.returncode}); see {log_path}")
                try:
                    if http("GET", f"{base}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"e2e: the server was not ready in 30 s; see {log_path}")
                time.sleep(0.2)
            print(f"server up at {base} (log: {log_path.relative_to(ROOT)})")
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def operations_of(base: str) -> list[Operation]:
    status, document = http("GET", f"{base}/openapi.json")
    assert status == 200, status
    return [
        Operation(spec["operationId"], method.upper(), path, spec["summary"], spec["tags"][0])
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    ]


# --- the browser -------------------------------------------------------------------
def launch(playwright: Any) -> Browser:
    if not Path(CHROMIUM).exists():
        sys.exit(f"e2e: {CHROMIUM} is missing: apt-get install -y chromium (make e2e does)")
    browser: Browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    return browser


def isolated_context(browser: Browser, run: Run) -> BrowserContext:
    """A context in which only the app's own origin answers; anything else is aborted."""
    origin = urlsplit(run.base)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)

    def guard(route: Route) -> None:
        url = urlsplit(route.request.url)
        if (url.scheme, url.hostname, url.port) == (origin.scheme, origin.hostname, origin.port):
            route.continue_()
        else:
            run.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)
    context.add_init_script(CSP_RECORDER)
    return context


def open_page(context: BrowserContext, run: Run, path: str) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda error: run.notes.append(f"{path}: page error: {error}"))
    page.on(
        "console",
        lambda message: (
            run.notes.append(f"{path}: console {message.type}: {message.text[:200]}")
            if message.type == "error"
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            run.problem(f"{path}: {response.status} for {response.url}")
            if response.status >= 400 and response.status != 401
            else None
        ),
    )
    response = page.goto(run.base + path, wait_until="load")
    if response is None or response.status != 200:
        run.problem(f"{path}: answered {response.status if response else 'nothing'}")
    return page


def check_refusals(page: Page, run: Run, path: str) -> None:
    for directive, blocked in page.evaluate("window.__refused"):
        if (path, directive, blocked) in EXPECTED_REFUSALS:
            run.notes.append(f"{path}: CSP refused {directive} {blocked} (expected, not needed)")
        else:
            run.problem(f"{path}: CSP refused {directive} {blocked}")


def not_blank(page: Page, run: Run, path: str) -> None:
    text = page.evaluate("document.body.innerText").strip()
    if len(text) < 200:
        run.problem(f"{path}: the page stayed (nearly) blank: {text[:100]!r}")


def wait_for_all_summaries(page: Page, run: Run) -> None:
    page.wait_for_function(
        "summaries => summaries.every(s => document.body.textContent.includes(s))",
        arg=[operation.summary for operation in run.operations],
    )


def check_swagger(context: BrowserContext, run: Run) -> None:
    page = open_page(context, run, "/docs")
    try:
        expect(page.locator(".opblock-summary-path[data-path='/todos']").first).to_be_visible()
        expect(page.locator(".opblock")).to_have_count(len(run.operations))
        wait_for_all_summaries(page, run)
        print(f"  /docs: all {len(run.operations)} operations rendered")
    except (AssertionError, PlaywrightError) as exc:
        run.problem(f"/docs: operations not rendered: {first_line(exc)}")
    not_blank(page, run, "/docs")
    page.screenshot(path=OUT / "docs.png")

    try:
        log_in_with_authorize(page, run)
        call_users_me(page, run)
    except (AssertionError, PlaywrightError) as exc:
        run.problem(f"/docs: Authorize or Try it out failed: {first_line(exc)}")
        page.screenshot(path=OUT / "docs-users-me.png")
    check_refusals(page, run, "/docs")
    page.close()


def log_in_with_authorize(page: Page, run: Run) -> None:
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("auth/token")  # the password flow's token URL
    dialog.locator("#oauth_username").fill(USERNAME)
    dialog.locator("#oauth_password").fill(run.password)
    dialog.locator(".auth-btn-wrapper button.authorize").click()
    errors = dialog.locator(".errors")
    logout = dialog.locator(".auth-btn-wrapper button", has_text="Logout")
    expect(logout.or_(errors)).to_be_visible()
    if errors.count():
        raise AssertionError(f"the token request failed: {errors.first.inner_text()}")
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    expect(dialog).to_be_hidden()
    print("  /docs: logged in through the Authorize dialog")


def call_users_me(page: Page, run: Run) -> None:
    path_label = page.locator(".opblock-summary-path[data-path='/users/me']")
    operation = page.locator(".opblock.opblock-get").filter(has=path_label)
    operation.locator(".opblock-summary-control").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    live = operation.locator(".live-responses-table tr.response")
    expect(live.locator(".response-col_status").first).to_have_text("200")
    expect(live.locator(".response-col_description").first).to_contain_text(
        f'"username": "{USERNAME}"'
    )
    expect(operation.locator(".curl-command")).to_contain_text("Authorization: Bearer ")
    operation.locator(".responses-wrapper").scroll_into_view_if_needed()
    page.screenshot(path=OUT / "docs-users-me.png")
    print("  /docs: GET /users/me via Try it out -> Execute answered 200 with the username")


def check_redoc(context: BrowserContext, run: Run) -> None:
    page = open_page(context, run, "/redoc")
    try:
        wait_for_all_summaries(page, run)
        first = run.operations[0]
        expect(page.locator("h2", has_text=first.summary).first).to_be_visible()
        for operation in run.operations:  # one section per operation of the document
            section = page.locator(f"[data-section-id='operation/{operation.operation_id}']")
            expect(section).to_have_count(1)
        expect(page.get_by_text("/users/me", exact=True).first).to_be_attached()
        print(f"  /redoc: all {len(run.operations)} operation summaries rendered")
    except (AssertionError, PlaywrightError) as exc:
        run.problem(f"/redoc: operations not rendered: {first_line(exc)}")
    not_blank(page, run, "/redoc")
    page.screenshot(path=OUT / "redoc.png")
    check_refusals(page, run, "/redoc")
    page.close()


def check_scalar(context: BrowserContext, run: Run) -> None:
    page = open_page(context, run, "/scalar")
    try:
        tags = list(dict.fromkeys(operation.tag for operation in run.operations))
        first_tag = [op for op in run.operations if op.tag == tags[0]]
        for operation in first_tag:  # the first group is open, its operations listed
            expect(page.get_by_text(operation.summary).first).to_be_visible()
            expect(page.get_by_text(operation.path, exact=True).first).to_be_visible()
        sidebar = page.locator("aside.t-doc__sidebar")
        for tag in tags:
            expect(sidebar.get_by_text(tag, exact=True).first).to_be_visible()
        # Opening another group lists its operations too.
        todos = [op for op in run.operations if op.tag == "todos"]
        sidebar.get_by_text("todos", exact=True).first.click()
        for operation in todos:
            expect(sidebar.get_by_text(operation.summary).first).to_be_visible()
        print(f"  /scalar: groups {', '.join(tags)} and their operations rendered")
    except (AssertionError, PlaywrightError) as exc:
        run.problem(f"/scalar: operations not rendered: {first_line(exc)}")
    not_blank(page, run, "/scalar")
    page.screenshot(path=OUT / "scalar.png")
    check_refusals(page, run, "/scalar")
    page.close()


def first_line(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text[:300]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="todoapp-e2e-") as tmp, server(Path(tmp)) as base:
        password = secrets.token_urlsafe(12)
        status, body = http(
            "POST",
            f"{base}/auth/register",
            {"username": USERNAME, "email": f"{USERNAME}@example.com", "password": password},
        )
        if status != 201:
            sys.exit(f"e2e: registering {USERNAME} answered {status}: {body}")
        run = Run(base=base, operations=operations_of(base), password=password)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            print(f"browser: Chromium {browser.version} ({CHROMIUM}), other hosts blocked")
            context = isolated_context(browser, run)
            for check in (check_swagger, check_redoc, check_scalar):
                check(context, run)
            context.close()
            browser.close()

    for note in run.notes:
        print(f"  note: {note}")
    for url in run.blocked:
        run.problem(f"a page asked another host for {url} (aborted)")
    shots = ", ".join(sorted(path.name for path in OUT.glob("*.png")))
    print(f"screenshots in {OUT.relative_to(ROOT)}/: {shots}")
    if run.problems:
        print(f"e2e: FAILED, {len(run.problems)} problem(s):")
        for problem in run.problems:
            print(f"  - {problem}")
        return 1
    print("e2e: OK: /docs, /redoc and /scalar rendered with no other host reachable")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The web front end as files and headers: served at /, strict policy, nothing off-site."""

import re
import subprocess
import sys
from html.parser import HTMLParser

from fastapi.testclient import TestClient

from tests.conftest import ROOT
from todoapp.frontend import WEB_DIR

OFF_SITE = re.compile(r"\b[a-z][a-z0-9+.-]*://|(?<![\w:/])//[\w.-]", re.IGNORECASE)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_root_serves_the_page_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "<title>todoapp</title>" in page.text


def test_page_has_no_inline_script_handler_or_style() -> None:
    parser = _Tags()
    parser.feed((WEB_DIR / "index.html").read_text())
    assert parser.inline_scripts == 0
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/web/js/app.js"}]
    for tag, attrs in parser.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "style"], tag


def test_web_files_name_no_other_host_and_build_nothing() -> None:
    files = sorted(p for p in WEB_DIR.rglob("*") if p.is_file())
    assert {p.suffix for p in files} <= {".html", ".css", ".js", ".svg"}
    for path in files:
        text = path.read_text()
        if path.suffix == ".svg":
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not OFF_SITE.search(text), f"{path.name}: {OFF_SITE.search(text)}"
        # The page is assembled from data without parsing it as HTML.
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
            assert unsafe not in text, f"{path.name}: {unsafe}"


def test_every_web_file_is_served(client: TestClient) -> None:
    kinds = {".css": "text/css", ".js": "javascript", ".svg": "image/svg+xml"}
    for path in WEB_DIR.rglob("*"):
        if path.suffix not in kinds:
            continue
        url = "/web/" + path.relative_to(WEB_DIR).as_posix()
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert kinds[path.suffix] in answer.headers["content-type"], url
        assert answer.headers["cache-control"] == "no-cache"
    assert client.get("/web/js/missing.js").status_code == 404


def test_page_and_files_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/web")]


def test_uvicorn_main_app_from_the_repository_root() -> None:
    # `uvicorn main:app` imports main.py from the working directory: the same app.
    code = "import main, todoapp.main; assert main.app is todoapp.main.app; print(main.app.title)"
    env = {"ENVIRONMENT": "development", "DATABASE_URL": "sqlite:///:memory:", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "todoapp"

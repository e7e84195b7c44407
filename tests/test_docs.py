"""/docs, /redoc and /scalar: served from shipped assets, loading nothing from another host."""

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from todoapp.docs import DOCS_ASSETS

DOCS_PAGES = ["/docs", "/redoc", "/scalar"]
# How each page tells its renderer where the OpenAPI document is.
SPEC_REFERENCE = {
    "/docs": "url: '/openapi.json'",
    "/redoc": 'spec-url="/openapi.json"',
    "/scalar": '"url": "/openapi.json"',
}
# Any scheme-qualified or protocol-relative URL: the pages have none, not even harmless ones.
OFF_SITE = re.compile(r"\b[a-z][a-z0-9+.-]*://|(?<![\w:/])//[\w.-]", re.IGNORECASE)
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """The URLs a page makes the browser fetch: src= and href= of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def referenced_urls(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def versions() -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((DOCS_ASSETS / "versions.json").read_text())
    return data


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_page_is_html(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<script" in response.text


@pytest.mark.parametrize("path", [*DOCS_PAGES, "/docs/oauth2-redirect"])
def test_docs_page_names_no_other_host(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert OFF_SITE.findall(html) == []
    for url in referenced_urls(html):
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert url.startswith("/static/docs/"), url


@pytest.mark.parametrize("path", [*DOCS_PAGES, "/docs/oauth2-redirect"])
def test_docs_page_policy_keeps_the_browser_on_this_origin(client: TestClient, path: str) -> None:
    response = client.get(path)
    directives = response.headers["content-security-policy"].split(";")
    policy = {name: sources for name, *sources in (part.split() for part in directives)}
    assert policy["default-src"] == ["'self'"]
    allowed = {"'self'", "'none'", "data:", "blob:"}
    for name, sources in policy.items():
        for source in sources:
            inline_style = name == "style-src" and source == "'unsafe-inline'"
            assert source in allowed or source.startswith("'sha256-") or inline_style, source
    # Without eval or 'unsafe-inline', each inline script runs only if its hash is listed.
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in inline
    ]
    assert sorted(hashes) == sorted(s for s in policy["script-src"] if s.startswith("'sha256-"))


@pytest.mark.parametrize("path", [*DOCS_PAGES, "/docs/oauth2-redirect"])
def test_every_asset_a_page_references_is_served(client: TestClient, path: str) -> None:
    urls = referenced_urls(client.get(path).text)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kind = CONTENT_TYPES[Path(urlsplit(url).path).suffix]
        assert kind in response.headers["content-type"], (url, response.headers["content-type"])
        assert len(response.content) > 0


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_page_renders_this_apps_openapi_document(client: TestClient, path: str) -> None:
    assert SPEC_REFERENCE[path] in client.get(path).text


def test_openapi_json_is_the_document_without_the_docs_routes(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "todoapp"
    assert {"/auth/token", "/users/me", "/todos"} <= set(document["paths"])
    hidden = {"/docs", "/docs/oauth2-redirect", "/redoc", "/scalar"}
    assert hidden.isdisjoint(document["paths"])
    assert not any(path.startswith("/static") for path in document["paths"])


def test_swagger_authorize_uses_the_password_flow_at_auth_token(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in html
    assert "ui.initOAuth(" in html
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    token_urls = [
        scheme["flows"]["password"]["tokenUrl"]
        for scheme in schemes.values()
        if scheme["type"] == "oauth2"
    ]
    assert token_urls
    for token_url in token_urls:  # Swagger UI resolves it against the page's origin
        assert urlsplit(urljoin("http://127.0.0.1/docs", token_url)).path == "/auth/token"
    login = client.post("/auth/token", data={"username": "nobody", "password": "password123"})
    assert login.status_code == 401  # the route is there and takes the form


def test_swagger_oauth2_redirect_page(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert referenced_urls(response.text) == ["/static/docs/swagger-ui/oauth2-redirect.js"]


def test_swagger_ui_skips_the_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_scalar_has_telemetry_fonts_and_agent_off(client: TestClient) -> None:
    html = client.get("/scalar").text
    match = re.search(r'createApiReference\("#app", (\{.*\})\)', html)
    assert match is not None
    config = json.loads(match[1])
    assert config["telemetry"] is False
    assert config["withDefaultFonts"] is False
    assert config["agent"] == {"disabled": True}
    assert "proxyUrl" not in config


def test_docs_follow_root_path(app: FastAPI) -> None:
    with TestClient(app, root_path="/api") as client:
        html = client.get("/docs").text
    assert "url: '/api/openapi.json'" in html
    assert "window.location.origin + '/api/docs/oauth2-redirect'" in html
    assert "/api/static/docs/swagger-ui/swagger-ui-bundle.js" in referenced_urls(html)


def test_unknown_asset_is_a_json_404_and_writing_one_a_405(client: TestClient) -> None:
    missing = client.get("/static/docs/swagger-ui/missing.js")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    assert client.get("/static/docs/..%2f..%2fconfig.py").status_code == 404
    written = client.post("/static/docs/swagger-ui/swagger-ui.css")
    assert written.status_code == 405
    assert written.json() == {"detail": "Method Not Allowed"}
    assert written.headers["allow"] == "GET, HEAD"


# --- the shipped files themselves (no database needed) ---------------------------
def test_shipped_bundles_are_the_pinned_majors() -> None:
    pinned = {record["name"]: str(record["version"]) for record in versions().values()}
    assert pinned.keys() == {"swagger-ui-dist", "redoc", "@scalar/api-reference"}
    assert pinned["swagger-ui-dist"].startswith("5.")  # Swagger UI 5 reads OpenAPI 3.1
    assert pinned["redoc"].startswith("2.")


def test_shipped_files_match_versions_json_and_nothing_else_is_shipped() -> None:
    listed = set()
    for folder, record in versions().items():
        files = record["files"]
        assert isinstance(files, dict)
        for name, sha256 in files.items():
            path = DOCS_ASSETS / folder / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, path
            listed.add(path)
    on_disk = {p for p in DOCS_ASSETS.rglob("*") if p.is_file() and p.name != "versions.json"}
    assert on_disk == listed


@pytest.mark.parametrize(
    ("folder", "licence_files", "says"),
    [
        ("swagger-ui", ["LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"], "Apache License"),
        ("redoc", ["LICENSE", "redoc.standalone.js.LICENSE.txt"], "MIT License"),
        ("scalar", ["LICENSE"], "MIT License"),
    ],
)
def test_licence_files_ship_beside_each_bundle(
    folder: str, licence_files: list[str], says: str
) -> None:
    for name in licence_files:
        assert (DOCS_ASSETS / folder / name).stat().st_size > 0
    assert says in (DOCS_ASSETS / folder / "LICENSE").read_text()
    declared = versions()[folder]["license"]
    assert {"Apache License": "Apache-2.0", "MIT License": "MIT"}[says] == declared

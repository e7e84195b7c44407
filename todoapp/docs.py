"""The API docs (/docs, /redoc, /scalar), served from assets shipped in todoapp/static/docs.

No page loads anything from another host: no CDN, no web fonts, no telemetry, so the
docs work on a machine with no internet access. Each page also carries a
Content-Security-Policy that keeps the browser on this origin, which stops what the
bundles would still reach for by themselves (ReDoc's sidebar logo on cdn.redoc.ly).
scripts/fetch_docs_assets.py re-fetches the pinned bundles from npm and records their
versions in static/docs/versions.json.
"""

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from scalar_fastapi import AgentScalarConfig, get_scalar_api_reference

from todoapp.static_files import CompressedStaticFiles

DOCS_ASSETS = Path(__file__).resolve().parent / "static" / "docs"
STATIC_PREFIX = "/static/docs"
SWAGGER_OAUTH2_REDIRECT = "/docs/oauth2-redirect"

SWAGGER_JS = f"{STATIC_PREFIX}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_PREFIX}/swagger-ui/swagger-ui.css"
SWAGGER_REDIRECT_JS = f"{STATIC_PREFIX}/swagger-ui/oauth2-redirect.js"
FAVICON = f"{STATIC_PREFIX}/swagger-ui/favicon-32x32.png"
REDOC_JS = f"{STATIC_PREFIX}/redoc/redoc.standalone.js"
SCALAR_JS = f"{STATIC_PREFIX}/scalar/standalone.js"

SWAGGER_UI_PARAMETERS = {
    # Swagger UI's default sends the document to validator.swagger.io: another host.
    "validatorUrl": None,
    "displayRequestDuration": True,
}

# Same origin only. Inline scripts are allowed by hash, page by page; the bundles inject
# inline styles, and ReDoc runs its search index in a blob: worker. No page may be
# framed by another (clickjacking).
_CSP = (
    "default-src 'self'; script-src 'self'{script_hashes}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def same_origin_only(page: HTMLResponse) -> HTMLResponse:
    """Add the Content-Security-Policy that keeps the page's every load on this origin."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = _CSP.format(script_hashes=hashes)
    return page


def _root(request: Request) -> str:
    """The path prefix the app is mounted under (behind a proxy), without a trailing slash."""
    root_path: str = request.scope.get("root_path", "")
    return root_path.rstrip("/")


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI, ReDoc and Scalar from local assets; none of them in the schema."""
    if app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    title = app.title
    # Compressed when the browser accepts it, with caching headers (static_files.py).
    app.mount(STATIC_PREFIX, CompressedStaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=root + SWAGGER_JS,
            swagger_css_url=root + SWAGGER_CSS,
            swagger_favicon_url=root + FAVICON,
            oauth2_redirect_url=root + SWAGGER_OAUTH2_REDIRECT,
            # Authorize logs in with the password flow at the scheme's tokenUrl (auth/token);
            # this API has no OAuth2 client id and no scopes to pre-select.
            init_oauth={"appName": title},
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        return same_origin_only(page)

    @app.get(SWAGGER_OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_oauth2_redirect(request: Request) -> HTMLResponse:
        # swagger-ui-dist's own oauth2-redirect.html, with its script's path made absolute.
        script = _root(request) + SWAGGER_REDIRECT_JS
        return same_origin_only(
            HTMLResponse(
                '<!doctype html>\n<html lang="en-US">\n<head><title>Swagger UI: OAuth2 Redirect'
                f'</title></head>\n<body>\n<script src="{script}"></script>\n</body>\n</html>\n'
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=root + REDOC_JS,
            redoc_favicon_url=root + FAVICON,
            with_google_fonts=False,
        )
        return same_origin_only(page)

    @app.get("/scalar", include_in_schema=False)
    async def scalar(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_scalar_api_reference(
            openapi_url=root + openapi_url,
            title=f"{title} - Scalar",
            scalar_js_url=root + SCALAR_JS,
            scalar_favicon_url=root + FAVICON,
            with_default_fonts=False,
            telemetry=False,
            # Agent Scalar is an AI chat served by scalar.com; the request proxy stays unset.
            agent=AgentScalarConfig(disabled=True),
            show_developer_tools="never",
        )
        return same_origin_only(page)

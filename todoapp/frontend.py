"""The web front end: todoapp/web, served at / (its page) and /web/ (its files).

Plain HTML, CSS and JavaScript modules with no build step and nothing from another
host. It is a client of the public HTTP API like any other: it imports nothing from the
app and the app imports nothing from it. Its page gets a Content-Security-Policy that
allows scripts, styles and requests from this origin only, and never a frame.
"""

import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_PREFIX = "/web"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# No build step means no hashed file names: browsers ask again each time (a 304 when
# the file is unchanged), so a new release is never mixed with cached old modules.
REVALIDATE = "no-cache"


class WebFiles(StaticFiles):
    """The front end's files, each revalidated on use."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = REVALIDATE
        return response


def install_frontend(app: FastAPI) -> None:
    """Serve the page at / and its files under /web; neither is in the OpenAPI document."""
    app.mount(WEB_PREFIX, WebFiles(directory=WEB_DIR), name="web")
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": REVALIDATE,
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)

"""The web front end: todoapp/web, served at / (its page) and /web/ (its files).

Plain HTML, CSS and JavaScript modules with no build step and nothing from another
host. It is a client of the public HTTP API like any other: it imports nothing from the
app and the app imports nothing from it. Its page gets a Content-Security-Policy that
allows scripts, styles and requests from this origin only, and never a frame.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from todoapp.static_files import CompressedStaticFiles

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


def install_frontend(app: FastAPI) -> None:
    """Serve the page at / and its files under /web; neither is in the OpenAPI document."""
    files = CompressedStaticFiles(directory=WEB_DIR, cache_control=REVALIDATE)
    app.mount(WEB_PREFIX, files, name="web")
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": REVALIDATE,
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)

"""Static assets with caching headers, and large text ones gzip-compressed when accepted.

The docs bundles are megabytes of JavaScript; compressed they are a quarter of that.
Each file is compressed once (in a worker thread, then kept in memory until it changes)
and sent with `Content-Encoding: gzip` to clients whose Accept-Encoding allows it;
others, and range requests, get the file as it is. Every answer carries Cache-Control,
an ETag (the compressed one its own) and Last-Modified, so a browser revalidates with
a 304 instead of downloading again.
"""

import gzip
import os
from pathlib import Path

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

COMPRESSIBLE = frozenset(
    {
        "text/html",
        "text/css",
        "text/javascript",
        "text/plain",
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "image/svg+xml",
    }
)
MIN_COMPRESSED_SIZE = 1024  # smaller ones gain too little to be worth the header
CACHE_CONTROL = "public, max-age=3600"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip`, `*`, not with q=0)."""
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        allowed[coding.strip().lower()] = quality > 0
    return allowed.get("gzip", allowed.get("*", False))


class CompressedStaticFiles(StaticFiles):
    def __init__(
        self,
        *,
        directory: str | os.PathLike[str],
        cache_control: str = CACHE_CONTROL,
        min_size: int = MIN_COMPRESSED_SIZE,
    ) -> None:
        super().__init__(directory=directory)
        self.cache_control = cache_control
        self.min_size = min_size
        self._gzipped: dict[tuple[str, int, int], bytes] = {}

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code not in (200, 304):
            return response
        response.headers["cache-control"] = self.cache_control
        if not isinstance(response, FileResponse):
            return response  # a 304 for the file as it is
        media_type = (response.media_type or "").split(";")[0].strip()
        stat_result = response.stat_result
        if media_type not in COMPRESSIBLE or stat_result is None:
            return response
        if stat_result.st_size < self.min_size:
            return response
        response.headers["vary"] = "Accept-Encoding"
        request_headers = Headers(scope=scope)
        if "range" in request_headers or not accepts_gzip(
            request_headers.get("accept-encoding", "")
        ):
            return response
        body = await anyio.to_thread.run_sync(self._compressed, Path(response.path), stat_result)
        headers = {
            "cache-control": self.cache_control,
            "vary": "Accept-Encoding",
            "content-encoding": "gzip",
            "last-modified": response.headers["last-modified"],
            "etag": response.headers["etag"].removesuffix('"') + '-gzip"',
        }
        compressed = Response(body, media_type=response.media_type, headers=headers)
        if self.is_not_modified(compressed.headers, request_headers):
            return NotModifiedResponse(compressed.headers)
        return compressed

    def _compressed(self, path: Path, stat_result: os.stat_result) -> bytes:
        key = (str(path), stat_result.st_mtime_ns, stat_result.st_size)
        body = self._gzipped.get(key)
        if body is None:
            # mtime=0: the same bytes every time, so the ETag means the same content.
            body = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
            self._gzipped = {k: v for k, v in self._gzipped.items() if k[0] != key[0]}
            self._gzipped[key] = body
        return body

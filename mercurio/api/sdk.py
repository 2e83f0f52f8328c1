"""GET /sdk/mercurio.js (and the modules it imports) and /sdk/mercurio.d.ts: the JS SDK.

The files are clients/js's, copied into mercurio/sdk/ so that a wheel ships them; the copy is
kept identical by tests/test_sdk.py. Any origin may load them: they are public code, the
same for every caller, and carry no secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, PathLike, StaticFiles
from starlette.types import Scope

from mercurio.api.errors import ApiError

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
# .ts is video/mp2t to Python's mimetypes; TypeScript has no registered type, this is the usual one.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".d.ts": "application/typescript; charset=utf-8",
}
# Short, and revalidated by ETag: a deploy's new SDK reaches the embedding pages in minutes.
CACHE_CONTROL = "public, max-age=300, must-revalidate"
CROSS_ORIGIN = {
    "access-control-allow-origin": "*",
    "cross-origin-resource-policy": "cross-origin",
}


def media_type(path: str) -> str | None:
    """The content type of an SDK file, None for anything else (not served)."""
    for suffix, kind in MEDIA_TYPES.items():
        if path.endswith(suffix):
            return kind
    return None


class SdkFiles(StaticFiles):
    """StaticFiles for the SDK's directory: only .js and .d.ts, with cache and CORS headers."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        kind = media_type(str(full_path))
        if kind is None:
            raise ApiError(404, "not found")
        response = FileResponse(
            full_path, status_code=status_code, stat_result=stat_result, media_type=kind
        )
        response.headers["cache-control"] = CACHE_CONTROL
        response.headers.update(CROSS_ORIGIN)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            not_modified = NotModifiedResponse(response.headers)
            not_modified.headers.update(CROSS_ORIGIN)
            return not_modified
        return response

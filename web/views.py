"""Serves the built single-page app: one index.html for every page, with a CSRF cookie set."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET


@lru_cache(maxsize=4)
def _index_html(path: Path, mtime: float) -> str:
    return path.read_text(encoding="utf-8")


@require_GET
@ensure_csrf_cookie
def spa(request: HttpRequest) -> HttpResponse:
    index = Path(settings.FRONTEND_DIST) / "index.html"
    if not index.is_file():
        return HttpResponse(
            "The web UI is not built. Run `make demo` (or `cd frontend && npm ci && npm run "
            "build`) with Node.js installed.",
            status=503,
            content_type="text/plain",
        )
    response = HttpResponse(_index_html(index, index.stat().st_mtime))
    response["Cache-Control"] = "no-cache"
    return response

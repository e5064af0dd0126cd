"""Security headers on every answer: a Content-Security-Policy that fits the officer page,
no MIME sniffing, no framing, no referrer, no caching of API answers.

Why: the page shows text that stations wrote (manifests, ids) next to a session that can
sign reviews; the CSP is the second wall behind the page's own escaping (``util.el`` never
parses HTML), so an injected script still cannot run, load from elsewhere or post to
another site. ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` stop click-jacking
of the review buttons. API answers hold scan results and login tokens: ``no-store``
unless a route chose its own caching (tiles, images).

The page needs nothing inline but two things it does not control the text of, each allowed
by its hash alone (computed from the files at start, so an edit of the page cannot silently
break it): the queue form's ``onsubmit="return false"`` attribute (``'unsafe-hashes'``
with that hash only) and the one ``<style>`` OpenSeadragon inserts for touch screens.
Swagger UI (``/docs``, its files served from this machine under ``/docs/assets``) starts
with an inline script; it gets only the framing and sniffing headers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import lru_cache
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeadersMiddleware", "page_csp"]

STATIC_DIR = Path(__file__).with_name("static")
OSD_JS = STATIC_DIR / "vendor" / "openseadragon" / "openseadragon.min.js"
DOCS_PATHS = ("/docs",)
_HANDLER = re.compile(r"\son[a-z]+\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
_OSD_STYLE = re.compile(r'data-openseadragon-mobile-css","true"\);\w+\.textContent="([^"]*)"')


def _sha(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@lru_cache(maxsize=4)
def page_csp(static_dir: Path = STATIC_DIR, osd_js: Path = OSD_JS) -> str:
    """The Content-Security-Policy of the page and everything else the service answers."""
    try:
        page = (static_dir / "index.html").read_text(encoding="utf-8")
    except OSError:
        page = ""
    handlers = sorted({_sha(html.unescape(v)) for v in _HANDLER.findall(page)})
    try:
        found = _OSD_STYLE.search(osd_js.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        found = None
    styles = [_sha(found.group(1))] if found else []
    script = ["'self'", *(["'unsafe-hashes'", *handlers] if handlers else [])]
    return "; ".join(
        [
            "default-src 'self'",
            "script-src " + " ".join(script),
            "style-src " + " ".join(["'self'", *styles]),
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    """Adds the headers to every HTTP answer (a header a route set itself is kept)."""

    def __init__(self, app: ASGIApp, *, api_prefix: str = "/api/") -> None:
        self.app = app
        self.api_prefix = api_prefix
        self.csp = page_csp()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path.startswith(DOCS_PATHS)
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault(
                    "Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=()"
                )
                headers.setdefault(
                    "Content-Security-Policy", "frame-ancestors 'none'" if docs else self.csp
                )
                if https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
                if path.startswith(self.api_prefix) and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)

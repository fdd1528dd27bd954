"""Headers every response carries: no caching of API answers, and the usual hardening.

API responses hold tokens and financial data: ``Cache-Control: no-store`` keeps them out of
browser and proxy caches. The rest stops sniffing, framing and referrer leaks; HSTS is sent
when Dashtam is served over https (``DASHTAM_PUBLIC_URL``). The OpenAPI pages load scripts
from a CDN, so they get no ``Content-Security-Policy``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_API_ONLY = (
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


class SecurityHeaders:
    """Pure ASGI middleware (no response buffering): adds headers the app did not set."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        added = list(_ALWAYS)
        if not path.startswith(_DOCS_PATHS):
            added += _API_ONLY
        if self.https:
            added.append(_HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in added if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

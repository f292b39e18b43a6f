"""Headers every answer carries, and the Content-Security-Policy of the app's own HTML pages.

:class:`SecurityHeaders` is a pure ASGI layer, outermost, so the claim poll's fast path gets the
same headers as the FastAPI routes. A response that sets one of these headers itself keeps its
own value: the HTML pages (``/ops``, ``/docs``) set a CSP that allows exactly their inline
script and style (by hash), the docs assets a public cache lifetime. Everything else is JSON or
text that nothing should frame, sniff, cache or follow: ``default-src 'none'``, ``no-store``
(codes, cardExts, session tokens are in these bodies). uvicorn runs without its ``Server``
banner (``cardpipe api``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_DEFAULTS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", API_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_INLINE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("script", "style")}


def _hashes(html: str, tag: str) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii") + "'"
        for body in _INLINE[tag].findall(html)
    )


def page_csp(html: str, *, style_src: str | None = None, img_src: str = "'self' data:") -> str:
    """The CSP of one of the app's HTML pages: its inline scripts (and styles, unless
    ``style_src`` is given) allowed by hash, everything else from this origin only."""
    scripts = _hashes(html, "script")
    styles = style_src if style_src is not None else _hashes(html, "style")
    return (
        f"default-src 'none'; script-src 'self' {scripts}; style-src 'self' {styles}; img-src {img_src}; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


class SecurityHeaders:
    """Adds the default headers to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in _DEFAULTS if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

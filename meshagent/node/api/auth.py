"""Bearer tokens for the API when it listens beyond loopback.

On loopback only this machine's users can connect, so no token is needed (web
pages are kept out by :mod:`.guard`). Any other bind requires
``Authorization: Bearer <token>``. Only the dashboard's event stream
(``GET /api/events``) may carry it as ``?token=`` instead, because a browser's
``EventSource`` cannot send headers; anywhere else a query token is ignored, so
it does not spread into links, logs and histories. The page and its static
assets hold no data and are served without a token.
The token comes from ``[api] token`` or is generated once into
``<data dir>/api.token`` with mode 0600.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from meshagent.node.api.errors import error_body

__all__ = ["TOKEN_FILE", "QUERY_TOKEN_PATH", "is_loopback", "load_or_create_token", "BearerAuth"]

TOKEN_FILE: Final = "api.token"
QUERY_TOKEN_PATH: Final = "/api/events"
"""The one route that accepts ``?token=``: an ``EventSource`` cannot send an Authorization header."""


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def load_or_create_token(data_dir: Path, configured: str) -> str:
    """The configured token, else the one in ``<data dir>/api.token`` (created 0600 when missing)."""
    if configured:
        return configured
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = "mesh-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


class BearerAuth:
    """ASGI middleware: refuse HTTP requests without the token (401, OpenAI error object)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    def _presented(self, scope: Scope) -> bytes:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return bytes(value[7:].strip())
        if scope.get("method") != "GET" or scope.get("path") != QUERY_TOKEN_PATH:
            return b""
        raw: bytes = scope.get("query_string", b"")
        query = parse_qs(raw.decode("latin-1"))
        return query.get("token", [""])[0].encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        public = path == "/" or path.startswith("/static/")
        if scope["type"] == "http" and not public and not secrets.compare_digest(self._presented(scope), self._token):
            body = json.dumps(error_body("missing or wrong API key: send 'Authorization: Bearer <token>' "
                                         "(the token is in <data dir>/api.token; only /api/events takes ?token=)",
                                         type="invalid_request_error", code="invalid_api_key")).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)

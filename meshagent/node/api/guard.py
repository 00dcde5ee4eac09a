"""The API's front door against web pages: Host allow-list, same origin only, JSON bodies only, bounded bodies.

A page open in the user's browser can reach the loopback API in two ways:

* a cross-site request: the browser sends it with the page's ``Origin``; a form
  post or a ``text/plain`` fetch needs no CORS preflight, so without checks it
  would start agents even though the page cannot read the answer;
* DNS rebinding: a name the attacker controls is re-pointed at ``127.0.0.1``,
  so the page is "same origin" to the browser and reads every answer, but the
  ``Host`` header still carries the attacker's name.

So every request must name this node in ``Host`` (:class:`HostAllowList`), one
that carries an ``Origin`` must come from the node's own origin, and a body must
be declared ``application/json``. A body is counted as it arrives and refused
at ``[api] max_body_bytes``: a declared ``Content-Length`` past the cap at once,
a chunked body at the chunk that crosses it, never buffered past the cap.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final
from urllib.parse import urlsplit

import psutil
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshagent.node.api.errors import ApiError, error_body

__all__ = ["HostAllowList", "RequestGuard", "split_host", "LOOPBACK_NAMES"]

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REFRESH_S: Final = 5.0


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header (or an origin's netloc) → (lowercase name or address, port); None when malformed.

    IPv6 literals come back without their brackets (``[::1]:4780`` → ``("::1", 4780)``)."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        try:
            ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            return None
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text_raw = value.rpartition(":")
        if not sep:
            name, port_text = value, None
        else:
            port_text = port_text_raw
        if ":" in name:
            return None  # an unbracketed IPv6 address is not a valid Host
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
    name = name.rstrip(".")
    if not name:
        return None
    return name, None if port_text is None else int(port_text)


def _machine_addresses() -> frozenset[str]:
    """Every address of this machine's interfaces (IPv6 without a zone)."""
    out: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(a.address.split("%", 1)[0].lower())
    return frozenset(out)


class HostAllowList:
    """The names a request may give in ``Host``, with any port.

    Always the loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) and the
    configured bind address or name, plus ``[api] allowed_hosts``. A wildcard bind
    (``0.0.0.0``, ``::``) serves the LAN under this machine's own addresses and host
    name, so those are allowed too (the addresses re-read when an unknown literal
    arrives, at most every few seconds, as DHCP may change them). The port is not
    checked: a rebinding page cannot choose the name, and a forwarded port
    (``ssh -L 9000:localhost:4780``) legitimately changes the port.
    """

    def __init__(self, bind: str, extra: Iterable[str] = (), *,
                 addresses: Callable[[], frozenset[str]] = _machine_addresses,
                 clock: Callable[[], float] = time.monotonic) -> None:
        names = set(LOOPBACK_NAMES)
        bind_name = bind.strip().strip("[]").lower()
        self.wildcard = bind_name in _WILDCARDS
        if not self.wildcard:
            names.add(bind_name)
        else:
            host = socket.gethostname().lower()
            names.update({host, f"{host}.local"})
        for name in extra:
            parsed = split_host(name)
            if parsed is not None:
                names.add(parsed[0])
        self.names = frozenset(names)
        self._addresses = addresses
        self._clock = clock
        self._machine: frozenset[str] = frozenset()
        self._read_at = -_REFRESH_S

    def _is_machine_address(self, name: str) -> bool:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        if name in self._machine:
            return True
        now = self._clock()
        if now - self._read_at >= _REFRESH_S:
            self._machine, self._read_at = self._addresses(), now
        return name in self._machine

    def allows(self, host_header: str) -> bool:
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name = parsed[0]
        return name in self.names or (self.wildcard and self._is_machine_address(name))


def _same_origin(origin: str, host_header: str) -> bool:
    """Whether ``origin`` is ``http://<the Host this request names>`` (the API speaks plain HTTP)."""
    parts = urlsplit(origin.strip())
    if parts.scheme != "http" or parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        return False
    mine, theirs = split_host(host_header), split_host(parts.netloc)
    if mine is None or theirs is None:
        return False
    return mine[0] == theirs[0] and (mine[1] or 80) == (theirs[1] or 80)


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", []) if k == name]


async def _refuse(send: Send, error: ApiError, *, close: bool = False) -> None:
    body = json.dumps(error_body(error.message, type=error.type, param=error.param, code=error.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware, outermost: refuse what a web page could send, and bound every body."""

    def __init__(self, app: ASGIApp, hosts: HostAllowList, max_body_bytes: int) -> None:
        self._app = app
        self._hosts = hosts
        self._max_body = max_body_bytes

    def _check(self, scope: Scope) -> ApiError | None:
        """The first reason to refuse this request before reading any of its body, or None."""
        hosts = _header(scope, b"host")
        if len(hosts) != 1 or not self._hosts.allows(hosts[0]):
            named = hosts[0] if len(hosts) == 1 else "(missing)" if not hosts else "(several)"
            return ApiError(403, f"the Host header {named[:100]!r} does not name this node; a name you use for it "
                            "belongs in [api] allowed_hosts", code="host_not_allowed")
        for origin in _header(scope, b"origin"):
            if not _same_origin(origin, hosts[0]):
                return ApiError(403, f"requests from other origins ({origin[:100]!r}) are refused: "
                                "only this node's own dashboard may call it from a browser", code="origin_not_allowed")
        if scope["method"] in _BODY_METHODS:
            types = _header(scope, b"content-type")
            media = types[0].split(";", 1)[0].strip().lower() if len(types) == 1 else ""
            if media != "application/json":
                return ApiError(415, "the request body must be JSON sent with 'Content-Type: application/json'",
                                code="unsupported_media_type")
        for declared in _header(scope, b"content-length"):
            if declared.strip().isdigit() and int(declared) > self._max_body:
                return self._too_large()
        return None

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self._max_body} bytes", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refused = self._check(scope)
        if refused is not None:
            await _refuse(send, refused, close=True)
            return
        seen = 0

        async def counted() -> Message:
            # A chunked body is refused at the chunk that crosses the cap: the reader (a route's
            # request.body()) gets the 413 as an exception and never holds more than the cap.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max_body:
                    raise self._too_large()
            return message

        await self._app(scope, counted, send)

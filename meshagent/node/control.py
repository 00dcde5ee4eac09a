"""The node's local control API: JSON lines over a unix socket in the data dir.

Only the owner can use it: the socket and a random token file are created
with mode 0600 inside the data dir (itself 0700), and every request must carry
the token. The CLI is a client of this API; so are tests.

Wire format, one JSON object per line::

    request   {"token": "...", "op": "peers", "params": {...}}
    events    {"event": {...}}            zero or more, for long operations
    response  {"ok": true, "result": {...}}
           or {"ok": false, "error": "message", "type": "ErrorClass"}

Handlers are ``async def handler(params, emit) -> dict`` registered by op name;
``emit(event)`` streams an event line to the client (progress bars).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from meshagent.errors import ControlError, MeshError, NodeNotRunning

__all__ = [
    "SOCKET_NAME",
    "TOKEN_NAME",
    "Handler",
    "Emit",
    "ControlServer",
    "call",
    "call_streaming",
]

log = logging.getLogger(__name__)

SOCKET_NAME: Final = "control.sock"
TOKEN_NAME: Final = "control.token"
_MAX_REQUEST: Final = 1 << 20

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Emit], Awaitable[dict[str, Any]]]


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(path, 0o600)


class ControlServer:
    """Serves registered handlers on ``<data_dir>/control.sock``."""

    def __init__(self, data_dir: Path, handlers: Mapping[str, Handler]) -> None:
        self._dir = data_dir
        self._handlers = dict(handlers)

    def add(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock_path = self._dir / SOCKET_NAME
        token = secrets.token_hex(32)
        _write_private(self._dir / TOKEN_NAME, token)
        if sock_path.exists() or sock_path.is_symlink():
            sock_path.unlink()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(sock_path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(lambda s: self._serve_one(s, token), [listener], handler_nursery=nursery)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            for name in (SOCKET_NAME, TOKEN_NAME):
                try:
                    (self._dir / name).unlink()
                except FileNotFoundError:
                    pass

    async def _serve_one(self, stream: trio.SocketStream, token: str) -> None:
        async with stream:
            try:
                line = await _read_line(stream)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ControlError("request must be a JSON object")
                if not secrets.compare_digest(str(request.get("token", "")), token):
                    raise ControlError("bad control token")
                op = request.get("op")
                handler = self._handlers.get(op) if isinstance(op, str) else None
                if handler is None:
                    raise ControlError(f"unknown operation {op!r}")
                params = request.get("params") or {}
                if not isinstance(params, dict):
                    raise ControlError("params must be a JSON object")

                async def emit(event: dict[str, Any]) -> None:
                    await stream.send_all(_line({"event": event}))

                result = await handler(params, emit)
                await stream.send_all(_line({"ok": True, "result": result}))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except (MeshError, ValueError) as exc:
                await _send_error(stream, exc)
            except Exception as exc:  # task boundary: one bad request must not stop the node
                log.exception("control request failed")
                await _send_error(stream, exc)


async def _send_error(stream: trio.SocketStream, exc: BaseException) -> None:
    try:
        await stream.send_all(_line({"ok": False, "error": str(exc), "type": type(exc).__name__}))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > _MAX_REQUEST:
            raise ControlError("request too large")
    return bytes(buf.split(b"\n", 1)[0])


def _connect(data_dir: Path) -> tuple[socket.socket, str]:
    sock_path = data_dir / SOCKET_NAME
    try:
        token = (data_dir / TOKEN_NAME).read_text().strip()
    except FileNotFoundError as exc:
        raise NodeNotRunning(f"no node is running for {data_dir} (start one with: meshagent join --data-dir {data_dir})") from exc
    except PermissionError as exc:
        raise ControlError(f"cannot read the control token in {data_dir}: only the node's owner may control it") from exc
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
    except OSError as exc:
        s.close()
        raise NodeNotRunning(f"no node is running for {data_dir} ({exc.strerror})") from exc
    return s, token


def call_streaming(
    data_dir: Path,
    op: str,
    params: Mapping[str, Any] | None = None,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = 60.0,
) -> dict[str, Any]:
    """Blocking client: send one request, pass events to ``on_event``, return the result."""
    s, token = _connect(data_dir)
    with s:
        s.settimeout(timeout)
        s.sendall(_line({"token": token, "op": op, "params": dict(params or {})}))
        f = s.makefile("rb")
        for raw in f:
            msg = json.loads(raw)
            if "event" in msg:
                if on_event is not None:
                    on_event(msg["event"])
                continue
            if msg.get("ok"):
                result = msg.get("result")
                return result if isinstance(result, dict) else {"result": result}
            raise ControlError(f"{msg.get('error')}")
    raise ControlError("the node closed the connection without answering")


def call(data_dir: Path, op: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = 60.0) -> dict[str, Any]:
    """Blocking client for one request/response."""
    return call_streaming(data_dir, op, params, timeout=timeout)

"""Plain HTTP requests with every header under the test's control (a browser's Host, Origin, Content-Type).

The ``openai`` client and ``urllib`` set Host and Content-Type themselves; these
helpers send exactly the headers given, as a hostile page's browser would.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Reply", "request", "read_status", "vm_hwm_kib", "node_pid"]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The OpenAI error object's ``code``."""
        return self.json()["error"]["code"]


def request(url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = 60.0) -> Reply:
    """One request to the API at ``url`` with exactly ``headers`` (a ``Host`` given replaces the real one)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def read_status(sock: socket.socket) -> int | None:
    """The status of the HTTP response on ``sock``; None when the connection was reset before one came."""
    data = b""
    try:
        while b"\r\n" not in data:
            got = sock.recv(4096)
            if not got:
                break
            data += got
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``) in KiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


def node_pid(proc: Any) -> int:
    assert proc.proc is not None
    return int(proc.proc.pid)

"""The API's front door, without a node: Host parsing and the allow-list, same-origin, body counting, [api] config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from meshagent.config import ApiConfig, load_config
from meshagent.errors import ConfigError
from meshagent.node.api.errors import ApiError
from meshagent.node.api.guard import HostAllowList, RequestGuard, _same_origin, split_host


@pytest.mark.parametrize(("value", "parsed"), [
    ("localhost", ("localhost", None)),
    ("LocalHost:4780", ("localhost", 4780)),
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]", ("::1", None)),
    ("[::1]:4780", ("::1", 4780)),
    ("pi.local.", ("pi.local", None)),
    ("::1", None),  # IPv6 needs brackets
    ("[::1", None),
    ("[evil.example]:80", None),
    ("[::1]x", None),
    ("localhost:", None),
    ("localhost:0", None),
    ("localhost:65536", None),
    ("localhost:47x", None),
    ("", None),
    (":4780", None),
])
def test_split_host(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(value) == parsed


def test_loopback_bind_allows_the_loopback_names_only() -> None:
    hosts = HostAllowList("127.0.0.1", addresses=lambda: frozenset({"192.168.1.10"}))
    for ok in ("localhost", "localhost:4780", "127.0.0.1:9000", "[::1]:4780"):
        assert hosts.allows(ok), ok
    for bad in ("evil.example", "evil.example:4780", "192.168.1.10:4780", "127.0.0.2", "localhost.evil.example", "[::2]"):
        assert not hosts.allows(bad), bad


def test_extra_names_and_a_named_bind_are_allowed() -> None:
    hosts = HostAllowList("pi.lan", ["proxy.example", "Other.Example:8443"])
    assert hosts.allows("pi.lan:4780") and hosts.allows("proxy.example") and hosts.allows("other.example:1")
    assert not hosts.allows("evil.example")


def test_a_wildcard_bind_allows_this_machines_addresses_reread_when_they_change() -> None:
    now = [0.0]
    machine = [frozenset({"192.168.1.10"})]
    reads = [0]

    def addresses() -> frozenset[str]:
        reads[0] += 1
        return machine[0]

    hosts = HostAllowList("0.0.0.0", addresses=addresses, clock=lambda: now[0])
    assert hosts.allows("192.168.1.10:4780") and hosts.allows("localhost")
    assert not hosts.allows("10.0.0.5:4780") and not hosts.allows("evil.example")
    machine[0] = frozenset({"10.0.0.5"})  # DHCP gave the machine another address
    assert not hosts.allows("10.0.0.5")  # read at most every few seconds
    now[0] = 10.0
    assert hosts.allows("10.0.0.5")
    calls = reads[0]
    assert not hosts.allows("evil.example") and reads[0] == calls  # names never trigger a re-read


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:4780", "127.0.0.1:4780", True),
    ("http://LOCALHOST:4780", "localhost:4780", True),
    ("http://localhost", "localhost:80", True),
    ("http://[::1]:4780", "[::1]:4780", True),
    ("http://localhost:4780", "127.0.0.1:4780", False),
    ("http://127.0.0.1:4781", "127.0.0.1:4780", False),
    ("https://127.0.0.1:4780", "127.0.0.1:4780", False),
    ("null", "127.0.0.1:4780", False),
    ("http://evil.example", "127.0.0.1:4780", False),
    ("http://user@127.0.0.1:4780", "127.0.0.1:4780", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert _same_origin(origin, host) is same


def _scope(method: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/v1/chat/completions", "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


async def _serve(guard_cap: int, scope: dict[str, Any], chunks: list[bytes]) -> tuple[list[dict[str, Any]], int, bytes | ApiError]:
    """Drive a RequestGuard in memory: returns what it sent, how many body messages it took, what the app read."""
    taken = 0
    sent: list[dict[str, Any]] = []
    read: list[bytes | ApiError] = []

    async def receive() -> dict[str, Any]:
        nonlocal taken
        taken += 1
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        try:
            while True:
                message = await receive()
                body += message["body"]
                if not message["more_body"]:
                    break
        except ApiError as exc:
            read.append(exc)
            return
        read.append(body)

    guard = RequestGuard(app, HostAllowList("127.0.0.1"), guard_cap)
    await guard(scope, receive, send)  # type: ignore[arg-type]
    return sent, taken, read[0] if read else b""


JSON = {"host": "127.0.0.1:4780", "content-type": "application/json"}


def test_a_chunked_body_stops_at_the_chunk_that_crosses_the_cap() -> None:
    chunks = [b"x" * 1000] * 600
    sent, taken, read = trio.run(_serve, 4096, _scope("POST", JSON), chunks)
    assert isinstance(read, ApiError) and read.status == 413
    assert taken == 5  # 5 × 1000 bytes crossed 4096: the other 595 chunks were never taken
    sent, taken, read = trio.run(_serve, 4096, _scope("POST", JSON), [b"x" * 2048, b"y" * 2048])
    assert read == b"x" * 2048 + b"y" * 2048  # exactly the cap is fine


def test_refusals_come_before_any_body_is_read() -> None:
    for headers, status in (({**JSON, "content-length": str(1 << 30)}, 413),
                            ({**JSON, "content-type": "text/plain"}, 415),
                            ({**JSON, "origin": "http://evil.example"}, 403),
                            ({**JSON, "host": "evil.example:4780"}, 403)):
        sent, taken, read = trio.run(_serve, 4096, _scope("POST", headers), [b"{}"])
        assert taken == 0 and read == b"" and sent[0]["status"] == status, headers
    sent, taken, read = trio.run(_serve, 4096, _scope("GET", {"host": "localhost"}), [b""])  # no body: no type needed
    assert read == b"" and taken == 1 and not sent


@pytest.mark.parametrize("line", ["max_body_bytes = 0", "max_event_streams = 0", "chat_retention_s = -1",
                                  "chat_retention_s = inf", "allowed_hosts = ['']", "max_body_bytes = 1.5"])
def test_api_limits_that_cannot_work_are_refused(tmp_path: Path, line: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f"[api]\n{line}\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_config(p)


def test_api_defaults_keep_nothing_and_bound_everything() -> None:
    api = ApiConfig()
    assert api.chat_retention_s == 0 and api.max_body_bytes == 4 << 20 and api.max_event_streams == 32
    assert api.allowed_hosts == ()

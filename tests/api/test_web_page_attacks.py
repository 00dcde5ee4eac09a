"""A hostile web page against the loopback API of a live node (no token on loopback).

DNS rebinding (the attacker's name, re-pointed at 127.0.0.1, in the Host header),
cross-site posts (a foreign Origin, a ``text/plain`` body that needs no CORS
preflight) and an oversized body: each is refused before any agent starts,
while the node's own dashboard and the ``openai`` client keep working.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import openai
import pytest

from tests.api.conftest import Mesh
from tests.api.raw_http import read_status, request

pytestmark = pytest.mark.timeout(300)

CHAT = json.dumps({"model": "small-chat", "messages": [{"role": "user", "content": "Start an agent for me."}],
                   "max_tokens": 4}).encode()
JSON = {"Content-Type": "application/json"}


def _port(mesh: Mesh) -> int:
    port = urlsplit(mesh.url).port
    assert port is not None
    return port


def _agent_ids(mesh: Mesh) -> set[str]:
    return {a["agent_id"] for a in mesh.laptop.call("agents")["agents"]}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.:{port}x", ""])
def test_a_foreign_host_is_refused_on_every_route(mesh: Mesh, host: str) -> None:
    """DNS rebinding: the browser thinks it talks to evil.example, and says so in Host."""
    host = host.format(port=_port(mesh))
    before = _agent_ids(mesh)
    for method, path, body in (("GET", "/api/state", None), ("GET", "/v1/models", None), ("GET", "/api/events", None),
                               ("POST", "/v1/chat/completions", CHAT)):
        reply = request(mesh.url, method, path, {"Host": host, **JSON}, body)
        assert reply.status == 403, (host, path, reply.status)
        assert reply.code == "host_not_allowed" and b"small-chat" not in reply.body
    assert _agent_ids(mesh) == before


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST:{port}"])
def test_the_loopback_names_are_allowed(mesh: Mesh, host: str) -> None:
    reply = request(mesh.url, "GET", "/v1/models", {"Host": host.format(port=_port(mesh))})
    assert reply.status == 200 and "small-chat" in {m["id"] for m in reply.json()["data"]}


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_a_body_that_is_not_declared_json_starts_no_agent(mesh: Mesh, content_type: str | None) -> None:
    """A cross-site fetch or form with these types needs no CORS preflight: the body must not be parsed."""
    before = _agent_ids(mesh)
    headers = {"Content-Type": content_type} if content_type else {}
    reply = request(mesh.url, "POST", "/v1/chat/completions", headers, CHAT)
    assert reply.status == 415 and reply.code == "unsupported_media_type"
    assert _agent_ids(mesh) == before


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:{port}", "https://127.0.0.1:{port}",
                                    "http://127.0.0.1:{other}"])
def test_a_foreign_origin_is_refused(mesh: Mesh, origin: str) -> None:
    port = _port(mesh)
    origin = origin.format(port=port, other=port + 1)
    before = _agent_ids(mesh)
    reply = request(mesh.url, "POST", "/v1/chat/completions", {"Origin": origin, **JSON}, CHAT)
    assert reply.status == 403 and reply.code == "origin_not_allowed"
    reply = request(mesh.url, "GET", "/api/state", {"Origin": origin})
    assert reply.status == 403 and b"peers" not in reply.body
    assert _agent_ids(mesh) == before


def test_the_dashboards_own_origin_and_the_openai_client_still_work(mesh: Mesh) -> None:
    own = f"http://127.0.0.1:{_port(mesh)}"
    reply = request(mesh.url, "GET", "/api/state", {"Origin": own})
    assert reply.status == 200 and reply.json()["self"] == mesh.laptop.peer_id
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key="unused", max_retries=0, timeout=240)
    answer = client.chat.completions.create(model="small-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                            extra_headers={"Origin": own})
    assert answer.choices[0].message.content is not None


def test_a_declared_length_past_the_cap_is_refused_before_the_body(mesh: Mesh) -> None:
    """The 413 comes back while the client has sent no byte of the 600 MiB it announced."""
    parts = urlsplit(mesh.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (600 << 20))
        assert read_status(sock) == 413

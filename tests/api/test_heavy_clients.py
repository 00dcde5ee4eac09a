"""Heavy and careless clients against a live node serving its LAN (bearer token on).

The query token works only for the event stream; a chunked body past the cap is
refused as it arrives (the node's peak RSS barely moves); a chat's prompt is
gone from every file of the data dir once it is answered (the default keeps
nothing); many dashboard streams cost one state build per tick, and one stream
past the cap is refused.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from tests.api.raw_http import node_pid, read_status, request, vm_hwm_kib
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.timeout(300)

STREAMS = 48


@dataclass
class Lan:
    node: NodeProcess
    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.token, max_retries=0, timeout=240)


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    data = tmp_path_factory.mktemp("heavy") / "pi"
    write_device_config(data, "pi", MODEL_CACHE)
    with (data / "config.toml").open("a") as f:
        f.write(f'\n[api]\nbind = "0.0.0.0"\nport = 0\nmax_event_streams = {STREAMS}\n')
    node = NodeProcess(data, name="pi").start()
    try:
        info = node.call("api")
        lan = Lan(node, info["url"].replace("0.0.0.0", "127.0.0.1"), Path(info["token_file"]).read_text().strip())
        # Warm up (model loaded, chat agent built) so that later peaks are the requests' own.
        lan.client().chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        yield lan
    finally:
        node.stop()


def files_holding(node: NodeProcess, needle: bytes) -> list[str]:
    """Every file of the node's data dir (sqlite databases, their WAL, caches) and its log that holds ``needle``."""
    hits = []
    for path in [*node.data_dir.rglob("*"), node.log]:
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(str(path))
    return hits


def test_the_query_token_opens_only_the_event_stream(lan: Lan) -> None:
    query = f"?token={lan.token}"
    for method, path in (("GET", "/api/state"), ("GET", "/v1/models"), ("GET", "/healthz"), ("POST", "/v1/chat/completions")):
        reply = request(lan.url, method, path + query, {"Content-Type": "application/json"}, b"{}" if method == "POST" else None)
        assert reply.status == 401 and reply.code == "invalid_api_key", path
    assert request(lan.url, "GET", "/api/state", lan.auth).status == 200  # the header works everywhere
    with socket.create_connection(("127.0.0.1", urlsplit(lan.url).port), timeout=30) as sock:
        sock.sendall(f"GET /api/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert read_status(sock) == 200


def test_a_foreign_host_is_refused_on_a_lan_bind_too(lan: Lan) -> None:
    reply = request(lan.url, "GET", "/api/state", {**lan.auth, "Host": "evil.example"})
    assert reply.status == 403 and reply.code == "host_not_allowed"


def test_a_chunked_body_past_the_cap_is_refused_as_it_arrives(lan: Lan) -> None:
    pid = node_pid(lan.node)
    before = vm_hwm_kib(pid)
    chunk = b"%x\r\n" % (1 << 20) + b"a" * (1 << 20) + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", urlsplit(lan.url).port), timeout=60) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {lan.token}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(600):  # 600 MiB
                sock.sendall(chunk)
                sent += 1
        except OSError:  # the node closed the connection at the cap
            pass
        status = read_status(sock)
    after = vm_hwm_kib(pid)
    print(f"sent {sent} MiB of 600; node VmHWM {before} KiB -> {after} KiB (+{after - before} KiB); status {status}")
    assert sent < 64, "the node kept reading past the 4 MiB cap"
    assert status == 413
    assert after - before < 16 << 10, f"peak RSS grew by {after - before} KiB"
    assert request(lan.url, "GET", "/healthz", lan.auth).status == 200


def test_a_chats_prompt_is_gone_from_the_data_dir_once_answered(lan: Lan) -> None:
    client = lan.client()
    before = {a["agent_id"] for a in lan.node.call("agents")["agents"]}
    for stream in (False, True):
        marker = f"my-secret-{secrets.token_hex(8)}"
        messages = [{"role": "user", "content": f"The door code is {marker}. Remember it."}]
        if stream:
            chunks = list(client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, stream=True))
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        else:
            assert client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8).choices[0].message.content
        assert files_holding(lan.node, marker.encode()) == [], f"the prompt stayed on disk (stream={stream})"
    assert {a["agent_id"] for a in lan.node.call("agents")["agents"]} == before  # both agents deleted


def test_failed_chats_leave_nothing_and_the_store_does_not_grow(lan: Lan) -> None:
    """Prompts far past the context fail (400); each is deleted, so the store reuses its pages."""
    client = lan.client()
    store = lan.node.data_dir / "node.sqlite"
    sizes = []
    for _ in range(5):
        marker = f"big-secret-{secrets.token_hex(8)}"
        with pytest.raises(openai.BadRequestError) as too_long:
            client.chat.completions.create(model="tiny-chat", max_tokens=4,
                                           messages=[{"role": "user", "content": marker + " lorem ipsum" * 90_000}])
        assert too_long.value.body["code"] == "context_length_exceeded"
        assert files_holding(lan.node, marker.encode()) == []
        sizes.append(store.stat().st_size)
    print("node.sqlite sizes after each ~1 MB failed chat:", sizes)
    assert sizes[-1] - sizes[0] < 1 << 20, sizes  # five 1 MB prompts, less than one of them kept


def _open_stream(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /api/events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _first_event(sock: socket.socket) -> bytes:
    data = b""
    while b"event: state\n" not in data:
        got = sock.recv(65536)
        assert got, f"the stream closed: {data[:200]!r}"
        data += got
    return data


def test_many_streams_share_one_state_build_per_tick_and_one_more_is_refused(lan: Lan) -> None:
    port = urlsplit(lan.url).port
    assert port is not None
    with ExitStack() as stack:
        streams = [stack.enter_context(_open_stream(port, lan.token)) for _ in range(STREAMS)]
        for sock in streams:
            assert _first_event(sock).startswith(b"HTTP/1.1 200")
        first = lan.node.call("api")
        assert first["event_streams"] == STREAMS
        last, _ = wait_for(lambda: (s := lan.node.call("api"))["state_ticks"] >= first["state_ticks"] + 5 and s, timeout=60)
        assert last, "the state feed stopped ticking"
        ticks, builds = last["state_ticks"] - first["state_ticks"], last["state_builds"] - first["state_builds"]
        print(f"{STREAMS} streams: {builds} state builds in {ticks} ticks")
        assert builds <= ticks + 1, f"{builds} state builds in {ticks} ticks for {STREAMS} streams"

        with _open_stream(port, lan.token) as extra:  # one past the cap
            assert read_status(extra) == 503
        streams.pop().close()
        assert wait_for(lambda: lan.node.call("api")["event_streams"] == STREAMS - 1, timeout=30)[0]
        with _open_stream(port, lan.token) as again:  # a place freed: accepted again
            assert _first_event(again).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: lan.node.call("api")["event_streams"] == 0, timeout=30)[0]

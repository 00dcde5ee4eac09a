"""A client that goes away stops its chat agent, and a retained agent is deleted when its time is up.

One live node with a single execution slot: a long chat (A) holds the slot
while two more (B streamed, C not) wait for it. B's and C's clients disconnect;
their agents must stop at once, while A still runs — left alone they would run
their LLM steps for nobody once A is done. With ``chat_retention_s = 3`` every
agent is then deleted a few seconds after its request ended, with its prompt.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from tests.api.test_heavy_clients import files_holding
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data = tmp_path_factory.mktemp("slots") / "pi"
    write_device_config(data, "pi", MODEL_CACHE)
    with (data / "config.toml").open("a") as f:
        f.write("\n[sandbox]\nmax_instances = 1\n\n[api]\nport = 0\nchat_retention_s = 3\n")
    node = NodeProcess(data, name="pi").start()
    try:
        yield node
    finally:
        node.stop()


def _post(port: int, body: dict[str, Any]) -> socket.socket:
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    return sock


def _warm_up(url: str) -> None:
    """One short chat first: the chat agent is built and the model loaded before the test's own requests."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=560)
    client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2)


def _agents(node: NodeProcess) -> dict[str, str]:
    return {a["agent_id"]: a["status"] for a in node.call("agents", timeout=120)["agents"]}


def test_a_client_that_leaves_stops_its_agent_and_retained_agents_expire(node: NodeProcess) -> None:
    url = node.call("api")["url"]
    port = urlsplit(url).port
    assert port is not None
    _warm_up(url)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=560)
    markers = {name: f"{name}-secret-{secrets.token_hex(6)}" for name in "ABC"}

    def ask(name: str, **extra: Any) -> dict[str, Any]:
        return {"model": "tiny-chat", "messages": [{"role": "user", "content": f"Keep {markers[name]} safe."}], **extra}

    with ThreadPoolExecutor(1) as pool:
        known = set(_agents(node))
        long_chat = pool.submit(lambda: client.chat.completions.create(**ask("A", max_tokens=600)))
        running, _ = wait_for(lambda: set(_agents(node)) - known, timeout=120)
        (a,) = running
        known.add(a)

        b_sock = _post(port, ask("B", max_tokens=8, stream=True))  # streamed: its headers name the agent at once
        head = b""
        while b"data: " not in head:
            got = b_sock.recv(4096)
            assert got, head
            head += got
        b = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"x-meshagent-agent:"))
        known.add(b)
        c_sock = _post(port, ask("C", max_tokens=8))  # not streamed: no byte comes back before the answer
        started, _ = wait_for(lambda: set(_agents(node)) - known, timeout=120)
        (c,) = started
        agents = _agents(node)
        assert agents[a] == agents[b] == agents[c] == "running"  # B and C wait for A's slot

        b_sock.close()
        c_sock.close()
        def b_and_c_stopped() -> dict[str, str] | None:
            agents = _agents(node)
            return agents if all(agents.get(x, "deleted") in ("killed", "deleted") for x in (b, c)) else None

        stopped, _ = wait_for(b_and_c_stopped, timeout=120)
        assert stopped, f"the agents of clients that left still run: {_agents(node)}"
        assert stopped[a] == "running", "A ended before B and C were stopped: the test proves nothing"

        answer = long_chat.result(timeout=560)
        assert answer.model_extra["meshagent"]["agent_id"] == a and answer.usage.completion_tokens == 600

    steps = {s["agent_id"] for s in node.call("steps")["steps"]}
    assert a in steps and b not in steps and c not in steps  # B and C never ran their step
    # The retention (3 s) ends for all three: agents, prompts and answers are deleted.
    gone, _ = wait_for(lambda: not {a, b, c} & set(_agents(node)), timeout=120)
    assert gone, _agents(node)
    for name, marker in markers.items():
        assert files_holding(node, marker.encode()) == [], f"{name}'s prompt stayed on disk"


@pytest.mark.timeout(900)
def test_chat_agents_left_by_a_crash_are_stopped_and_deleted_at_the_next_start(tmp_path: Path) -> None:
    """The node is killed mid-chat: A in its LLM step, B waiting for the only slot. Both stay in the store
    with their prompts; the next start, which would resume them for clients long gone, stops them (the
    one left waiting for the slot at once, without running its step; the other when its step returns)
    and deletes them."""
    data = tmp_path / "pi"
    write_device_config(data, "pi", MODEL_CACHE)
    with (data / "config.toml").open("a") as f:
        f.write("\n[sandbox]\nmax_instances = 1\n\n[api]\nport = 0\n")
    node = NodeProcess(data, name="pi").start()
    markers = {name: f"{name}-crash-secret-{secrets.token_hex(6)}" for name in "AB"}

    def ask(name: str, max_tokens: int) -> dict[str, Any]:
        return {"model": "tiny-chat", "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Keep {markers[name]} safe."}]}

    try:
        url = node.call("api")["url"]
        _warm_up(url)
        port = urlsplit(url).port
        assert port is not None
        known = set(_agents(node))
        ids = {}
        with ExitStack() as clients:
            for name, max_tokens in (("A", 300), ("B", 8)):
                clients.enter_context(_post(port, ask(name, max_tokens)))
                started, _ = wait_for(lambda: set(_agents(node)) - known, timeout=120)
                (ids[name],) = started
                known |= started
            assert set(_agents(node).values()) == {"running"}
            node.kill()
        for name, marker in markers.items():
            assert files_holding(node, marker.encode()), f"{name}'s prompt was not stored: the test proves nothing"

        node = NodeProcess(data, name="pi").start()
        gone, _ = wait_for(lambda: not set(ids.values()) & set(_agents(node)), timeout=480)
        assert gone, _agents(node)
        ran = set(ids.values()) & {s["agent_id"] for s in node.call("steps")["steps"]}
        assert len(ran) <= 1, "the agent waiting for the slot ran its step for nobody"
        for name, marker in markers.items():
            assert files_holding(node, marker.encode()) == [], f"{name}'s prompt stayed on disk"
    finally:
        node.stop()

"""The OpenAI-compatible API of a live node, through the official ``openai`` client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.api.conftest import Mesh

pytestmark = pytest.mark.timeout(300)

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the mesh."}]


@pytest.fixture
def client(mesh: Mesh) -> openai.OpenAI:
    # Loopback needs no key; the client insists on one, any string works.
    return openai.OpenAI(base_url=mesh.url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=240)


def test_models_list_shows_every_llm_of_the_mesh(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"tiny-chat", "small-chat", "large-chat"} <= set(models)
    assert "all-minilm-l6-v2-int8" not in models  # embedders are not chat models
    assert models["large-chat"].owned_by == "gpu"
    assert client.models.retrieve("small-chat").id == "small-chat"


def test_chat_completion_runs_as_an_agent_on_this_node(client: openai.OpenAI, mesh: Mesh) -> None:
    reply = client.chat.completions.create(model="small-chat", messages=HELLO, max_tokens=12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    extra = reply.model_extra["meshagent"]
    assert extra["node"] == mesh.laptop.peer_id
    # It was a real agent of the node, with the default privacy class.
    (agent,) = [a for a in mesh.laptop.call("agents")["agents"] if a["agent_id"] == extra["agent_id"]]
    assert agent["status"] == "exited" and agent["privacy"] == "private"
    steps = [s for s in mesh.laptop.call("steps")["steps"] if s["agent_id"] == extra["agent_id"]]
    assert [s["model"] for s in steps] == ["small-chat"]


def test_streaming_gives_the_same_text_in_chunks(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="small-chat", messages=HELLO, max_tokens=12).choices[0].message.content
    stream = client.chat.completions.create(model="small-chat", messages=HELLO, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole  # greedy decoding: the same answer, streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_model_only_a_peer_holds_is_served_through_that_peer(client: openai.OpenAI, mesh: Mesh) -> None:
    reply = client.chat.completions.with_raw_response.create(
        model="large-chat", messages=HELLO, max_tokens=8, extra_headers={"X-Meshagent-Privacy": "any"})
    completion = reply.parse()
    assert completion.choices[0].message.content
    assert reply.headers["x-meshagent-node"] == mesh.gpu.peer_id
    agent_id = completion.model_extra["meshagent"]["agent_id"]
    (auction,) = [a for a in mesh.laptop.call("auctions")["auctions"] if a["agent_id"] == agent_id]
    assert auction["winner"] == mesh.gpu.peer_id and auction["privacy"] == "any"
    assert [s["model"] for s in mesh.gpu.call("steps")["steps"] if s["agent_id"] == agent_id] == ["large-chat"]


def test_a_private_request_never_leaves_the_owners_devices(client: openai.OpenAI, mesh: Mesh) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="large-chat", messages=HELLO, max_tokens=8)  # privacy defaults to private
    assert info.value.status_code == 503
    error = info.value.body
    assert error["code"] == "no_eligible_node" and "X-Meshagent-Privacy" in error["message"]
    assert not [s for s in mesh.gpu.call("steps")["steps"] if s["privacy"] == "private"]


def test_invalid_requests_get_openai_error_objects(client: openai.OpenAI, mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="small-chat", messages=[])
    assert bad.value.status_code == 400
    assert bad.value.body == {"message": "'messages' must be a non-empty array", "type": "invalid_request_error",
                              "param": "messages", "code": None}
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as privacy:
        client.chat.completions.create(model="small-chat", messages=HELLO, extra_headers={"X-Meshagent-Privacy": "public"})
    assert privacy.value.body["param"] == "privacy"
    with pytest.raises(openai.BadRequestError) as too_long:  # 4096-token context, byte-level vocabulary
        client.chat.completions.create(model="small-chat", messages=[{"role": "user", "content": "word " * 1000}])
    assert too_long.value.body["code"] == "context_length_exceeded"

    for path, body in (("/v1/chat/completions", b"{not json"), ("/v1/nowhere", b"{}")):
        request = urllib.request.Request(mesh.url + path, body, {"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(request, timeout=30)
        text = raw.value.read().decode()
        assert raw.value.code in (400, 404) and raw.value.headers["content-type"] == "application/json"
        assert set(json.loads(text)["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in text


def test_a_follow_up_turn_continues_the_conversation_kept_on_the_node(client: openai.OpenAI, mesh: Mesh) -> None:
    first = [{"role": "user", "content": "Name three rivers."}]
    reply = client.chat.completions.create(model="small-chat", messages=first, max_tokens=10)
    answer = reply.choices[0].message.content
    follow = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "And three lakes?"}]
    again = client.chat.completions.create(model="small-chat", messages=follow, max_tokens=10)
    fresh = client.chat.completions.create(model="small-chat", messages=follow[-1:], max_tokens=10)

    steps = {s["agent_id"]: s for s in mesh.laptop.call("steps")["steps"]}
    turn1, turn2, alone = (steps[r.model_extra["meshagent"]["agent_id"]] for r in (reply, again, fresh))
    # The second turn prefilled only its new text: the first turn's KV (prompt and answer) was reused.
    assert turn2["reused_tokens"] >= turn1["prompt_tokens"] + turn1["completion_tokens"] - 1
    assert turn2["prompt_tokens"] < alone["prompt_tokens"] + turn1["prompt_tokens"]
    assert alone["reused_tokens"] == 0


def test_a_follow_up_served_by_a_peer_reuses_the_kv_kept_there(client: openai.OpenAI, mesh: Mesh) -> None:
    anywhere = {"X-Meshagent-Privacy": "any"}
    first = [{"role": "user", "content": "Describe a GPU."}]
    reply = client.chat.completions.create(model="large-chat", messages=first, max_tokens=8, extra_headers=anywhere)
    follow = [*first, {"role": "assistant", "content": reply.choices[0].message.content}, {"role": "user", "content": "Shorter."}]
    again = client.chat.completions.create(model="large-chat", messages=follow, max_tokens=8, extra_headers=anywhere)
    assert again.model_extra["meshagent"]["node"] == mesh.gpu.peer_id
    steps = {s["agent_id"]: s for s in mesh.gpu.call("steps")["steps"]}
    turn1, turn2 = (steps[r.model_extra["meshagent"]["agent_id"]] for r in (reply, again))
    assert turn1["reused_tokens"] == 0
    assert turn2["reused_tokens"] >= turn1["prompt_tokens"] + turn1["completion_tokens"] - 1

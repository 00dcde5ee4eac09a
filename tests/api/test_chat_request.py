"""Parsing chat requests and rendering transcripts (pure, no node)."""

from __future__ import annotations

import pytest

from meshagent.node.api.chat_request import Message, llm_options, parse_chat_request, render_prompt
from meshagent.node.api.errors import ApiError

USER = [{"role": "user", "content": "hi"}]


def test_privacy_and_policy_come_from_the_body_then_the_headers_then_defaults() -> None:
    assert (r := parse_chat_request({"model": "m", "messages": USER}, {})).privacy == "private" and r.policy == "latency"
    headers = {"x-meshagent-privacy": "lan", "x-meshagent-policy": "cost"}
    assert parse_chat_request({"model": "m", "messages": USER}, headers).privacy == "lan"
    assert parse_chat_request({"model": "m", "messages": USER}, headers).policy == "cost"
    assert parse_chat_request({"model": "m", "messages": USER, "privacy": "any"}, headers).privacy == "any"


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": USER}, "model"),
    ({"model": "m;privacy=any", "messages": USER}, "model"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "m", "messages": USER, "n": 2}, "n"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "policy": "fastest"}, "policy"),
])
def test_invalid_fields_are_named(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_chat_request(body, {})
    assert info.value.status == 400 and info.value.param == param


def test_options_carry_model_limits_and_privacy() -> None:
    r = parse_chat_request({"model": "size>=large", "messages": USER, "max_completion_tokens": 7, "seed": 3,
                            "temperature": 0.5, "stream": True, "stream_options": {"include_usage": True}}, {})
    assert llm_options(r) == "model=size>=large;max_tokens=7;temperature=0.5;seed=3;privacy=private"
    assert r.stream and r.include_usage


def test_a_resent_reply_extends_the_previous_transcript_verbatim() -> None:
    first = (Message("system", "Be brief."), Message("user", "hi"))
    for reply in (" hello", "hello", "\nhello"):
        prompt = render_prompt(first)
        follow = render_prompt((*first, Message("assistant", reply), Message("user", "more")))
        assert follow.startswith(prompt + reply), reply
    assert render_prompt(first) == "System: Be brief.\nUser: hi\nAssistant:"

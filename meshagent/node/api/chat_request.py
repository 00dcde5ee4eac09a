"""Parsing and validating a ``POST /v1/chat/completions`` body, and rendering its transcript.

Pure: no I/O. Unknown fields are ignored (clients send many); fields that are
present must be valid, and a bad one is an :class:`ApiError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshagent.node.api.errors import ApiError
from meshagent.protocol.scoring import POLICIES, PRIVACY_CLASSES

__all__ = ["Message", "ChatRequest", "parse_chat_request", "render_prompt", "llm_options",
           "PRIVACY_HEADER", "POLICY_HEADER", "DEFAULT_MAX_TOKENS"]

PRIVACY_HEADER: Final = "x-meshagent-privacy"
POLICY_HEADER: Final = "x-meshagent-policy"
DEFAULT_MAX_TOKENS: Final = 128
_MAX_TOKENS: Final = 65536
_ROLES: Final = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
_OPTION_UNSAFE: Final = re.compile(r"[;,\n\r]|^\s|\s$")


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    seed: int = 0
    privacy: str = "private"
    policy: str = "latency"


def _content(raw: object, index: int) -> str:
    param = f"messages[{index}].content"
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        texts = []
        for part in raw:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{param}: only text parts are supported", param=param)
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"{param} must be a string or a list of text parts", param=param)


def _messages(raw: object) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise ApiError(400, f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role not in _ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(_ROLES)}", param=f"messages[{i}].role")
        out.append(Message(str(role), _content(m.get("content"), i)))
    return tuple(out)


def _int(body: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be an integer from {lo} to {hi}", param=key)
    return value


def _choice(body: Mapping[str, object], headers: Mapping[str, str], key: str, header: str, allowed: tuple[str, ...],
            default: str) -> str:
    value = body.get(key)
    if value is None:
        value = headers.get(header)
    if value is None:
        return default
    if value not in allowed:
        raise ApiError(400, f"'{key}' (or header {header}) must be one of {', '.join(allowed)}", param=key)
    return str(value)


def parse_chat_request(body: object, headers: Mapping[str, str]) -> ChatRequest:
    """Validate a request body; privacy and policy come from the body, else the headers, else defaults."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "'model' is required: a model id from GET /v1/models", param="model")
    if _OPTION_UNSAFE.search(model):
        raise ApiError(400, "'model' must not contain ';', ',', newlines or surrounding spaces", param="model")
    n = body.get("n")
    if n not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    stream_options = body.get("stream_options") or {}
    include_usage = isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0.0 <= temperature <= 2.0:
        raise ApiError(400, "'temperature' must be a number from 0 to 2", param="temperature")
    max_tokens = _int(body, "max_completion_tokens", _int(body, "max_tokens", DEFAULT_MAX_TOKENS, 1, _MAX_TOKENS), 1, _MAX_TOKENS)
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=float(temperature),
        seed=_int(body, "seed", 0, 0, 2**31 - 1),
        privacy=_choice(body, headers, "privacy", PRIVACY_HEADER, PRIVACY_CLASSES, "private"),
        policy=_choice(body, headers, "policy", POLICY_HEADER, POLICIES, "latency"),
    )


def _turn(message: Message) -> str:
    content = message.content
    # An assistant turn is the model's own reply, which followed "Assistant:" verbatim.
    sep = "" if message.role == "assistant" or content[:1].isspace() else " "
    return f"{_ROLES[message.role]}:{sep}{content}\n"


def render_prompt(messages: tuple[Message, ...]) -> str:
    """The transcript the chat agent sends to the model, ending with ``Assistant:``.

    The reply is returned verbatim, so a client that sends it back in the next
    turn renders exactly the text this turn's session already holds
    (``prompt + reply``): a node that kept that session continues it instead of
    prefilling the whole conversation again.
    """
    return "".join(_turn(m) for m in messages) + "Assistant:"


def llm_options(request: ChatRequest) -> str:
    """The chat agent's ``mesh_llm_options`` text for this request."""
    return (f"model={request.model};max_tokens={request.max_tokens};temperature={request.temperature:g};"
            f"seed={request.seed};privacy={request.privacy}")

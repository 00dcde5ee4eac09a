"""``GET /v1/models`` and ``POST /v1/chat/completions``, as the OpenAI API shapes them.

Streaming: the chat agent's reply reaches the node when its LLM step has
finished (the sandbox journals each host call whole), so a streamed response
sends the role chunk at once, an SSE comment every 15 s while the agent runs,
then the final text in word-sized chunks: not token by token.

Each completion's agent lives as long as its request (:class:`ChatAgents`): it
is released once the answer is known, and abandoned (stopped, then deleted)
when the client disconnects first, streaming or not, or the request times out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from meshagent.node.api.chat import ChatAgents, ChatReply
from meshagent.node.api.chat_request import ChatRequest, parse_chat_request
from meshagent.node.api.errors import ApiError, error_body
from meshagent.node.api.mesh_view import MeshView

__all__ = ["openai_routes", "REQUEST_TIMEOUT_S", "KEEPALIVE_S"]

REQUEST_TIMEOUT_S: Final = 600.0
KEEPALIVE_S: Final = 15.0
_PIECES: Final = re.compile(r"\s*\S+\s*|\s+")


def _model_object(name: str, holders: list[str], tags: list[str], n_ctx: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": ", ".join(holders),
            "meshagent": {"nodes": holders, "tags": tags, "n_ctx": n_ctx}}


def _usage(reply: ChatReply) -> dict[str, int] | None:
    if reply.prompt_tokens is None or reply.completion_tokens is None:
        return None
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _finish_reason(reply: ChatReply, request: ChatRequest) -> str:
    return "length" if reply.completion_tokens is not None and reply.completion_tokens >= request.max_tokens else "stop"


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _ChatStream(StreamingResponse):
    """A streamed completion; whatever ends it (the last chunk, the client leaving, the node stopping)
    abandons its agent, which is a no-op once the stream released it with the answer."""

    def __init__(self, chat: ChatAgents, agent_id: str, content: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._chat = chat
        self._agent_id = agent_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._chat.abandon(self._agent_id)


def openai_routes(view: MeshView, chat: ChatAgents) -> list[Route]:
    async def list_models(request: Request) -> Response:
        data = [_model_object(name, [h.name for h in holders], list(ad.tags), ad.n_ctx)
                for name, (ad, holders) in sorted(view.models().items())]
        return JSONResponse({"object": "list", "data": data})

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        found = view.models().get(name)
        if found is None:
            raise ApiError(404, f"the model {name!r} does not exist on this mesh", param="model", code="model_not_found")
        ad, holders = found
        return JSONResponse(_model_object(name, [h.name for h in holders], list(ad.tags), ad.n_ctx))

    async def _body(request: Request) -> object:
        # The guard already refused any other Content-Type and counts the body as it arrives (413 past the cap).
        raw = await request.body()
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc

    def _meta(reply: ChatReply) -> dict[str, str]:
        return {"agent_id": reply.agent_id, "node": reply.node, "node_name": view.name_of(reply.node)}

    async def completions(request: Request) -> Response:
        req = parse_chat_request(await _body(request), request.headers)
        if not view.serves(req.model):
            raise ApiError(404, f"no node of this mesh holds a model for {req.model!r} (see GET /v1/models)",
                           param="model", code="model_not_found")
        completion_id = "chatcmpl-" + (agent_id := await chat.start(req))
        created = int(time.time())
        headers = {"x-meshagent-agent": agent_id}
        if req.stream:
            return _ChatStream(chat, agent_id, _stream(req, agent_id, completion_id, created),
                               headers={**headers, "cache-control": "no-cache"})
        try:
            reply, gone = await _finish_while_connected(request, agent_id)
        except ApiError:  # the agent failed: it has ended
            await chat.release(agent_id)
            raise
        except BaseException:
            chat.abandon(agent_id)
            raise
        if reply is None:
            chat.abandon(agent_id)
            if gone:
                return Response(status_code=499)  # nginx's "client closed request": nobody reads it
            raise ApiError(504, f"the chat agent {agent_id} did not finish within {REQUEST_TIMEOUT_S:.0f} s",
                           type="server_error", code="timeout")
        await chat.release(agent_id)
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": f"meshagent:{reply.node}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": _finish_reason(reply, req), "logprobs": None}],
            "usage": _usage(reply),
            "meshagent": _meta(reply),
        }
        return JSONResponse(body, headers={**headers, "x-meshagent-node": reply.node})

    async def _finish_while_connected(request: Request, agent_id: str) -> tuple[ChatReply | None, bool]:
        """The agent's reply, or None after the timeout or when the client disconnected first (then True)."""
        async def client_left(scope: trio.CancelScope) -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        reply: ChatReply | None = None
        failure: ApiError | None = None
        with trio.CancelScope() as waiting:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_left, waiting)
                try:
                    with trio.move_on_after(REQUEST_TIMEOUT_S):
                        reply = await chat.finish(agent_id)
                except ApiError as exc:
                    failure = exc
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return reply, waiting.cancelled_caught

    async def _stream(req: ChatRequest, agent_id: str, completion_id: str, created: int) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

        yield _sse(chunk({"role": "assistant", "content": ""}))
        reply: ChatReply | None = None
        deadline = trio.current_time() + REQUEST_TIMEOUT_S
        try:
            while reply is None and trio.current_time() < deadline:
                with trio.move_on_after(min(KEEPALIVE_S, max(0.0, deadline - trio.current_time()))):
                    reply = await chat.finish(agent_id)
                if reply is None:
                    yield b": the agent is still running\n\n"  # an SSE comment: keeps proxies from closing
        except ApiError as exc:  # the agent failed: it has ended
            await chat.release(agent_id)
            yield _sse(error_body(exc.message, type=exc.type, param=exc.param, code=exc.code))
            return
        if reply is None:  # the response's end abandons the agent
            yield _sse(error_body(f"the chat agent {agent_id} did not finish within {REQUEST_TIMEOUT_S:.0f} s",
                                  type="server_error", code="timeout"))
            return
        await chat.release(agent_id)
        for piece in _PIECES.findall(reply.text):
            yield _sse(chunk({"content": piece}))
        yield _sse(chunk({}, _finish_reason(reply, req), system_fingerprint=f"meshagent:{reply.node}",
                         meshagent=_meta(reply)))
        if req.include_usage:
            yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                        "choices": [], "usage": _usage(reply)})
        yield b"data: [DONE]\n\n"

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
    ]

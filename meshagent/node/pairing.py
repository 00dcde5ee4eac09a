"""Pairing service: the network side of :mod:`meshagent.protocol.pairing`.

Control ops:

``pair_show``   make a code, valid for two minutes, and return it (device A)
``pair_join``   ``{"code": ..., "peer": optional}`` — pair with the one device
                the code names (device B); ``peer`` picks it when two known
                devices match the code's device digits
``trusted``     list the trust store; ``untrust`` removes a device
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from meshagent.errors import ControlError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
from meshagent.node.control import Emit
from meshagent.node.membership import Membership
from meshagent.node.trust import TrustStore
from meshagent.protocol import pairing
from meshagent.protocol.pairing import (
    CODE_TTL_S, ENTROPY_BYTES, MAX_MESSAGE, PAIR_PROTOCOL, Code, PendingCode, RefuseReason, Start, State,
)
from meshagent.protocol.signed import PeerId

__all__ = ["PairingService", "EXCHANGE_TIMEOUT_S", "DISCOVERY_WAIT_S"]

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT_S: Final = 10.0
"""One pairing exchange, on either side, ends after this long."""
DISCOVERY_WAIT_S: Final = 5.0
"""How long the joiner waits for the device a code names to become known (mDNS, peer exchange)."""

_REFUSALS: Final = {
    RefuseReason.NO_CODE: "{name} has no pairing code active (none shown, expired after two minutes, already used, "
                          "or three tries spent): run `meshagent pair` there again",
    RefuseReason.WRONG_CODE: "wrong code: {name} holds a different one (check the digits; a code allows three tries)",
}


class PairingService:
    def __init__(
        self, host: MeshHost, membership: Membership, trust: TrustStore, name: str, *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._members = membership
        self._trust = trust
        self._name = name
        self._clock = clock
        self._pending: PendingCode | None = None

    def install(self) -> dict[str, Any]:
        """Register the stream handler; return the control ops."""
        self._host.set_handler(PAIR_PROTOCOL, self._serve)
        return {"pair_show": self._op_show, "pair_join": self._op_join, "trusted": self._op_trusted, "untrust": self._op_untrust}

    # --- the device that shows the code ------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        """One exchange with a joiner; every exchange spends one of the code's attempts."""
        joiner = stream.peer
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            first = await stream.receive_frame(MAX_MESSAGE)
            if not isinstance(pairing.decode(first), Start):
                raise RemoteProtocolError(f"{joiner} opened a pairing exchange without Start")
            pending = self._pending
            if pending is None or not pending.usable(self._clock()):
                await stream.send_frame(pairing.encode(pairing.Refuse(RefuseReason.NO_CODE)))
                await stream.close()
                return
            self._pending = pending.attempt()
            shower = pairing.Shower(pending.code.secret, me=self._host.peer_id, joiner=joiner, name=self._name,
                                    random_bytes=os.urandom(ENTROPY_BYTES))
            answer = await trio.to_thread.run_sync(shower.receive, first)  # SPAKE2: ~20 ms of pure Python
            assert answer is not None
            await stream.send_frame(answer)
            reply = shower.receive(await stream.receive_frame(MAX_MESSAGE))
            if shower.state is State.CONFIRMED:
                current = self._pending
                if current is None or current.code != pending.code:
                    reply = shower.refuse(RefuseReason.NO_CODE)  # another exchange used the code meanwhile
                else:
                    self._pending = None
                    self._trust.add(joiner, shower.peer_name)
                    log.info("paired with %s (%s)", joiner, shower.peer_name)
                    reply = shower.done()
            if shower.reason is RefuseReason.WRONG_CODE:
                left = self._pending.attempts_left if self._pending is not None else 0
                log.warning("wrong pairing code from %s (%d attempts left)", joiner, left)
            if reply is not None:
                await stream.send_frame(reply)
        await stream.close()

    async def _op_show(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        code = pairing.new_code(self._host.peer_id, os.urandom(8))
        self._pending = PendingCode(code, self._clock() + CODE_TTL_S)
        return {"code": str(code), "expires_in_s": CODE_TTL_S, "peer_id": self._host.peer_id}

    # --- the device the code is typed on -------------------------------------------------

    def _known(self) -> set[PeerId]:
        return set(self._members.table) | set(self._host.connected_peers())

    async def _device_for(self, code: Code, peer: PeerId | None) -> PeerId:
        """The one device ``code`` names (``peer`` when given, after checking that the code names it)."""
        if peer is not None:
            if not code.shown_by(peer):
                raise ControlError(f"this code was not shown by {peer}: check the code")
            return peer
        deadline = trio.current_time() + DISCOVERY_WAIT_S
        while True:
            matches = sorted(p for p in self._known() if code.shown_by(p))
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ControlError(f"{len(matches)} devices match this code ({', '.join(matches)}): run "
                                   "`meshagent pair CODE --peer PEER_ID` with the peer id printed beside the code")
            if trio.current_time() >= deadline:
                raise ControlError("no device this node knows shows this code: check the code, and that the other "
                                   "device is in the mesh (`meshagent peers`)")
            await trio.sleep(0.25)

    async def _exchange(self, peer: PeerId, code: Code) -> pairing.Joiner:
        joiner = pairing.Joiner(code.secret, me=self._host.peer_id, shower=peer, name=self._name,
                                random_bytes=os.urandom(ENTROPY_BYTES))
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            stream = await self._host.open_stream(peer, PAIR_PROTOCOL)
            try:
                await stream.send_frame(await trio.to_thread.run_sync(joiner.start))  # SPAKE2 off the event loop
                while joiner.state not in (State.PAIRED, State.REFUSED):
                    reply = await trio.to_thread.run_sync(joiner.receive, await stream.receive_frame(MAX_MESSAGE))
                    if joiner.state is State.PAIRED:
                        self._trust.add(peer, joiner.peer_name)
                    if reply is not None:
                        await stream.send_frame(reply)
            finally:
                await stream.close()
        return joiner

    async def _op_join(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        code = pairing.parse_code(str(params.get("code", "")))
        if code is None:
            raise ControlError("a pairing code is nine digits, like 417-093218: run `meshagent pair` on the other device")
        peer = await self._device_for(code, PeerId(str(params["peer"])) if params.get("peer") else None)
        try:
            joiner = await self._exchange(peer, code)
        except RemoteProtocolError as exc:
            raise ControlError(f"pairing with {peer} failed: {exc}") from exc
        except trio.TooSlowError as exc:
            raise ControlError(f"pairing with {peer} timed out: is it still running?") from exc
        except Exception as exc:  # libp2p's assorted errors when the device cannot be reached
            log.info("pairing with %s failed: %r", peer, exc)
            raise ControlError(f"could not reach {peer} to pair ({type(exc).__name__}: {exc})") from exc
        if joiner.state is not State.PAIRED:
            name = joiner.peer_name or peer
            raise ControlError(_REFUSALS[joiner.reason or RefuseReason.NO_CODE].format(name=name))
        log.info("paired with %s (%s)", peer, joiner.peer_name)
        return {"paired": True, "peer_id": peer, "name": joiner.peer_name}

    # --- the trust store ----------------------------------------------------------------

    async def _op_trusted(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"devices": [{"peer_id": d.peer_id, "name": d.name, "paired_at": d.paired_at} for d in self._trust.devices()]}

    async def _op_untrust(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"removed": self._trust.remove(PeerId(str(params.get("peer", ""))))}

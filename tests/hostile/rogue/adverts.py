"""The rogue's attacks on adverts, the peer table, ``lan`` and the bulk side channel.

Attacks (``rogue.call("attack", {"name": NAME, ...})``):

* ``insane_adverts`` — publishes this rogue's own advert, validly signed, with
  numbers no honest node sends (``expires_at`` infinite or NaN, a lifetime of
  ten years, an infinite decode rate, a negative price), on the gossip topic and
  by peer exchange to ``target``.
* ``advert_flood`` — makes fresh identities and sends a validly signed advert
  of each to ``target``: ``count`` of them by peer exchange
  (``via="exchange"``, 64 per message), or on the gossip topic as fast as it
  can for ``seconds`` (``via="gossip"``).
* ``bulk_silent`` — opens ``count`` TCP connections to ``host``:``port`` (a
  receiver's bulk side channel) and sends nothing on them, as a stranger on the
  link that found the port would; ``bulk_release`` closes them.

Behaviour (``--behave NAME``):

* ``claim_addrs`` — the node advertises the addresses in
  ``MESHAGENT_ROGUE_ADDRS`` (comma-separated) instead of its own: a LAN or
  loopback address it is not reached at.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshagent.node.mesh import ADVERT_TOPIC
from meshagent.protocol import exchange
from meshagent.protocol.advert import Advert, ModelAd, bind_sealing_key, encode_advert
from meshagent.protocol.exchange import EXCHANGE_PROTOCOL, MAX_EXCHANGE_ADVERTS, PeerExchange
from meshagent.protocol.signed import PeerId, peer_id_from_public_key

ADDRS_ENV = "MESHAGENT_ROGUE_ADDRS"


async def _exchange(node: Any, target: PeerId, blobs: list[bytes]) -> None:
    """Hand ``blobs`` to ``target`` by peer exchange (its answer is read and ignored)."""
    for i in range(0, len(blobs), MAX_EXCHANGE_ADVERTS):
        stream = await node.host.open_stream(target, EXCHANGE_PROTOCOL)
        try:
            await stream.send_frame(exchange.encode(PeerExchange(tuple(blobs[i : i + MAX_EXCHANGE_ADVERTS]))))
            with trio.move_on_after(5):
                await stream.receive_frame(exchange.MAX_EXCHANGE_BYTES)
        finally:
            await stream.close()


async def insane_adverts(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    target = PeerId(params["target"])
    own: Advert = node.membership.own
    now = time.time()
    model = own.models[0] if own.models else ModelAd(name="fake", sha256="f" * 64, size_bytes=1)
    lies = {  # in order of sequence number: a never-expiring one last, so that it would stay if accepted
        "price_negative": {"price_per_1k_tokens": -1.0},
        "decode_inf": {"models": (replace(model, decode_tps=math.inf, prefill_tps=math.inf),)},
        "ten_years": {"expires_at": now + 10 * 365 * 86400.0},
        "expires_nan": {"expires_at": math.nan},
        "expires_inf": {"expires_at": math.inf},
    }
    blobs = []
    for i, fields in enumerate(lies.values()):
        # Sequence numbers far above the honest ones (days ahead of the millisecond clock), so that an
        # accepted lie would replace the entry and no honest advert of the rogue would replace it again.
        advert = replace(own, seq=int(now * 1000) + 10**9 + i, issued_at=now, **fields)
        blobs.append(encode_advert(advert, node.identity.signing_key))
    for blob in blobs:
        await node.host.publish(ADVERT_TOPIC, blob)
    await _exchange(node, target, blobs)
    return {"sent": list(lies)}


def _stranger(now: float, i: int) -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    peer = peer_id_from_public_key(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    sealing = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    from meshagent.protocol.advert import Hardware

    advert = Advert(
        peer_id=peer, seq=1, issued_at=now, expires_at=now + 10.0, name=f"sybil-{i}",
        addrs=("/ip4/127.0.0.1/tcp/9",), sealing_key=sealing, sealing_key_sig=bind_sealing_key(sealing, key),
        hardware=Hardware(arch="x86_64", os="Linux", cpu_model="cpu", cpu_cores=64, ram_total=1 << 40, ram_free=1 << 40),
        instance=os.urandom(16), started_at=now - 1.0,
        models=(ModelAd(name="big", sha256="b" * 64, size_bytes=1, tags=("size=xl",), decode_tps=1e6),),
    )
    return peer, encode_advert(advert, key)


async def advert_flood(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    """By exchange: ``count`` adverts at once. By gossip: as many as it can publish for ``seconds``."""
    target = PeerId(params["target"])
    peers: list[str] = []
    if params.get("via", "exchange") == "gossip":
        deadline = trio.current_time() + float(params.get("seconds", 15))
        while trio.current_time() < deadline:
            peer, blob = _stranger(time.time(), len(peers))
            await node.host.publish(ADVERT_TOPIC, blob)
            peers.append(peer)
            await trio.sleep(0)
    else:
        made = [_stranger(time.time(), i) for i in range(int(params.get("count", 200)))]
        await _exchange(node, target, [blob for _, blob in made])
        peers = [peer for peer, _ in made]
    return {"peers": peers}


_HELD: list[trio.SocketStream] = []
"""Connections ``bulk_silent`` keeps open (and silent) until ``bulk_release``."""


async def bulk_silent(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Open ``count`` connections to ``host``:``port`` and send nothing on them; they stay open."""
    opened = 0
    for _ in range(int(params.get("count", 12))):
        with trio.move_on_after(2):
            try:
                _HELD.append(await trio.open_tcp_stream(params["host"], int(params["port"])))
                opened += 1
            except OSError:
                break
    return {"open": opened}


async def bulk_release(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    closed = len(_HELD)
    while _HELD:
        await _HELD.pop().aclose()
    return {"closed": closed}


def claim_addrs() -> None:
    import meshagent.node.node as node_module

    claimed = tuple(a for a in os.environ[ADDRS_ENV].split(",") if a)
    real = node_module.Node.build_advert

    def build_advert(self: Any, *args: Any) -> Advert:
        return replace(real(self, *args), addrs=claimed)

    node_module.Node.build_advert = build_advert  # type: ignore[method-assign]


ATTACKS = {
    "insane_adverts": insane_adverts,
    "advert_flood": advert_flood,
    "bulk_silent": bulk_silent,
    "bulk_release": bulk_release,
}
BEHAVIOURS = {"claim_addrs": claim_addrs}

"""Run one MdnsDiscovery and report what it sees as JSON lines, until SIGTERM.

Used by the lab tests: ``ip netns exec NS python mdns_probe.py PEER_ID PORT``.
Lines: ``{"event": "started"}``, ``{"event": "found", "peer": ..., "addrs": [...]}``,
``{"event": "gone", "peer": ...}``, ``{"event": "stopped"}``; each with ``t``
(``time.time()``). SIGTERM or SIGINT cancels the service, which says goodbye.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time

import trio

from meshagent.net.addresses import concrete_addrs
from meshagent.net.mdns import MdnsDiscovery, MdnsEvent, PeerFound, PeerGone


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def main(peer_id: str, port: int) -> None:
    send, receive = trio.open_memory_channel[MdnsEvent](math.inf)
    mdns = MdnsDiscovery(peer_id, lambda: concrete_addrs([f"/ip4/0.0.0.0/tcp/{port}"]), send)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(mdns.run)
            say("started", addrs=list(concrete_addrs([f"/ip4/0.0.0.0/tcp/{port}"])))

            async def report() -> None:
                async for event in receive:
                    match event:
                        case PeerFound(peer, addrs):
                            say("found", peer=peer, addrs=list(addrs))
                        case PeerGone(peer):
                            say("gone", peer=peer)

            nursery.start_soon(report)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    say("stopped")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))

"""An impostor on the lab's LAN: announces another node's peer id over mDNS at its own address.

Used by the lab tests: ``ip netns exec NS python mdns_impostor.py CLAIMED_PEER_ID IP PORT MODE DATA_DIR``.

* mDNS: a real :class:`~meshagent.net.mdns.MdnsDiscovery` announcing ``CLAIMED_PEER_ID`` (the
  victim's genuine peer) with the address ``/ip4/IP/tcp/PORT`` — a forged record on the wire.
* ``IP:PORT``: a TCP listener that reports every connection (who dialled the forged address),
  then, in ``MODE`` ``refuse``, pipes it to the impostor's own libp2p host (its own identity from
  ``DATA_DIR``, serving every meshagent protocol and reporting any stream that reaches it), or in
  ``MODE`` ``tarpit`` holds it open without a byte of answer.

JSON lines on stdout, each with ``t``: ``started``; ``tcp`` (``from``: the dialler's IP);
``stream`` (``protocol``, ``peer``); ``connected`` (``peers``: the libp2p host's connected peers,
printed when they change); ``stopped``. SIGTERM stops it (with an mDNS goodbye).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import trio

from meshagent.net.host import Stream, open_host
from meshagent.net.mdns import MdnsDiscovery, MdnsEvent
from meshagent.node.identity import load_or_create_identity

MESHAGENT_PROTOCOLS = (
    "/meshagent/auction/1.0.0", "/meshagent/exchange/1.0.0", "/meshagent/handoff/1", "/meshagent/pair/2.0.0",
    "/meshagent/result/1.0.0", "/meshagent/tool/1.0.0",
)


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(1 << 16):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def main(claimed: str, ip: str, port: int, mode: str, data_dir: str) -> None:
    identity = load_or_create_identity(Path(data_dir))
    async with open_host(identity, [f"/ip4/{ip}/tcp/0"]) as host:
        inner_port = int(host.addrs[0].rsplit("/", 1)[1])
        for protocol in MESHAGENT_PROTOCOLS:
            async def reached(stream: Stream, protocol: str = protocol) -> None:
                say("stream", protocol=protocol, peer=stream.peer)
                await stream.reset()
            host.set_handler(protocol, reached)

        async def forward(conn: trio.SocketStream) -> None:
            say("tcp", **{"from": conn.socket.getpeername()[0]})
            async with conn:
                if mode == "tarpit":
                    while await conn.receive_some(1 << 16):
                        pass  # read and never answer, until the dialler gives up
                    return
                inner = await trio.open_tcp_stream(ip, inner_port)
                async with inner, trio.open_nursery() as nursery:
                    nursery.start_soon(pipe, conn, inner)
                    nursery.start_soon(pipe, inner, conn)

        async def watch_connections() -> None:
            last: list[str] = []
            while True:
                now = sorted(host.connected_peers())
                if now != last:
                    say("connected", peers=now)
                    last = now
                await trio.sleep(0.1)

        send, receive = trio.open_memory_channel[MdnsEvent](math.inf)
        forged = MdnsDiscovery(claimed, lambda: [f"/ip4/{ip}/tcp/{port}"], send, interface="eth0")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(port, host=ip)
                nursery.start_soon(trio.serve_listeners, forward, listeners)
                nursery.start_soon(watch_connections)
                await nursery.start(forged.run)
                nursery.start_soon(drain, receive)
                say("started", claimed=claimed, announced=f"/ip4/{ip}/tcp/{port}", impostor=identity.peer_id)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    say("stopped")


async def drain(receive: trio.MemoryReceiveChannel[MdnsEvent]) -> None:
    async for _ in receive:
        pass


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])

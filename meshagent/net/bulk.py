"""A bulk side channel for sealed snapshot bodies: one plain TCP connection per handoff.

py-libp2p streams move ~15–36 MB/s (Noise + Yamux in Python), below a gigabit
link. The body of a sealed snapshot is already encrypted and every chunk is
authenticated under a key bound to the signed header, so it needs no second
layer of crypto: a plain TCP connection is enough, negotiated over the
Noise-authenticated libp2p stream.

* The receiver opens a one-shot listener (:class:`BulkListener`) and sends its
  addresses plus a 32-byte one-time token in ``Accept``.
* The sender connects (:func:`connect_bulk`), writes the token, then the body.
* The receiver accepts connections until one presents the token (wrong tokens
  are dropped; at most a few tries), and closes the listener.

A path attacker can only break the transfer (the AEAD refuses altered bytes),
not read or forge it. When the side channel cannot connect, the sender falls
back to the libp2p stream.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Final

import trio

from meshagent.errors import HandoffError

__all__ = ["TOKEN_BYTES", "BulkListener", "connect_bulk", "ips_of_addrs"]

log = logging.getLogger(__name__)

TOKEN_BYTES: Final = 32
_MAX_TRIES: Final = 8
_SOCK_BUF: Final = 4 << 20


def ips_of_addrs(addrs: Sequence[str]) -> list[str]:
    """The IPv4/IPv6 addresses in multiaddrs like ``/ip4/10.0.0.2/tcp/4737``."""
    out: list[str] = []
    for addr in addrs:
        parts = addr.split("/")
        for proto in ("ip4", "ip6"):
            if proto in parts:
                i = parts.index(proto)
                if i + 1 < len(parts) and parts[i + 1] not in out:
                    out.append(parts[i + 1])
    return out


def _tune(sock: trio.socket.SocketType) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, _SOCK_BUF)
        except OSError:
            pass


class BulkListener:
    """One-shot TCP listener bound to the given local IPs, port chosen by the kernel."""

    def __init__(self, ips: Sequence[str], token: bytes) -> None:
        if len(token) != TOKEN_BYTES:
            raise ValueError("the bulk token must be 32 bytes")
        self._ips = list(ips)
        self._token = token
        self._socks: list[trio.socket.SocketType] = []
        self.addrs: tuple[str, ...] = ()

    async def __aenter__(self) -> BulkListener:
        addrs = []
        for ip in self._ips:
            family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                _tune(sock)
                await sock.bind((ip, 0))
                sock.listen(4)
            except OSError as exc:
                sock.close()
                log.debug("bulk listener cannot bind %s: %s", ip, exc)
                continue
            self._socks.append(sock)
            port = sock.getsockname()[1]
            addrs.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
        self.addrs = tuple(addrs)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    async def accept(self) -> trio.SocketStream:
        """The first connection that presents the token; others are closed. Cancel to give up."""
        if not self._socks:
            raise HandoffError("the bulk listener has no socket")
        send, receive = trio.open_memory_channel[trio.SocketStream](0)
        async with trio.open_nursery() as nursery:
            for sock in self._socks:
                nursery.start_soon(self._accept_on, sock, send)
            stream = await receive.receive()
            nursery.cancel_scope.cancel()
        return stream

    async def _accept_on(self, sock: trio.socket.SocketType, send: trio.MemorySendChannel[trio.SocketStream]) -> None:
        for _ in range(_MAX_TRIES):
            conn, peer = await sock.accept()
            stream = trio.SocketStream(conn)
            try:
                with trio.fail_after(5):
                    got = bytearray()
                    while len(got) < TOKEN_BYTES:
                        data = await stream.receive_some(TOKEN_BYTES - len(got))
                        if not data:
                            break
                        got += data
            except (trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.info("bulk connection from %s dropped before its token: %s", peer, exc)
                await stream.aclose()
                continue
            if hmac.compare_digest(bytes(got), self._token):
                _tune(conn)
                await send.send(stream)
                return
            log.warning("bulk connection from %s presented a wrong token", peer)
            await stream.aclose()
        await trio.sleep_forever()


async def connect_bulk(addrs: Sequence[str], token: bytes, *, timeout: float = 3.0) -> trio.SocketStream | None:
    """Connect to the first reachable ``host:port`` and present ``token``; None when none connects."""
    for addr in addrs:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            port_n = int(port)
        except ValueError:
            log.info("ignoring malformed bulk address %r", addr)
            continue
        with trio.move_on_after(timeout):
            try:
                stream = await trio.open_tcp_stream(host, port_n)
            except OSError as exc:
                log.info("bulk side channel to %s failed: %s", addr, exc)
                continue
            _tune(stream.socket)
            try:
                await stream.send_all(token)
            except (trio.BrokenResourceError, OSError) as exc:
                log.info("bulk side channel to %s broke: %s", addr, exc)
                await stream.aclose()
                continue
            return stream
    return None

"""A bulk side channel for sealed snapshot bodies: one plain TCP connection per handoff.

py-libp2p streams move ~15–36 MB/s (Noise + Yamux in Python), below a gigabit
link. The body of a sealed snapshot is already encrypted and every chunk is
authenticated under a key bound to the signed header, so it needs no second
layer of crypto: a plain TCP connection is enough, negotiated over the
Noise-authenticated libp2p stream.

* The receiver opens a one-shot listener (:class:`BulkListener`) and sends its
  addresses plus a 32-byte one-time token in ``Accept``.
* The sender connects (:func:`connect_bulk`), writes the token, then the body.
* The receiver accepts connections from the moment it opens the listener and
  reads their tokens concurrently, each within a few seconds and a bounded
  number at once, until one presents the token; the rest are closed. A stranger
  that connects and sends nothing cannot hold up the sender's connection.

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
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Final

import trio

from meshagent.errors import HandoffError

__all__ = ["TOKEN_BYTES", "TOKEN_TIMEOUT_S", "MAX_PENDING", "BulkListener", "connect_bulk", "ips_of_addrs"]

log = logging.getLogger(__name__)

TOKEN_BYTES: Final = 32
TOKEN_TIMEOUT_S: Final = 5.0
"""How long one connection to the listener has to present its token."""
MAX_PENDING: Final = 16
"""Most connections waiting at once to present their token."""
_BACKLOG: Final = 64
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
    """One-shot TCP listener bound to the given local IPs, port chosen by the kernel.

    From the moment it is entered it accepts connections on every socket and
    reads each one's token *concurrently*: a connection that sends nothing (or
    too little) cannot hold up the one that presents the token. Each connection
    has ``token_timeout_s`` to present its token, and at most ``max_pending``
    connections wait at once (a newcomer beyond that closes the oldest waiting
    one, which has had the longest time). The first connection with the right
    token is the one :meth:`accept` returns; everything else is closed.
    """

    def __init__(
        self,
        ips: Sequence[str],
        token: bytes,
        *,
        token_timeout_s: float = TOKEN_TIMEOUT_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if len(token) != TOKEN_BYTES:
            raise ValueError("the bulk token must be 32 bytes")
        self._ips = list(ips)
        self._token = token
        self._token_timeout_s = token_timeout_s
        self._max_pending = max_pending
        self._socks: list[trio.socket.SocketType] = []
        self._pending: list[trio.CancelScope] = []
        self._stack = AsyncExitStack()
        self._work = trio.CancelScope()
        """Cancelled to stop accepting: the tasks' own scope, never the nursery's (whose scope also
        holds the code inside ``async with`` of the caller)."""
        self._won, self._winner = trio.open_memory_channel[trio.SocketStream](1)
        self.dropped = 0
        """Connections closed without being the one (no token in time, a wrong token, pushed out)."""
        self.addrs: tuple[str, ...] = ()

    async def __aenter__(self) -> BulkListener:
        addrs = []
        for ip in self._ips:
            family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                _tune(sock)
                await sock.bind((ip, 0))
                sock.listen(_BACKLOG)
            except OSError as exc:
                sock.close()
                log.debug("bulk listener cannot bind %s: %s", ip, exc)
                continue
            self._socks.append(sock)
            port = sock.getsockname()[1]
            addrs.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
        self.addrs = tuple(addrs)
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(self._serve)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._work.cancel()
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            for sock in self._socks:
                sock.close()
            self._socks.clear()
            try:
                unclaimed = self._winner.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                pass
            else:
                with trio.CancelScope(shield=True):
                    await unclaimed.aclose()
            if self.dropped:
                log.info("bulk listener closed %d connection(s) that were not the sender's", self.dropped)

    async def accept(self) -> trio.SocketStream:
        """The first connection that presented the token. Cancel to give up."""
        if not self._socks:
            raise HandoffError("the bulk listener has no socket")
        return await self._winner.receive()

    async def _serve(self) -> None:
        with self._work:
            async with trio.open_nursery() as nursery:
                for sock in self._socks:
                    nursery.start_soon(self._accept_on, sock, nursery)

    async def _accept_on(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                conn, peer = await sock.accept()
            except OSError as exc:  # out of descriptors, or the socket closed: stop listening here
                log.warning("bulk listener stops accepting: %s", exc)
                return
            if len(self._pending) >= self._max_pending:
                self._pending.pop(0).cancel()  # the longest-waiting connection had its chance
            scope = trio.CancelScope(deadline=trio.current_time() + self._token_timeout_s)
            self._pending.append(scope)
            nursery.start_soon(self._check, trio.SocketStream(conn), peer, scope)

    async def _check(self, stream: trio.SocketStream, peer: object, scope: trio.CancelScope) -> None:
        """Read one connection's token; hand it over if it is the right one, else close it."""
        handed = False
        got = bytearray()
        try:
            with scope:
                while len(got) < TOKEN_BYTES:
                    data = await stream.receive_some(TOKEN_BYTES - len(got))
                    if not data:
                        break
                    got += data
            if self._work.cancel_called:
                return  # the sender's connection is already here, or the listener is closing
            if len(got) == TOKEN_BYTES and hmac.compare_digest(bytes(got), self._token):
                _tune(stream.socket)
                self._won.send_nowait(stream)
                handed = True
                self._work.cancel()  # the one connection is here: stop accepting
                return
            self.dropped += 1
            if scope.cancelled_caught:
                log.debug("bulk connection from %s gave no token in time", peer)
            elif len(got) == TOKEN_BYTES:
                log.warning("bulk connection from %s presented a wrong token", peer)
            else:
                log.debug("bulk connection from %s closed before its token", peer)
        except (trio.BrokenResourceError, OSError) as exc:
            self.dropped += 1
            log.debug("bulk connection from %s broke before its token: %s", peer, exc)
        finally:
            if scope in self._pending:
                self._pending.remove(scope)
            if not handed:
                with trio.CancelScope(shield=True):
                    await stream.aclose()


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

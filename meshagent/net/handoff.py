"""The trio shell of ``/meshagent/handoff/1``: drives the pure machines over a libp2p stream.

:func:`send_snapshot` runs the sender's side for a sealed container file on
disk (the sender's escrow copy); :func:`serve_handoff` is the stream handler
for the receiving side and for recovery streams (``Query``, re-sent
``Commit``). Durable decisions are the caller's: the hooks are awaited
*before* the message that announces the step goes out, which is what the
recovery rules in :mod:`meshagent.protocol.handoff` rely on.

The body goes over the bulk side channel (:mod:`meshagent.net.bulk`) when the
receiver offers one and it connects, else over the libp2p stream itself.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

import trio

from meshagent.errors import HandoffError, HandoffRejected, MeshError, RemoteProtocolError
from meshagent.net.bulk import TOKEN_BYTES, BulkListener, connect_bulk
from meshagent.net.host import MeshHost, Stream
from meshagent.protocol import handoff as hp
from meshagent.protocol import snapshot as snap
from meshagent.protocol.handoff import (
    HANDOFF_PROTOCOL,
    MAX_MESSAGE,
    Abort,
    Accept,
    Body,
    Commit,
    HandoffReceiver,
    HandoffSender,
    Offer,
    Query,
    Reject,
    Resumed,
    Status,
    Stored,
    Via,
)
from meshagent.protocol.signed import PeerId

__all__ = [
    "Progress",
    "SenderHooks",
    "ReceiverHooks",
    "SendResult",
    "send_snapshot",
    "serve_handoff",
    "query_sender",
    "resend_commit",
    "body_ranges",
    "read_container_header",
    "reach",
    "open_handoff_stream",
    "HANDOFF_PROTOCOL",
]

log = logging.getLogger(__name__)

PIECE: Final = 1 << 20
MESSAGE_TIMEOUT_S: Final = 30.0
BODY_IDLE_S: Final = 30.0

Progress = Callable[[str, int, int], Awaitable[None]]
"""``progress(phase, done, total)``."""


async def _no_progress(phase: str, done: int, total: int) -> None:
    return None


# --- container files ---------------------------------------------------------------


def read_container_header(f: BinaryIO, max_header: int = snap.MAX_HEADER) -> bytes:
    """The header envelope of a sealed container file (not verified here)."""
    prefix = f.read(len(snap.MAGIC) + 4)
    if len(prefix) < len(snap.MAGIC) + 4 or not prefix.startswith(snap.MAGIC):
        raise HandoffError("not a sealed meshagent snapshot file")
    size = int.from_bytes(prefix[len(snap.MAGIC) :], "big")
    if size > max_header:
        raise HandoffError("snapshot header too large")
    blob = f.read(size)
    if len(blob) != size:
        raise HandoffError("truncated snapshot file")
    return blob


def body_ranges(path: Path, header: snap.SnapshotHeader, skip: frozenset[str]) -> list[tuple[int, int]]:
    """(offset, length) of the body bytes to send: every chunk frame of the sections not in ``skip``."""
    ranges: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        blob = read_container_header(f)
        offset = len(snap.MAGIC) + 4 + len(blob)
        for section in header.sections:
            start = offset
            for _ in range(snap.chunk_count(section.size, header.chunk_size)):
                f.seek(offset)
                size = int.from_bytes(f.read(4), "big")
                offset += 4 + size
            if section.name not in skip:
                if ranges and ranges[-1][0] + ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], ranges[-1][1] + offset - start)
                else:
                    ranges.append((start, offset - start))
        if offset != os.fstat(f.fileno()).st_size:
            raise HandoffError(f"sealed file {path} does not match its header")
    return ranges


# --- reaching a peer ------------------------------------------------------------------


async def reach(host: MeshHost, peer: PeerId, addrs: tuple[str, ...] | list[str]) -> bool:
    """Make sure we can open streams to ``peer``: forget past dial failures, dial if needed."""
    host.forget_failures(peer)
    if host.is_connected(peer):
        return True
    return await host.dial(peer, list(addrs))


async def open_handoff_stream(host: MeshHost, peer: PeerId, addrs: tuple[str, ...] | list[str] = ()) -> Stream:
    """Open a handoff stream; on failure drop the (possibly dead) connection, re-dial once and retry."""
    try:
        return await host.open_stream(peer, HANDOFF_PROTOCOL)
    except Exception as exc:  # py-libp2p raises assorted types for dead connections
        log.debug("opening a handoff stream to %s failed (%s); re-dialling", peer, exc)
    await host.disconnect(peer)
    await reach(host, peer, addrs)
    try:
        return await host.open_stream(peer, HANDOFF_PROTOCOL)
    except Exception as exc:  # still unreachable
        raise HandoffError(f"cannot open a handoff stream to {peer}: {exc}") from exc


# --- framed messages -----------------------------------------------------------------


async def _send(stream: Stream, frame: bytes) -> None:
    await stream.send_frame(frame)


async def _receive(stream: Stream, timeout: float = MESSAGE_TIMEOUT_S) -> hp.Message:
    with trio.fail_after(timeout):
        return hp.decode(await stream.receive_frame(MAX_MESSAGE))


# --- sender --------------------------------------------------------------------------


class SenderHooks(Protocol):
    async def accepted(self, have: frozenset[str], via: Via) -> None:
        """The receiver accepted: persist that the body is being sent."""

    async def stored(self) -> None:
        """The receiver persisted its copy: persist ``committed`` (never thaw after this)."""

    async def resumed(self) -> None:
        """The receiver runs the agent: persist done, delete the escrow copy."""


@dataclass(frozen=True, slots=True)
class SendResult:
    via: Via
    body_bytes: int
    resumed: bool
    """False when the stream broke after Commit: the caller re-sends Commit (rule S3)."""


async def send_snapshot(
    host: MeshHost,
    peer: PeerId,
    path: Path,
    header: snap.SnapshotHeader,
    header_blob: bytes,
    hooks: SenderHooks,
    *,
    progress: Progress = _no_progress,
    allow_bulk: bool = True,
    timeout: float = MESSAGE_TIMEOUT_S,
    addrs: tuple[str, ...] = (),
) -> SendResult:
    """Hand the sealed container at ``path`` to ``peer``.

    Raises :class:`HandoffRejected` on a reject and :class:`HandoffError` on
    any failure before ``Stored`` (rule S1 applies: the caller aborts and
    thaws). After ``Stored`` it never raises for network errors.
    """
    machine = HandoffSender(header.agent_id, header.generation)
    stream = await open_handoff_stream(host, peer, addrs)
    try:
        return await _run_sender(stream, machine, path, header, header_blob, hooks, progress, allow_bulk, timeout)
    finally:
        await stream.close()


async def _run_sender(
    stream: Stream,
    machine: HandoffSender,
    path: Path,
    header: snap.SnapshotHeader,
    header_blob: bytes,
    hooks: SenderHooks,
    progress: Progress,
    allow_bulk: bool,
    timeout: float,
) -> SendResult:
    stored = False
    try:
        await _send(stream, machine.send(Offer(header_blob)))
        await progress("offered", 0, 0)
        reply = machine.receive(await _receive(stream, timeout))
        match reply:
            case Reject(reason, detail):
                raise HandoffRejected(str(reason), detail)
            case Accept(have, bulk_addrs, token):
                skip = frozenset(have) & {"module"}
        ranges = await trio.to_thread.run_sync(body_ranges, path, header, skip)
        size = sum(n for _, n in ranges)
        bulk = await connect_bulk(bulk_addrs, token) if allow_bulk and bulk_addrs and len(token) == TOKEN_BYTES else None
        via = Via.BULK if bulk is not None else Via.STREAM
        await hooks.accepted(skip, via)
        await _send(stream, machine.send(Body(via, size)))
        try:
            await _send_body(path, ranges, size, machine, progress, bulk.send_all if bulk else stream.send)
        finally:
            if bulk is not None:
                await bulk.aclose()
        msg = machine.receive(await _receive(stream, timeout + size / (1 << 20)))
        if not isinstance(msg, Stored):
            raise HandoffError(f"expected Stored, got {type(msg).__name__}")
    except (RemoteProtocolError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise HandoffError(f"handoff of {header.agent_id} to {stream.peer} failed before it was stored: {exc}") from exc
    except HandoffRejected:
        raise
    except MeshError:
        raise
    except Exception as exc:  # py-libp2p stream errors
        raise HandoffError(f"handoff of {header.agent_id} to {stream.peer} failed before it was stored: {exc}") from exc
    stored = True
    await hooks.stored()
    await progress("committed", size, size)
    try:
        await _send(stream, machine.send(Commit(header.agent_id, header.generation)))
        msg = machine.receive(await _receive(stream, timeout))
    except Exception as exc:  # after commit nothing is fatal: rule S3 re-sends Commit later
        log.info("handoff of %s: no Resumed yet (%s); will re-send Commit", header.agent_id, exc)
        return SendResult(via, size, resumed=False)
    assert stored and isinstance(msg, Resumed)
    await hooks.resumed()
    await progress("resumed", size, size)
    return SendResult(via, size, resumed=True)


async def _send_body(
    path: Path,
    ranges: list[tuple[int, int]],
    size: int,
    machine: HandoffSender,
    progress: Progress,
    send: Callable[[bytes], Awaitable[None]],
) -> None:
    done = 0
    with open(path, "rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            left = length
            while left:
                piece = f.read(min(PIECE, left))
                if not piece:
                    raise HandoffError(f"sealed file {path} is shorter than expected")
                with trio.fail_after(BODY_IDLE_S):
                    await send(piece)
                left -= len(piece)
                done += len(piece)
                machine.body_progress(len(piece))
                await progress("sending", done, size)
    if size == 0:
        machine.body_progress(0)


# --- receiver ----------------------------------------------------------------------


class ReceiverHooks(Protocol):
    """What the node decides and persists for the receiving side and for recovery streams."""

    async def offer(self, peer: PeerId, header_blob: bytes) -> snap.SnapshotHeader | Reject:
        """Verify the header (signature first) and admit it; persist the generation seen."""

    def have(self, header: snap.SnapshotHeader) -> frozenset[str]:
        """Cacheable sections already held here (e.g. ``module`` when its sha256 is known)."""

    def incoming_path(self, header: snap.SnapshotHeader) -> Path:
        """Where the partial sealed bytes go (a ``.part`` file)."""

    def reader(self, header_blob: bytes, skip: frozenset[str]) -> snap.SnapshotReader:
        """A verify-mode reader for this header."""

    async def stored(self, header: snap.SnapshotHeader, part: Path, skip: frozenset[str]) -> None:
        """Make the complete sealed file durable and persist ``stored``."""

    async def aborted(self, header: snap.SnapshotHeader, part: Path) -> None:
        """Delete partial bytes and persist ``aborted`` (rule R1)."""

    async def committed(self, header: snap.SnapshotHeader) -> None:
        """Persist committed, adopt the agent, persist resumed (rule R3)."""

    def commit_missing(self, header: snap.SnapshotHeader) -> None:
        """Stored, but the stream broke before Commit: start asking the sender (rule R2)."""

    async def query(self, peer: PeerId, agent_id: str, generation: int) -> str:
        """Sender side of rule S5: the durable decision for a receiver that asks."""

    async def recommit(self, peer: PeerId, agent_id: str, generation: int) -> bool:
        """Receiver side of a re-sent Commit (R2/R3/R4); True when the agent runs here."""

    def bulk_ips(self) -> list[str]:
        """Local IPs the bulk listener may bind (empty: no side channel)."""

    async def progress(self, header: snap.SnapshotHeader, done: int, total: int) -> None: ...


async def serve_handoff(stream: Stream, hooks: ReceiverHooks, *, timeout: float = MESSAGE_TIMEOUT_S) -> None:
    """The ``/meshagent/handoff/1`` stream handler."""
    first = await _receive(stream, timeout)
    match first:
        case Offer():
            await _run_receiver(stream, first, hooks, timeout)
        case Query(agent_id, generation):
            decision = await hooks.query(stream.peer, agent_id, generation)
            await _send(stream, hp.encode(Status(agent_id, generation, decision)))
        case Commit(agent_id, generation):
            if await hooks.recommit(stream.peer, agent_id, generation):
                await _send(stream, hp.encode(Resumed(agent_id, generation)))
            else:
                await _send(stream, hp.encode(Status(agent_id, generation, "unknown")))
        case _:
            raise RemoteProtocolError(f"a handoff stream cannot start with {type(first).__name__}")
    await stream.close()


async def _run_receiver(stream: Stream, offer: Offer, hooks: ReceiverHooks, timeout: float) -> None:
    verdict = await hooks.offer(stream.peer, offer.header_blob)
    if isinstance(verdict, Reject):
        machine = HandoffReceiver(max_body=0)
        machine.receive(offer)
        await _send(stream, machine.send(verdict))
        return
    header = verdict
    skip = hooks.have(header)
    machine = HandoffReceiver(max_body=header.sealed_bound(skip))
    machine.receive(offer)
    machine.accepted_header(header.agent_id, header.generation)
    part = hooks.incoming_path(header)
    token = secrets.token_bytes(TOKEN_BYTES)
    ips = hooks.bulk_ips()
    try:
        async with BulkListener(ips, token) as listener:
            await _send(stream, machine.send(Accept(tuple(sorted(skip)), listener.addrs if ips else (), token)))
            body = machine.receive(await _receive(stream, timeout))
            if not isinstance(body, Body):
                raise RemoteProtocolError(f"expected Body, got {type(body).__name__}")
            reader = hooks.reader(offer.header_blob, skip)
            with open(part, "wb") as f:
                f.write(snap.MAGIC + len(offer.header_blob).to_bytes(4, "big") + offer.header_blob)
                reader.receive_data(b"")  # consumes the HeaderVerified event
                if body.via is Via.BULK:
                    with trio.fail_after(timeout):
                        conn = await listener.accept()
                    async with conn:
                        await _receive_body(conn.receive_some, body.size, machine, reader, f, hooks, header)
                else:
                    await _receive_body(stream.raw.read, body.size, machine, reader, f, hooks, header)
                reader.close()
                f.flush()
                os.fsync(f.fileno())
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await hooks.aborted(header, part)
        if isinstance(exc, (MeshError, trio.TooSlowError, OSError, trio.BrokenResourceError)):
            log.warning("incoming handoff of %s from %s failed: %s", header.agent_id, stream.peer, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return
        raise
    await hooks.stored(header, part, skip)
    await _send(stream, machine.send(Stored(header.agent_id, header.generation)))
    try:
        msg = machine.receive(await _receive(stream, timeout))
    except Exception as exc:  # rule R2: we hold a stored copy and will ask the sender
        log.info("handoff of %s: stored, no Commit yet (%s); will ask %s", header.agent_id, exc, stream.peer)
        hooks.commit_missing(header)
        return
    match msg:
        case Commit():
            await hooks.committed(header)
            await _send(stream, machine.send(Resumed(header.agent_id, header.generation)))
        case Abort(reason):
            log.info("handoff of %s: the sender sent Abort after Stored (%s); asking it", header.agent_id, reason)
            hooks.commit_missing(header)


async def _receive_body(
    read: Callable[[int], Awaitable[bytes]],
    size: int,
    machine: HandoffReceiver,
    reader: snap.SnapshotReader,
    f: BinaryIO,
    hooks: ReceiverHooks,
    header: snap.SnapshotHeader,
) -> None:
    done = 0
    next_report = 0
    while done < size:
        with trio.fail_after(BODY_IDLE_S):
            data = await read(min(PIECE, size - done))
        if not data:
            raise HandoffError(f"the body of {header.agent_id} ended after {done} of {size} bytes")
        reader.receive_data(data)
        f.write(data)
        done += len(data)
        machine.body_progress(len(data))
        if done >= next_report:
            await hooks.progress(header, done, size)
            next_report = done + (4 << 20)
    if not reader.complete:
        raise HandoffError(f"the body of {header.agent_id} is incomplete")


# --- recovery streams ------------------------------------------------------------------


async def query_sender(host: MeshHost, peer: PeerId, agent_id: str, generation: int, addrs: tuple[str, ...] = ()) -> str:
    """Rule R2: ask the sender what it decided. Raises HandoffError when it cannot be asked."""
    try:
        stream = await open_handoff_stream(host, peer, addrs)
        try:
            await _send(stream, hp.encode(Query(agent_id, generation)))
            reply = await _receive(stream)
        finally:
            await stream.close()
    except MeshError as exc:
        raise HandoffError(f"cannot ask {peer} about {agent_id}: {exc}") from exc
    except Exception as exc:  # unreachable peer: py-libp2p raises assorted types
        raise HandoffError(f"cannot ask {peer} about {agent_id}: {exc}") from exc
    match reply:
        case Status(a, g, decision) if (a, g) == (agent_id, generation):
            return decision
    raise HandoffError(f"{peer} answered a query about {agent_id} with {reply!r}")


async def resend_commit(host: MeshHost, peer: PeerId, agent_id: str, generation: int, addrs: tuple[str, ...] = ()) -> bool:
    """Rule S3: re-send Commit; True when the receiver answers Resumed."""
    try:
        stream = await open_handoff_stream(host, peer, addrs)
        try:
            await _send(stream, hp.encode(Commit(agent_id, generation)))
            reply = await _receive(stream)
        finally:
            await stream.close()
    except Exception as exc:  # unreachable peer: retried by the caller
        log.debug("re-sending commit of %s to %s failed: %s", agent_id, peer, exc)
        return False
    return isinstance(reply, Resumed) and (reply.agent_id, reply.generation) == (agent_id, generation)

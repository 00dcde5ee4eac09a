"""Fetching WASI tools by hash from peers (``/meshagent/tool/1.0.0``).

An agent's tools normally travel in its sealed snapshot. When a node needs a tool it
does not hold — an agent launched here declares a tool only a peer has, or a
snapshot left a tool out because the node claimed it — it asks its connected peers
for the module by sha256 and checks the bytes against the hash before storing them.

Wire format: the asker sends one frame ``{"sha256": hex}`` (CBOR); the holder
answers one frame with the module bytes, or an empty frame when it has none.
Tools are code addressed by hash, so any connected peer may ask.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Final

import trio

from meshagent.errors import MeshError
from meshagent.net.host import MeshHost, Stream
from meshagent.protocol import codec
from meshagent.runtime.tools.store import Fetcher, ToolStore
from meshagent.runtime.tools.wasi_tool import MAX_TOOL_MODULE

__all__ = ["TOOL_PROTOCOL", "ToolExchange"]

log = logging.getLogger(__name__)

TOOL_PROTOCOL: Final = "/meshagent/tool/1.0.0"
_SHA: Final = re.compile(r"[0-9a-f]{64}")
_TIMEOUT_S: Final = 30.0


class ToolExchange:
    """Serves this node's tool store to peers and fetches missing tools from them."""

    def __init__(self, host: MeshHost, store: ToolStore) -> None:
        self._host = host
        self._store = store

    async def serve(self, stream: Stream) -> None:
        with trio.fail_after(_TIMEOUT_S):
            request = codec.decode_map(await stream.receive_frame(256), max_size=256, max_depth=1)
            sha = codec.field(request, "sha256", str)
            data = None
            if _SHA.fullmatch(sha):
                data = await trio.to_thread.run_sync(lambda: self._store.get(sha, fetch=False))
            await stream.send_frame(data or b"")
        await stream.close()

    async def fetch(self, sha256: str) -> bytes | None:
        """The module from the first connected peer that has it (checked against its hash)."""
        for peer in self._host.connected_peers():
            try:
                with trio.fail_after(_TIMEOUT_S):
                    stream = await self._host.open_stream(peer, TOOL_PROTOCOL)
                    await stream.send_frame(codec.encode({"sha256": sha256}))
                    data = await stream.receive_frame(MAX_TOOL_MODULE)
                    await stream.close()
            except (MeshError, OSError, trio.TooSlowError) as exc:
                log.debug("asking %s for tool %s failed: %s", peer, sha256[:16], exc)
                continue
            except Exception as exc:  # py-libp2p raises its own types for refused protocols and resets
                log.debug("asking %s for tool %s failed: %s", peer, sha256[:16], exc)
                continue
            if data and hashlib.sha256(data).hexdigest() == sha256:
                log.info("fetched tool %s… (%d bytes) from %s", sha256[:16], len(data), peer)
                return data
        return None

    def fetcher(self, token: trio.lowlevel.TrioToken) -> Fetcher:
        """A blocking fetcher for the tool store (called on agents' worker threads)."""

        def fetch(sha256: str) -> bytes | None:
            try:
                return trio.from_thread.run(self.fetch, sha256, trio_token=token)
            except RuntimeError as exc:  # called on the trio thread itself, or the node is stopping
                log.debug("cannot fetch tool %s now: %s", sha256[:16], exc)
                return None

        return fetch

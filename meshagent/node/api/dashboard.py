"""The dashboard: a static page (no build step) fed by ``/api/state`` and the SSE stream ``/api/events``.

Every open stream is fed by one :class:`StateFeed`: while anyone listens it
builds the state once per tick (every second) and hands the same encoded
event to every stream, which sends it when it differs from the last one sent,
and a comment line after 15 quiet ticks so that proxies keep the connection
open. So a thousand open dashboards cost one state build per tick, not a
thousand; past ``[api] max_event_streams`` a new stream is refused (503).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from meshagent.node.api.errors import ApiError
from meshagent.node.api.mesh_view import MeshView

__all__ = ["dashboard_routes", "StateFeed", "STATIC_DIR", "TICK_S"]

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
TICK_S: Final = 1.0
_KEEPALIVE_TICKS: Final = 15
_KEEPALIVE: Final = b": keepalive\n\n"


def _without_clock(state: dict[str, object]) -> str:
    return json.dumps({k: v for k, v in state.items() if k != "at"}, sort_keys=True, default=str)


class StateFeed:
    """The dashboard state, built once per tick while at least one stream is open, shared by all streams."""

    def __init__(self, view: MeshView, max_streams: int, *, tick_s: float = TICK_S) -> None:
        self._view = view
        self.max_streams = max_streams
        self._tick_s = tick_s
        self.streams = 0
        """Streams open now."""
        self.ticks = 0
        """States built for the streams since the node started (one per tick while any stream is open)."""
        self._event = b""
        self._key = ""
        self._version = 0
        """Bumped when the state (clock aside) changed; streams send on a new version."""
        self._fresh = False
        """Whether the last build happened while streams were open (else a new stream waits for the next)."""
        self._ticked = trio.Event()
        self._wanted = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if self.streams == 0:
                await self._wanted.wait()
                self._wanted = trio.Event()
            try:
                state = await self._view.state()
            except Exception:  # task boundary: a failed build costs one tick, never the node
                log.exception("building the dashboard state failed")
            else:
                key = _without_clock(state)
                if key != self._key:
                    self._key, self._version = key, self._version + 1
                    self._event = b"event: state\ndata: " + json.dumps(state, default=str).encode() + b"\n\n"
            self.ticks += 1
            self._fresh = True
            self._ticked.set()
            self._ticked = trio.Event()
            await trio.sleep(self._tick_s)

    def open(self) -> None:
        """Take a stream place (:class:`ApiError` 503 when all are taken); :meth:`close` gives it back."""
        if self.streams >= self.max_streams:
            raise ApiError(503, f"{self.streams} dashboard streams are open, the most this node serves "
                           "([api] max_event_streams); close one or try later", type="server_error",
                           code="too_many_streams")
        self.streams += 1
        if self.streams == 1:
            self._wanted.set()

    def close(self) -> None:
        self.streams -= 1
        if self.streams == 0:
            self._fresh = False

    async def events(self) -> AsyncIterator[bytes]:
        """One stream's bytes: the state whenever it changed, a keepalive after quiet ticks.

        A stream opened while others run starts from the state they last got (at most a
        tick old); the first stream after a quiet spell waits for a fresh build."""
        sent, quiet = 0, 0
        if not self._fresh:
            await self._ticked.wait()
        while True:
            if self._version != sent:
                sent, quiet = self._version, 0
                yield self._event
            elif quiet >= _KEEPALIVE_TICKS:
                quiet = 0
                yield _KEEPALIVE
            await self._ticked.wait()
            quiet += 1


class _EventStream(StreamingResponse):
    """The SSE response; it holds one of the feed's stream places from its creation to its end."""

    def __init__(self, feed: StateFeed) -> None:
        feed.open()
        self._feed = feed
        self._events = feed.events()
        super().__init__(self._events, media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._feed.close()
            with trio.CancelScope(shield=True):
                await self._events.aclose()


def dashboard_routes(view: MeshView, feed: StateFeed) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def state(request: Request) -> Response:
        return JSONResponse(await view.state())

    async def events(request: Request) -> Response:
        return _EventStream(feed)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "peer_id": view.peer_id})

    return [
        Route("/", index, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]

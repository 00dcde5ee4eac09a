"""The dashboard: a static page (no build step) fed by ``/api/state`` and the SSE stream ``/api/events``.

The stream sends the whole state as one ``state`` event whenever it differs
from the last one sent (checked every second), and a comment line every 15 s
so that proxies keep the connection open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from meshagent.node.api.mesh_view import MeshView

__all__ = ["dashboard_routes", "STATIC_DIR"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_TICK_S: Final = 1.0
_KEEPALIVE_TICKS: Final = 15


def _without_clock(state: dict[str, object]) -> str:
    return json.dumps({k: v for k, v in state.items() if k != "at"}, sort_keys=True, default=str)


def dashboard_routes(view: MeshView) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def state(request: Request) -> Response:
        return JSONResponse(await view.state())

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            last = ""
            quiet = 0
            while True:
                current = await view.state()
                key = _without_clock(current)
                if key != last:
                    last, quiet = key, 0
                    yield b"event: state\ndata: " + json.dumps(current, default=str).encode() + b"\n\n"
                else:
                    quiet += 1
                    if quiet >= _KEEPALIVE_TICKS:
                        quiet = 0
                        yield b": keepalive\n\n"
                await trio.sleep(_TICK_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "peer_id": view.peer_id})

    return [
        Route("/", index, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]

""":class:`ApiService`: the node's HTTP port, served by hypercorn's trio worker in the node's nursery.

One starlette app carries the OpenAI-compatible API (``/v1/...``) and the
dashboard (``/``, ``/api/...``). It listens on ``[api] bind`` (loopback by
default); binding anywhere else turns on bearer-token authentication. Every
request first passes :class:`~meshagent.node.api.guard.RequestGuard` (Host,
Origin, Content-Type, body size), whatever the bind. When
``[api] port`` is taken one of the next 20 is used (then any free port); the URL in
use is logged, written to ``<data dir>/api.url`` and returned by the control
op ``api``.
"""

from __future__ import annotations

import errno
import logging
import socket
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware

from meshagent.config import ApiConfig
from meshagent.errors import ConfigError
from meshagent.node.agents import NodeAgents
from meshagent.node.api.auth import TOKEN_FILE, BearerAuth, is_loopback, load_or_create_token
from meshagent.node.api.chat import ChatAgents
from meshagent.node.api.dashboard import StateFeed, dashboard_routes
from meshagent.node.api.errors import EXCEPTION_HANDLERS
from meshagent.node.api.guard import HostAllowList, RequestGuard
from meshagent.node.api.mesh_view import MeshView
from meshagent.node.api.openai_routes import openai_routes
from meshagent.node.control import Emit, Handler
from meshagent.node.membership import Membership
from meshagent.node.placement import PlacementService

__all__ = ["ApiService", "URL_FILE"]

log = logging.getLogger(__name__)

URL_FILE: Final = "api.url"
_PORT_TRIES: Final = 20
_BACKLOG: Final = 100


def reachable_url(url: str) -> str:
    """hypercorn names the address it bound; a wildcard (``0.0.0.0``, ``::``) is no address to open, so
    name this machine's first address on a network (not loopback, not link-local) instead."""
    from urllib.parse import urlsplit

    from meshagent.net.addresses import local_addresses

    parts = urlsplit(url)
    if parts.hostname not in ("0.0.0.0", "::"):
        return url
    version = 6 if parts.hostname == "::" else 4
    usable = [a.ip for a in local_addresses() if not a.is_loopback and not a.is_link_local and a.ip.version == version]
    if not usable:
        return url
    host = f"[{usable[0]}]" if version == 6 else str(usable[0])
    return f"{parts.scheme}://{host}:{parts.port}"


class ApiService:
    def __init__(self, config: ApiConfig, data_dir: Path, *, membership: Membership, placement: PlacementService,
                 agents: NodeAgents, peer_id: str) -> None:
        self._config = config
        self._data_dir = data_dir
        self.view = MeshView(membership, placement, agents, peer_id)
        self.chat = ChatAgents(agents, placement, peer_id, data_dir / "cache" / "agents",
                               retention_s=float(config.chat_retention_s))
        self.feed = StateFeed(self.view, config.max_event_streams)
        self.hosts = HostAllowList(config.bind, config.allowed_hosts)
        self.url = ""
        self.auth = not is_loopback(config.bind)

    def app(self, token: str | None) -> Starlette:
        middleware = [Middleware(RequestGuard, hosts=self.hosts, max_body_bytes=self._config.max_body_bytes)]
        if token:
            middleware.append(Middleware(BearerAuth, token=token))
        return Starlette(routes=[*openai_routes(self.view, self.chat), *dashboard_routes(self.view, self.feed)],
                         middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)

    def handlers(self) -> dict[str, Handler]:
        async def api(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            return {"url": self.url, "auth": self.auth,
                    "token_file": str(self._data_dir / TOKEN_FILE) if self.auth and not self._config.token else None,
                    "event_streams": self.feed.streams, "max_event_streams": self.feed.max_streams,
                    "state_ticks": self.feed.ticks, "state_builds": self.view.builds,
                    "chat_agents_deleted": self.chat.deleted}

        return {"api": api}

    def _listen(self) -> socket.socket:
        """Bind ``[api] bind`` on the configured port, or one of the next ones, else any free port
        (many nodes on one machine must all start); hypercorn then owns the socket."""
        bind = self._config.bind.strip("[]")
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        ports = [0] if self._config.port == 0 else [*range(self._config.port, self._config.port + _PORT_TRIES), 0]
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((bind, port))
                # Listen here, not later in hypercorn: with SO_REUSEADDR two nodes starting at
                # once can both bind a port nobody listens on yet; only listen() tells them apart.
                sock.listen(_BACKLOG)
                return sock
            except OSError as exc:
                sock.close()
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise ConfigError(f"[api] bind = {self._config.bind!r}: {exc.strerror}") from exc
                log.debug("API port %d unavailable: %s", port, exc)
        raise ConfigError(f"no free port for the API on {self._config.bind}")

    def _hypercorn(self, sock: socket.socket) -> HypercornConfig:
        hc = HypercornConfig()
        hc.bind = [f"fd://{sock.detach()}"]
        hc.backlog = _BACKLOG
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 1.0
        return hc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._config.enabled:
            task_status.started()
            return
        token = load_or_create_token(self._data_dir, self._config.token) if self.auth else None
        app = self.app(token)
        config = self._hypercorn(self._listen())
        async with trio.open_nursery() as nursery:
            await nursery.start(self.chat.run)
            await nursery.start(self.feed.run)
            # hypercorn types its ASGI callable more narrowly than starlette's app; it is one.
            binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            self.url = reachable_url(binds[0])
            await trio.to_thread.run_sync((self._data_dir / URL_FILE).write_text, self.url + "\n")
            log.info("OpenAI-compatible API and dashboard at %s%s", self.url,
                     " (bearer token required)" if self.auth else "")
            nursery.start_soon(self._warm_up)
            task_status.started()

    async def _warm_up(self) -> None:
        """Build the chat agent now, so the first request does not wait for the compiler."""
        try:
            await self.chat.module()
        except Exception as exc:  # task boundary: a failed build is reported again on the first request
            log.warning("building the chat agent failed: %s", exc)

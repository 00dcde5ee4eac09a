"""The node's HTTP service: an OpenAI-compatible API and the live dashboard, on one port.

* :mod:`.service` — :class:`ApiService`, started in the node's nursery: hypercorn's
  trio worker serving one starlette app, on loopback by default.
* :mod:`.openai_routes` — ``GET /v1/models`` and ``POST /v1/chat/completions``.
* :mod:`.chat` — each completion runs as a mesh agent (``agents/chat.c``), so
  placement, privacy classes and sealed handoffs apply to it.
* :mod:`.dashboard` — the mesh as JSON and as server-sent events, and the static page.
* :mod:`.auth`, :mod:`.errors` — bearer tokens for non-loopback binds; OpenAI-style error objects.
"""

from meshagent.node.api.service import ApiService

__all__ = ["ApiService"]

"""Where the API listens when its port is taken: the next ports, then any free port (never a failed node)."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from meshagent.config import ApiConfig
from meshagent.node.api.service import ApiService


def _service(port: int, tmp_path: Path) -> ApiService:
    unused: Any = None  # _listen touches no mesh service
    return ApiService(ApiConfig(port=port), tmp_path, membership=unused, placement=unused, agents=unused, peer_id="me")


def _hold(stack: ExitStack, port: int) -> bool:
    sock = stack.enter_context(socket.socket())
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    sock.listen()
    return True


def test_taken_port_moves_to_the_next_then_to_any(tmp_path: Path) -> None:
    for base in range(41000, 60000, 97):
        with ExitStack() as stack:
            if not all(_hold(stack, port) for port in range(base, base + 20)):
                continue
            with _service(base, tmp_path)._listen() as sock:
                assert sock.getsockname()[1] not in range(base, base + 20)  # the whole range was taken: any port
            stack.close()
            with ExitStack() as again:
                assert _hold(again, base)
                with _service(base, tmp_path)._listen() as sock:
                    assert base < sock.getsockname()[1] < base + 20
            return
    raise AssertionError("no 20 free consecutive ports on this machine")

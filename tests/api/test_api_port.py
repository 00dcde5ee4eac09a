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


def test_two_nodes_starting_at_once_get_different_ports(tmp_path: Path) -> None:
    """Two sockets with SO_REUSEADDR may both bind a port nobody listens on yet: the
    second node must still end up on a port of its own, not fail in listen()."""
    for base in range(43000, 60000, 89):
        first = _service(base, tmp_path)._listen()
        second = _service(base, tmp_path)._listen()
        with first, second:
            if first.getsockname()[1] != base:
                continue  # someone else had the port; try another base
            assert second.getsockname()[1] != base
            second.listen()  # what hypercorn does with the socket: must not raise
        return
    raise AssertionError("no free port found")

"""The API inside a node's life: a node with a dashboard open (an endless SSE stream) still stops cleanly."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess
from tests.conftest import MODEL_CACHE


@pytest.mark.timeout(120)
def test_node_stops_cleanly_with_a_dashboard_stream_open(tmp_path: Path) -> None:
    data = tmp_path / "pi"
    write_device_config(data, "pi", MODEL_CACHE)
    with (data / "config.toml").open("a") as f:
        f.write("\n[api]\nport = 0\n")
    node = NodeProcess(data, name="pi").start()
    url = node.call("api")["url"]
    assert (data / "api.url").read_text().strip() == url
    with urllib.request.urlopen(url + "/api/events", timeout=30) as stream:
        assert stream.readline() == b"event: state\n"  # the stream is open and live
        assert node.stop() == 0  # SIGTERM, not the SIGKILL that stop() sends when the node hangs

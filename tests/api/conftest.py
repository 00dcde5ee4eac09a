"""A live three-node mesh on loopback with the HTTP API on, shared by the API and dashboard tests.

phone (tiny-chat) and gpu (large-chat) join through the laptop (small-chat),
whose API the tests talk to. Nothing is paired: only the laptop is an owner
device of its own agents, so a ``private`` request never leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from tests.conftest import MODEL_CACHE


@dataclass
class Mesh:
    laptop: NodeProcess
    phone: NodeProcess
    gpu: NodeProcess
    url: str
    """Base URL of the laptop's API, e.g. ``http://127.0.0.1:4780``."""

    @property
    def nodes(self) -> list[NodeProcess]:
        return [self.laptop, self.phone, self.gpu]


def _api_port0(data_dir: Path) -> None:
    # The tests look at chat agents after their answers (agents, steps, the dashboard's
    # placements): keep them an hour instead of deleting them with the answer.
    with (data_dir / "config.toml").open("a") as f:
        f.write("\n[api]\nport = 0\nchat_retention_s = 3600\n")


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("api-mesh")
    for profile in ("laptop", "phone", "gpu"):
        write_device_config(root / profile, profile, MODEL_CACHE)
        _api_port0(root / profile)
    laptop = NodeProcess(root / "laptop", "--profile", "laptop", name="laptop").start()
    others = [NodeProcess(root / p, "--profile", p, "--bootstrap", laptop.addrs[0], name=p).launch() for p in ("phone", "gpu")]
    nodes = [laptop, *others]
    try:
        for n in others:
            n.wait_ready()
        assert wait_for(lambda: all(len(n.peers()) == 2 for n in nodes), timeout=30)[0], "the mesh did not form"
        url = laptop.call("api")["url"]
        assert url.startswith("http://127.0.0.1:")
        yield Mesh(laptop, others[0], others[1], url)
    finally:
        for n in nodes:
            n.stop()

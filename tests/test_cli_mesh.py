"""The commands a new user meets on a running mesh, against two real node processes on loopback.

Naming and finding peers (default names, ``--to`` by name, name prefix or
short id), the peer and status tables at 80 columns, where an agent went
(``agents``, ``logs``), why a private step found no peer, what a bid means
in ``auctions``, and ``models`` reading what the node advertises.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshagent.node.spawn import NodeProcess, wait_for
from tests.cli_support import SLEEPER_C, agent, cli, readme_c_example
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(900)


def _node(data_dir: Path, profile: str, config: str, *args: str) -> NodeProcess:
    data_dir.mkdir(mode=0o700, parents=True)
    (data_dir / "config.toml").write_text(config)
    return NodeProcess(data_dir, "--profile", profile, "--name", "", *args)  # --name "": the default name


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    root = tmp_path_factory.mktemp("mesh")
    laptop = _node(root / "laptop", "laptop", f'[[models]]\nname = "tiny-chat"\npath = "{tiny_model}"\n').start()
    gpu = _node(root / "gpu", "gpu", f'[[models]]\nname = "large-chat"\npath = "{tiny_model}"\ntags = ["size=large"]\n',
                "--bootstrap", laptop.addrs[0]).start()
    try:
        seen, _ = wait_for(lambda: gpu.peer_id in laptop.peers() and laptop.peer_id in gpu.peers(), timeout=30)
        assert seen, "the two nodes did not find each other"
        yield laptop, gpu
    finally:
        gpu.stop()
        laptop.stop()


def _rows(table: str) -> list[list[str]]:
    """A rich table's body rows, each cell's wrapped lines joined back (with no spaces) in reading order."""
    rows: list[list[str]] = []
    current: list[str] | None = None
    for line in table.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            current = current or [""] * len(cells)
            current = [a + b for a, b in zip(current, cells)]
        elif current is not None:
            rows.append(current)
            current = None
    return rows


def _start_sleeper(node: NodeProcess) -> str:
    module = agent("sleeper", SLEEPER_C)
    return str(node.call("run", {"module_path": str(module), "args": ["sleeper"], "privacy": "any", "wait": False})["agent_id"])


def test_nodes_are_named_by_profile_and_short_id(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, gpu = mesh
    assert laptop.call("status")["name"] == f"laptop-{laptop.peer_id[-6:]}"
    assert laptop.peers()[gpu.peer_id]["name"] == f"gpu-{gpu.peer_id[-6:]}"


def test_peers_fits_80_columns_wrapping_not_truncating(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, gpu = mesh
    done = cli("peers", "--data-dir", str(laptop.data_dir))
    assert done.returncode == 0 and done.lines == []
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in done.stdout
    (row,) = _rows(done.stdout)
    port = gpu.addrs[0].split("/tcp/")[1].split("/")[0]
    assert row[0] == f"gpu-{gpu.peer_id[-6:]}" and row[4] == f"/ip4/127.0.0.1/tcp/{port}"
    assert row[2].startswith("large-chat") and row[3].startswith("lan")
    wide = cli("peers", "--wide", "--data-dir", str(laptop.data_dir))
    row = next(line for line in wide.stdout.splitlines() if gpu.peer_id in line)
    assert f"/ip4/127.0.0.1/tcp/{port}" in row and "large-chat" in row and "gpu (emulated)" in row


def test_status_keeps_ids_and_addresses_whole(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, _ = mesh
    done = cli("status", "--data-dir", str(laptop.data_dir))
    lines = done.stdout.splitlines()
    assert lines[0] == f"laptop-{laptop.peer_id[-6:]} {laptop.peer_id}"
    for addr in laptop.addrs:
        assert f"  {addr}" in lines


def test_migrate_finds_the_peer_by_name_or_short_id(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, gpu = mesh
    first, second = _start_sleeper(laptop), _start_sleeper(laptop)
    try:
        wait_for(lambda: all(a["host_calls"] > 2 for a in laptop.call("agents")["agents"]
                             if a["agent_id"] in (first, second)), timeout=30)
        unknown = cli("migrate", first, "--to", "toaster", "--data-dir", str(laptop.data_dir))
        assert (unknown.returncode, unknown.lines) == (
            1, ["meshagent: no peer named 'toaster': meshagent peers lists the peers this node knows"])
        name = f"gpu-{gpu.peer_id[-6:]}"
        by_name = cli("migrate", first, "--to", "gpu", "--data-dir", str(laptop.data_dir))
        assert by_name.returncode == 0 and by_name.lines == []
        assert by_name.stdout.startswith(f"{first} → {name}: resumed, generation ")
        by_short_id = cli("migrate", second, "--to", gpu.peer_id[-6:].lower(), "--json", "--data-dir", str(laptop.data_dir))
        assert by_short_id.returncode == 0 and json.loads(by_short_id.stdout)["to"] == gpu.peer_id

        # Where it went: the sender's logs and agents say so; the receiver shows where it came from.
        logs = cli("logs", first, "--data-dir", str(laptop.data_dir))
        assert logs.returncode == 0 and logs.stdout.startswith("tick 0\n")
        assert logs.lines == [f"meshagent: agent {first} moved to {name}: this is its output up to the move; "
                              f"`meshagent logs {first}` on that node shows the rest, and its result comes back here "
                              "when it ends"]
        sender = cli("agents", "--data-dir", str(laptop.data_dir), env={"COLUMNS": "200"})
        assert re.search(rf"{first} .* moved +.* moved to {name} ", sender.stdout), sender.stdout
        receiver = cli("agents", "--data-dir", str(gpu.data_dir), env={"COLUMNS": "200"})
        assert re.search(rf"{first} .* running .* here ", receiver.stdout), receiver.stdout
        assert f"from laptop-{laptop.peer_id[-6:]} (owner)" in receiver.stdout
    finally:
        for agent_id in (first, second):
            for node in mesh:
                if any(a["agent_id"] == agent_id and a["status"] == "running" for a in node.call("agents")["agents"]):
                    node.call("kill", {"agent_id": agent_id})


def test_a_private_step_no_device_may_run_says_who_holds_the_model(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, gpu = mesh
    hamlet = agent("hamlet", readme_c_example())
    done = cli("run", str(hamlet), "--data-dir", str(laptop.data_dir))
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.lines
    assert re.fullmatch(
        rf"meshagent: agent [0-9a-f]{{12}} failed: no peer may run its step \(it needs size>=large, privacy private\): "
        rf"gpu-{gpu.peer_id[-6:]} holds a model for it but is not one of your paired devices; pair a device that holds "
        r"one \(meshagent pair\), or allow more with --privacy lan or --privacy any", line), line


def test_auctions_say_what_a_bid_compares(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, gpu = mesh
    hamlet = agent("hamlet", readme_c_example())
    done = cli("run", str(hamlet), "--privacy", "any", "--data-dir", str(laptop.data_dir))
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    auctions = cli("auctions", "--data-dir", str(laptop.data_dir), env={"COLUMNS": "200"})
    record = laptop.call("auctions")["auctions"][-1]
    (bid,) = [b for b in record["bids"] if b["bidder"] == gpu.peer_id]
    shown = f"gpu-{gpu.peer_id[-6:]}: {bid['total_s']:.2f} s ×{bid['reliability']:.2f} = " \
            f"{bid['total_s'] * bid['reliability']:.2f} s, {bid['price']:.4f}"
    assert shown in auctions.stdout and "its reliability factor = the time the decision compares" in auctions.stdout


def test_models_shows_the_rates_the_node_advertises(mesh: tuple[NodeProcess, NodeProcess]) -> None:
    laptop, _ = mesh

    def advertised() -> float | None:
        (model,) = [m for m in laptop.call("status")["advert"]["models"] if m["name"] == "tiny-chat"]
        return model["decode_tps"]  # type: ignore[no-any-return]

    rate, _ = wait_for(advertised, timeout=120, interval=1.0)
    assert rate, "the node never measured its model"
    done = cli("models", "--json", "--data-dir", str(laptop.data_dir))
    listed = {m["name"]: m for m in json.loads(done.stdout)["models"]}
    assert listed["tiny-chat"]["rates_from"] == "node advert"
    assert listed["tiny-chat"]["decode_tps"] == advertised()  # the laptop's emulated rate, as its peers see it
    assert listed["tiny-chat"]["tags"] == ["size=tiny"]
    table = cli("models", "--data-dir", str(laptop.data_dir))
    assert "rates as the running node advertises them" in table.stdout and f"decode {rate:.0f}" in table.stdout


def test_join_on_all_interfaces_prints_a_url_to_open_and_the_token(tmp_path: Path) -> None:
    data = tmp_path / "lan"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text('[api]\nbind = "0.0.0.0"\nport = 0\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MESHAGENT_LOG", None)
    proc = subprocess.Popen([sys.executable, "-m", "meshagent", "join", "--data-dir", str(data), "--no-mdns",
                             "--listen", "/ip4/127.0.0.1/tcp/0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(4)]
        status = cli("status", "--data-dir", str(data))
        status_line = next(line + "\n" for line in status.stdout.splitlines() if line.startswith("API"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    url = (data / "api.url").read_text().strip()
    token = (data / "api.token").read_text().strip()
    assert status_line == f"API and dashboard: {url} (bearer token in {data / 'api.token'})\n"
    assert "0.0.0.0" not in url and url.startswith("http://")
    assert banner[3] == (f"OpenAI-compatible API: {url} (bearer token in {data / 'api.token'}); "
                         f"dashboard: {url}/?token={token}\n"), banner
    assert "Traceback" not in err


def test_models_measure_keeps_cached_rates(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "cache"
    config = tmp_path / "config.toml"
    config.write_text(f'[[models]]\nname = "tiny"\npath = "{tiny_model}"\n')
    args = ("models", "--measure", "--json", "--config", str(config), "--data-dir", str(tmp_path / "none"))
    first = cli(*args, env={"XDG_CACHE_HOME": str(cache)})
    (measured,) = [m for m in json.loads(first.stdout)["models"] if m["name"] == "tiny"]
    assert measured["decode_tps"] and measured["rates_from"] == "this machine"
    (saved,) = (cache / "meshagent" / "throughput").glob("*.json")
    stamp = saved.stat().st_mtime_ns
    again = cli(*args, env={"XDG_CACHE_HOME": str(cache)})
    (listed,) = [m for m in json.loads(again.stdout)["models"] if m["name"] == "tiny"]
    assert saved.stat().st_mtime_ns == stamp and listed["decode_tps"] == measured["decode_tps"]  # not measured again

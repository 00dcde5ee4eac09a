"""Auctions between real node processes holding real (generated) models."""

from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT


@pytest.fixture(scope="module")
def steps_wasm() -> Path:
    return build_cached(Path(__file__).parent / "programs" / "steps.c", ROOT / ".cache" / "agents")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    nodes = {}
    for profile in ("phone", "laptop", "gpu"):
        write_device_config(root / profile, profile, MODEL_CACHE)
    nodes["phone"] = NodeProcess(root / "phone", "--profile", "phone", name="phone").start()
    for profile in ("laptop", "gpu"):
        nodes[profile] = NodeProcess(root / profile, "--profile", profile, "--bootstrap", nodes["phone"].addrs[0], name=profile).launch()
    for n in nodes.values():
        n.wait_ready()  # returns at once for the phone, already started
    ok, _ = wait_for(lambda: all(len(n.peers()) == 2 for n in nodes.values()), timeout=20)
    assert ok
    yield nodes
    for n in nodes.values():
        n.stop()


def test_models_are_advertised(mesh):
    peers = mesh["phone"].peers()
    gpu = peers[mesh["gpu"].peer_id]
    models = {m["name"]: m for m in gpu["models"]}
    assert set(models) == {"large-chat", "all-minilm-l6-v2-int8"}  # its LLM and the built-in embedder
    assert models["large-chat"]["tags"] == ["size=large"] and len(models["large-chat"]["sha256"]) == 64
    assert models["large-chat"]["kind"] == "llm" and models["all-minilm-l6-v2-int8"]["kind"] == "embed"
    assert gpu["price_per_1k_tokens"] == 0.002


def test_large_step_goes_to_the_gpu(mesh):
    r = mesh["phone"].call("auction", {"requirement": "size>=large", "privacy": "any", "context_tokens": 2000, "output_tokens": 100})
    assert r["winner"] == mesh["gpu"].peer_id
    assert mesh["gpu"].peer_id in r["invited"] and mesh["laptop"].peer_id not in r["invited"]  # bounded to capable peers
    bid = next(b for b in r["bids"] if b["bidder"] == mesh["gpu"].peer_id)
    assert bid["transfer_s"] >= 0 and bid["decode_s"] > 0 and bid["price"] > 0


def test_cheap_step_prefers_free_devices(mesh):
    r = mesh["phone"].call("auction", {"requirement": "", "privacy": "any", "policy": "cost", "output_tokens": 50})
    assert r["winner"] in (mesh["phone"].peer_id, mesh["laptop"].peer_id)  # both free; the gpu charges


def test_private_step_stays_on_owner_devices(mesh):
    r = mesh["phone"].call("auction", {"requirement": "size>=large", "privacy": "private"})
    assert r["winner"] is None and r["invited"] == []  # no paired device holds a large model
    code = mesh["gpu"].call("pair_show")["code"]
    mesh["phone"].call("pair_join", {"code": code, "peer": mesh["gpu"].peer_id})
    r = mesh["phone"].call("auction", {"requirement": "size>=large", "privacy": "private"})
    assert r["winner"] == mesh["gpu"].peer_id
    assert mesh["gpu"].call("untrust", {"peer": mesh["phone"].peer_id})["removed"]
    # The gpu no longer trusts the phone's owner: it refuses the private step itself.
    r = mesh["phone"].call("auction", {"requirement": "size>=large", "privacy": "private"})
    assert r["winner"] is None
    assert any("privacy" in d["reason"] for d in r["declines"])
    mesh["phone"].call("untrust", {"peer": mesh["gpu"].peer_id})


def _run_one_step(node, wasm, tag, options=""):
    args = ["steps", "1", "0", tag, *([options] if options else [])]
    result = node.call("run", {"module_path": str(wasm), "args": args, "privacy": "any"}, timeout=300)
    (agent,) = [a for a in result["agents"] if a.get("parent_id") is None] or result["agents"][:1]
    assert agent["status"] == "exited", result
    triggers = [a["trigger"] for a in node.call("auctions")["auctions"] if a["agent_id"] == agent["agent_id"]]
    return agent, triggers


def test_a_step_that_would_miss_its_deadline_here_is_auctioned(mesh, steps_wasm):
    _, triggers = _run_one_step(mesh["laptop"], steps_wasm, "roomy")
    assert triggers == []  # the laptop holds a model and has time: the step runs there
    agent, triggers = _run_one_step(mesh["laptop"], steps_wasm, "hurried", "deadline=0.001")
    assert len(triggers) == 1 and triggers[0].startswith("deadline 0.00 s cannot be met here"), triggers
    # No node can meet it: the winner runs the step rather than auctioning it on (no ping-pong).
    for other in ("phone", "gpu"):
        assert not [a for a in mesh[other].call("auctions")["auctions"] if a["agent_id"] == agent["agent_id"]]


@pytest.mark.parametrize("state, trigger, decline", [({"hot": True}, "the device is hot", "hot"),
                                                     ({"battery_percent": 10}, "on battery at 10%", "on battery")],
                         ids=["hot", "battery"])
def test_a_hot_or_low_battery_device_auctions_its_steps_and_takes_no_work(mesh, steps_wasm, state, trigger, decline):
    laptop = mesh["laptop"]
    assert laptop.call("emulate", state)["emulated"]  # a mock: this machine cannot overheat or run on a battery
    try:
        _, triggers = _run_one_step(laptop, steps_wasm, f"warm-{decline}")
        assert triggers == [trigger]
        # ...and it declines to run others' steps meanwhile.
        r = mesh["phone"].call("auction", {"requirement": "size>=small", "privacy": "any"})
        declines = {d["bidder"]: d["reason"] for d in r["declines"]}
        assert laptop.peer_id not in {b["bidder"] for b in r["bids"]}
        # Invited, it declines; a low battery is also advertised, and the phone may not invite it at all.
        assert declines.get(laptop.peer_id) == decline if laptop.peer_id in r["invited"] else decline == "on battery"
    finally:
        laptop.call("emulate", {"hot": None, "battery_percent": None})


def test_emulate_command(mesh):
    import json
    import subprocess
    import sys

    def emulate(*flags):
        out = subprocess.run([sys.executable, "-m", "meshagent", "emulate", "--data-dir", str(mesh["laptop"].data_dir),
                              "--json", *flags], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)

    assert emulate("--hot", "--battery", "12") == {"emulated": {"hot": True, "battery_percent": 12.0}, "hot": True,
                                                   "battery_percent": 12.0}
    ok, _ = wait_for(lambda: mesh["phone"].peers()[mesh["laptop"].peer_id]["on_battery"], timeout=15)
    assert ok  # the emulated battery is advertised
    assert emulate("--clear")["emulated"] == {}


def test_a_run_that_cannot_start_leaves_no_record(mesh, tmp_path):
    import sqlite3

    from meshagent.errors import ControlError
    from meshagent.node.store import STORE_NAME

    phone = mesh["phone"]
    db = sqlite3.connect(phone.data_dir / STORE_NAME)
    try:
        before = db.execute("SELECT count(*) FROM agent_meta").fetchone()[0]
        (tmp_path / "junk.wasm").write_bytes(b"not wasm")
        for path in (tmp_path / "missing.wasm", tmp_path / "junk.wasm"):
            with pytest.raises(ControlError):
                phone.call("run", {"module_path": str(path), "privacy": "any"})
        assert db.execute("SELECT count(*) FROM agent_meta").fetchone()[0] == before
    finally:
        db.close()

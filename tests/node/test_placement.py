"""Auctions between real node processes holding real (generated) models."""

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from tests.conftest import MODEL_CACHE


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

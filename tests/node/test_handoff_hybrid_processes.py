"""Real ``meshagent join`` nodes configured with ``[net] sealing_suite = "hybrid"``: an agent migrates
between them sealed with HPKE ML-KEM768-X25519 and finishes with the same output."""

from __future__ import annotations

from pathlib import Path

from meshagent.net.handoff import read_container_header
from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.protocol import snapshot as snap
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT
from tests.node.test_handoff_cli import PROGRAMS, cli, where


def labels(stdout: str) -> list[str]:
    return [line.split(":", 1)[0] for line in stdout.splitlines()]


def hybrid_node(data_dir: Path, *args: str, name: str) -> NodeProcess:
    config = write_device_config(data_dir, "laptop", MODEL_CACHE)  # the agent's LLM steps need the models
    config.write_text('[net]\nsealing_suite = "hybrid"\n\n' + config.read_text())
    return NodeProcess(data_dir, *args, name=name).start()


def test_agent_migrates_sealed_with_the_hybrid_suite(tmp_path):
    wasm = build_cached(PROGRAMS / "steps.c", ROOT / ".cache" / "agents")
    a = hybrid_node(tmp_path / "a", name="a")
    b = hybrid_node(tmp_path / "b", "--bootstrap", a.addrs[0], name="b")
    write_device_config(tmp_path / "ref", "laptop", MODEL_CACHE)
    ref = NodeProcess(tmp_path / "ref", name="ref").start()  # computes the undisturbed output
    try:
        assert wait_for(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, timeout=20)[0]
        assert (a.data_dir / "sealing-pq.key").stat().st_mode & 0o777 == 0o600
        run = {"module_path": str(wasm), "args": ["steps", "8", "600", "pq"], "privacy": "any", "wait": False}
        ref_id = ref.call("run", run)["agent_id"]
        agent = a.call("run", run)["agent_id"]
        moved = cli("migrate", agent, "--to", b.peer_id, "--data-dir", str(a.data_dir))
        assert moved["resumed"] and moved["generation"] == 0 and moved["suite"] == snap.SUITE_HYBRID
        assert where(b, agent) == "running" and where(a, agent) == "moved"

        backup = tmp_path / "backup.msnap"
        exported = cli("snapshot", "export", agent, str(backup), "--data-dir", str(b.data_dir))
        assert exported["suite"] == snap.SUITE_HYBRID
        with open(backup, "rb") as f:
            assert snap.header_suite(read_container_header(f)) == snap.SUITE_HYBRID  # the file itself says so

        back = cli("migrate", agent, "--to", a.peer_id, "--data-dir", str(b.data_dir))
        assert back["resumed"] and back["generation"] == 2 and back["suite"] == snap.SUITE_HYBRID
        result = a.call("result", {"agent_id": agent, "wait": True}, timeout=120)
        assert result["status"] == "exited" and result["stdout"].endswith("done after 8 steps\n")
        assert result["stdout"].count("\n") == 9
        undisturbed = ref.call("result", {"agent_id": ref_id, "wait": True}, timeout=120)
        assert undisturbed["status"] == "exited"
        # Same output as the undisturbed run: every line, once, in order. Not byte for byte: llama.cpp's CPU
        # kernels round differently with the KV cache's layout and the tiny models have near-ties (README,
        # "diverged_text"), which the sealing suite cannot cause or cure.
        assert labels(result["stdout"]) == labels(undisturbed["stdout"])
    finally:
        a.stop()
        b.stop()
        ref.stop()

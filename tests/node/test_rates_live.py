"""A node's bids bear out on this machine, whatever rates its cache held when it started.

One real ``meshagent join`` process (an emulated laptop: half this machine's speed,
which its bids and its steps both carry) whose per-user cache holds rates a hundred
times wrong: far too fast for its own model, far too slow for the phone's. It runs
real agents' steps on the generated models with real llama.cpp, and before each
step the node's own bid for exactly that step (a dry-run auction) is compared with
the time the step then took, as the node measured it. No wall-clock threshold: only
the ratio of the two.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from meshagent.inference.hashing import sha256_file
from meshagent.inference.tiny import ensure_tiny_model
from meshagent.node.emulation import DEVICE_MODELS, write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT

STEPS = 5
TOKENS = 400


@pytest.fixture(scope="module")
def steps_wasm() -> Path:
    return build_cached(ROOT / "tests" / "node" / "programs" / "steps.c", ROOT / ".cache" / "agents")


def _sha(profile: str) -> str:
    (model,) = DEVICE_MODELS[profile]
    return sha256_file(ensure_tiny_model(MODEL_CACHE, model.spec))


def _write(cache: Path, sha: str, prefill_tps: float, decode_tps: float, **extra: object) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{sha}.json").write_text(json.dumps({"prefill_tps": prefill_tps, "decode_tps": decode_tps, "prefill_tokens": 256,
                                                   "decode_tokens": 32, "measured_at": time.time(), **extra}))


def _bid_then_step(node: NodeProcess, wasm: Path, model: str, tag: str, context_tokens: int) -> tuple[float, dict]:
    """The node's own estimate for a step, then that step run there: (estimate in s, its step record)."""
    auction = node.call("auction", {"requirement": model, "privacy": "any", "context_tokens": context_tokens,
                                    "output_tokens": TOKENS})
    (bid,) = [b for b in auction["bids"] if b["bidder"] == node.peer_id]
    result = node.call("run", {"module_path": str(wasm), "privacy": "any",
                               "args": ["steps", "1", "0", tag, f"model={model};max_tokens={TOKENS}"]}, timeout=300)
    (agent,) = [a for a in result["agents"] if a.get("parent_id") is None]
    assert agent["status"] == "exited", result
    (step,) = [s for s in node.call("steps")["steps"] if s["agent_id"] == agent["agent_id"]]
    assert step["model"] == model and step["completion_tokens"] == TOKENS, step
    return bid["prefill_s"] + bid["decode_s"], step


def test_bids_bear_out_within_a_few_steps_of_a_cache_a_hundred_times_wrong(tmp_path, steps_wasm):
    home = tmp_path / "xdg-cache"
    throughput = home / "meshagent" / "throughput"
    small, tiny = _sha("laptop"), _sha("phone")
    # Too fast, and said to be learned from steps: only steps can show this start wrong.
    _write(throughput, small, 5e6, 1e5, steps=50)
    # Too slow, as a benchmark under load left it in older nodes' format: checked once the node runs.
    _write(throughput, tiny, 20.0, 2.0)
    write_device_config(tmp_path / "node", "laptop", MODEL_CACHE, extra_models=("phone",))
    node = NodeProcess(tmp_path / "node", "--profile", "laptop", name="laptop", env={"XDG_CACHE_HOME": str(home)})
    node.start(timeout=120)
    try:
        def advertised() -> dict[str, float]:
            return {m["name"]: m["decode_tps"] for m in node.call("status")["advert"]["models"] if m["kind"] == "llm"}

        # Cached rates are a starting point that the node checks by measuring once it runs.
        checked, _ = wait_for(lambda: advertised()["tiny-chat"] != 0.5 * 2.0, timeout=120)
        assert checked, advertised()
        context = 40  # about the steps' prompt, in tokens
        pairs = {model: [_bid_then_step(node, steps_wasm, model, f"r{model}{i}", context) for i in range(STEPS)]
                 for model in ("small-chat", "tiny-chat")}
        ratios = {model: [round(step["seconds"] / estimate, 2) for estimate, step in p] for model, p in pairs.items()}
        print("step time / bid, step by step:", ratios)
        # The first bid on small-chat came from the poisoned cache: far shorter than the step it promised.
        assert ratios["small-chat"][0] > 20, ratios
        # The poisoned slow rate was measured again before the first bid (it would have promised a
        # hundred times the step's time); a start measured under load may still be some times fast.
        assert 0.1 < ratios["tiny-chat"][0] < 20, ratios
        # Within a few steps the bids bear out: each of the last three within a factor of four of
        # its step's own time (the load on this machine moves a step's time that much), and
        # typically within a factor of 2.5.
        for model, r in ratios.items():
            assert all(1 / 4 < x < 4 for x in r[-3:]), (model, ratios)
            assert 1 / 2.5 < statistics.median(r[-3:]) < 2.5, (model, ratios)
        # The learned rates went back to the cache (the next node starts from them)...
        stored = json.loads((throughput / f"{small}.json").read_text())
        assert stored["steps"] == STEPS and stored["decode_tps"] < 1e4, stored
        # ...and into the node's advert, at the emulated laptop's speed.
        learned = {m: json.loads((throughput / f"{_sha(p)}.json").read_text())["decode_tps"]
                   for m, p in (("small-chat", "laptop"), ("tiny-chat", "phone"))}
        ok, _ = wait_for(lambda: all(advertised()[m] == pytest.approx(0.5 * learned[m], rel=0.3) for m in learned), timeout=60)
        assert ok, (advertised(), learned)
    finally:
        node.stop()

"""Fuzz the host-call argument decoding of the ``mesh`` and WASI imports from inside a real sandbox.

Each example compiles a tiny WAT module that imports one host function and
calls it a few times with arguments hypothesis chooses (pointers and lengths
near 0, near the end of memory, negative, huge; i64 offsets), over a memory
whose first bytes are random (strings, iovecs, subscriptions...). The agent
runs in the real sandbox with a scripted LLM and a fake clock. Whatever the
arguments, the agent ends ``exited`` or ``failed`` with a project error
(usually ``GuestMemoryError``); the host never raises anything else.
"""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from meshagent.config import SandboxLimits
from meshagent.errors import MeshError
from meshagent.runtime.journal import Journal
from meshagent.runtime.mesh_abi import MODULE as MESH, mesh_functions
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.vfs import VirtualFs
from meshagent.runtime.wasi import wasi_functions
from tests.hostile.fuzzing import FUZZ, only_project_errors
from tests.runtime.fakes import ScriptedLlm

WASI = "wasi_snapshot_preview1"
SIGS = {(MESH, n): sig for n, (sig, _) in mesh_functions(None).items()}  # type: ignore[arg-type]
SIGS |= {(WASI, n): sig for n, (sig, _) in wasi_functions(None).items()}  # type: ignore[arg-type]
TARGETS = sorted(k for k in SIGS if k in KNOWN_IMPORTS)
LIMITS = SandboxLimits(fuel=50_000_000, memory_bytes=1 << 20, output_bytes=64 << 10)
PAGE = 65536

i32s = st.one_of(st.sampled_from([0, 1, 4, 8, 16, 64, 100, 1000, PAGE - 8, PAGE - 4, PAGE - 1, PAGE, PAGE + 1,
                                  -1, -4, 0x7FFFFFFF, -0x80000000]),
                 st.integers(0, 2048), st.integers(-(1 << 31), (1 << 31) - 1))
i64s = st.one_of(st.sampled_from([0, 1, 1 << 32, -1, (1 << 63) - 1, -(1 << 63)]), st.integers(-(1 << 63), (1 << 63) - 1))
memory_bytes = st.one_of(
    st.binary(max_size=512),
    st.lists(st.sampled_from([b"\0", b"agent\0", b"model=x;max_tokens=99999999\0", b"\x10\0\0\0\x08\0\0\0",
                              b"\xff\xff\xff\xff", b"/\0", b"../etc/passwd\0", b"a" * 40]), max_size=20).map(b"".join),
)


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> ModuleCache:
    return ModuleCache(engine_for(LIMITS.stack_bytes), tmp_path_factory.mktemp("fuzz-modules"))


def _wat(target: tuple[str, str], calls: list[list[int]], memory: bytes) -> bytes:
    module, name = target
    params, _, results = SIGS[target].partition(">")
    types = {"i": "i32", "I": "i64"}
    decl = " ".join(f"(param {types[c]})" for c in params) + "".join(f" (result {types[c]})" for c in results)
    body = []
    for args in calls:
        consts = " ".join(f"({types[c]}.const {v})" for c, v in zip(params, args))
        call = f"(call $f {consts})"
        body.append(f"(drop {call})" if results else call)
    data = "".join(f"\\{b:02x}" for b in memory)
    return wasmtime.wat2wasm(f"""(module
      (import "{module}" "{name}" (func $f {decl}))
      (memory (export "memory") 2 2)
      (data (i32.const 0) "{data}")
      (func (export "_start") {' '.join(body)}))""")


def _args(sig: str) -> st.SearchStrategy[list[int]]:
    params = sig.partition(">")[0]
    return st.tuples(*[i64s if c == "I" else i32s for c in params]).map(list)


@pytest.mark.parametrize("target", TARGETS, ids=[f"{m.split('_')[0]}.{n}" for m, n in TARGETS])
def test_fuzz_host_call_arguments(modules, target):
    sig = SIGS[target]

    @FUZZ
    @given(st.lists(_args(sig), min_size=1, max_size=3), memory_bytes)
    def run(calls, memory):
        wasm = _wat(target, calls, memory)
        loaded = modules.load(wasm, KNOWN_IMPORTS)
        snap = AgentSnapshot(agent_id="fuzz", module_sha256=loaded.sha256, module=wasm, journal=Journal(),
                             args=("agent", "x"), vfs=VirtualFs())
        world = ScriptedLlm()

        def once() -> None:
            outcome = Agent(snap, modules=modules, services=world, world=world, limits=LIMITS, loaded=loaded).run()
            assert outcome.status in ("exited", "failed"), outcome
            if outcome.status == "failed":
                assert isinstance(outcome.error, MeshError), outcome.error_message

        only_project_errors(f"host call {target[0].split('_')[0]}.{target[1]}", once)

    run()

"""The agent runtime: sandboxed WebAssembly agents whose journal is their truth.

Where things are:

* :mod:`~meshagent.runtime.sandbox` — :class:`Agent`: one agent, its journal and its wasmtime sandbox;
* :mod:`~meshagent.runtime.wasi` (with :mod:`~meshagent.runtime.wasi_files`) and
  :mod:`~meshagent.runtime.mesh_abi` — the host functions (deterministic WASI preview 1 and the
  ``mesh`` ABI of ``meshagent/agents/meshagent.h``);
* :mod:`~meshagent.runtime.vfs` — the agent's files, every size checked against its budget first;
* :mod:`~meshagent.runtime.costs` — what host work costs an agent in fuel, and the meter that charges it;
* :mod:`~meshagent.runtime.journal`, :mod:`~meshagent.runtime.snapshot`, :mod:`~meshagent.runtime.bundle`
  — journal entries, agent snapshots (``to_bytes``/``from_bytes``) and family snapshots;
* :mod:`~meshagent.runtime.services` — :class:`HostServices` (LLM, embed, tools), :class:`World`
  (clocks, randomness), :class:`Suspend` (the migration hook) and the engine adapter;
* :mod:`~meshagent.runtime.manager` — :class:`AgentManager`, the node's trio supervisor, with
  :mod:`~meshagent.runtime.supervision` (the hooks agents call) and :mod:`~meshagent.runtime.slots`
  (execution slots, per-owner quotas);
* :mod:`~meshagent.runtime.control_ops` — the control-API handlers the node registers;
* :mod:`~meshagent.runtime.local` — in-process runs for ``meshagent run --local`` and ``resume``;
* :mod:`~meshagent.runtime.modules`, :mod:`~meshagent.runtime.instrument`, :mod:`~meshagent.runtime.build`
  — the deterministic engine, the compiled-module cache, and ``zig cc`` builds.

Submodules are imported explicitly (importing wasmtime is not free).
"""

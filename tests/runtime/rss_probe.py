"""Run hostile agents in a fresh process and report how far each pushed its peak RSS.

``python -m tests.runtime.rss_probe SPEC.json`` (run by ``test_host_limits.py``): for each
case, the process's peak RSS (VmHWM) is reset to its current RSS (``/proc/self/clear_refs``),
the agent runs in the real sandbox, and the growth of the peak is printed, with the agent's
outcome, as one JSON object. A fresh process, so no earlier test's allocations hide a peak.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from meshagent.config import SandboxLimits
from meshagent.runtime.journal import Journal
from meshagent.runtime.modules import ModuleCache, engine_for, sha256_hex
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.tools.runtime import ToolRuntime
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, MAX_TOOL_MEMORY, ToolManifest, ToolSpec
from meshagent.runtime.vfs import VirtualFs
from tests.runtime.fakes import ScriptedLlm


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def main(spec: dict[str, object]) -> dict[str, object]:
    limits = SandboxLimits(**spec["limits"])  # type: ignore[arg-type]
    modules = ModuleCache(engine_for(limits.stack_bytes))
    hostile = Path(str(spec["hostile"])).read_bytes()
    tooluser = Path(str(spec["tooluser"])).read_bytes()
    tool = Path(str(spec["tool"])).read_bytes()
    manifest = ToolManifest((ToolSpec("fill", sha256_hex(tool), MAX_TOOL_MEMORY, 10**10),))
    tooluser = with_custom_section(tooluser, MANIFEST_SECTION, manifest.encode())

    def run(wasm: bytes, *args: str, tools: dict[str, bytes] | None = None) -> dict[str, object]:
        loaded = modules.load(wasm, KNOWN_IMPORTS)
        snap = AgentSnapshot(agent_id="probe", module_sha256=loaded.sha256, module=wasm, journal=Journal(),
                             args=("agent", *args), vfs=VirtualFs(), tools=tools or {})
        _reset_peak()
        start = _status_kib("VmRSS")
        outcome = Agent(snap, modules=modules, services=ScriptedLlm(), limits=limits, loaded=loaded,
                        tools=ToolRuntime.create()).run()
        return {"status": outcome.status, "stdout": outcome.stdout.decode(), "error": outcome.error_message,
                "peak_growth_kib": _status_kib("VmHWM") - start}

    run(hostile, "trap")  # warm up: the first run loads what every later run shares
    run(tooluser, 'fs.list={}')
    out: dict[str, object] = {}
    for case in spec["cases"]:  # type: ignore[attr-defined]
        if case == "tool_fill":
            out[case] = run(tooluser, 'fill={"args":[]}', tools={sha256_hex(tool): tool})
        else:
            out[case] = run(hostile, case)
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(Path(sys.argv[1]).read_text()))))

"""Tools a node offers every agent by name, without a manifest: the shipped WASI tools.

``mesh_tool("lines", {"args": [...], "files": {"a.txt": "..."}})`` from an agent
whose manifest does not declare ``lines`` reaches the node's host services,
which run the shipped tool here over the files given *in the arguments* (the
agent's own directory is not mounted: only its manifest's tools see it).
The result is journaled by the agent like any other tool result, and the run
is charged to the calling agent's meter like its own tools.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, MeshError
from meshagent.runtime.costs import Meter
from meshagent.runtime.tools.registry import ToolBox
from meshagent.runtime.tools.runtime import ToolRuntime, default_tool_runtime
from meshagent.runtime.tools.spec import ToolManifest
from meshagent.runtime.tools.store import SHIPPED, default_build_dir, shipped_spec
from meshagent.runtime.vfs import FileView, VirtualFs

__all__ = ["NodeTools", "MAX_INLINE_FILES"]

MAX_INLINE_FILES: Final = 256


class _NoServices:
    def embed(self, agent_id: str, text: str) -> list[float]:
        raise MeshError("node tools do not embed")

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        raise MeshError(f"no tool named {name!r} is installed on this node")


class NodeTools:
    """The node's own tools (blocking; called on an agent's worker thread)."""

    def __init__(self, runtime: ToolRuntime | None = None, build_dir: Path | None = None) -> None:
        self._runtime = runtime or default_tool_runtime()
        self._build_dir = build_dir or default_build_dir()
        self._manifest: ToolManifest | None = None
        self._lock = threading.Lock()

    def names(self) -> tuple[str, ...]:
        return tuple(SHIPPED)

    def _shipped(self) -> ToolManifest:
        with self._lock:
            if self._manifest is None:
                specs = []
                for name in SHIPPED:
                    spec, wasm = shipped_spec(name, self._build_dir)
                    self._runtime.store.put(wasm)
                    specs.append(spec)
                self._manifest = ToolManifest(tuple(specs))
            return self._manifest

    def call(self, agent_id: str, name: str, args: bytes, meter: Meter) -> bytes:
        """Run a shipped tool over inline files, charged to ``meter``; unknown names raise :class:`MeshError`."""
        if name not in SHIPPED:
            raise MeshError(f"no tool named {name!r} is installed on this node (it offers {', '.join(SHIPPED)}); "
                            "declare the agent's own tools in its manifest (meshagent build --tools)")
        try:
            manifest = self._shipped()
        except BuildError as exc:
            raise MeshError(f"cannot build the node's tool {name!r}: {exc}") from exc
        try:
            parsed = json.loads(args) if args.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MeshError(f"{name}: arguments must be a JSON object: {exc}") from exc
        files = parsed.get("files", {}) if isinstance(parsed, dict) else None
        if not isinstance(files, dict) or len(files) > MAX_INLINE_FILES or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise MeshError(f"{name}: 'files' must map at most {MAX_INLINE_FILES} paths to text")
        try:
            base = VirtualFs.from_wire({k: v.encode() for k, v in files.items()})
        except MeshError as exc:
            raise MeshError(f"{name}: invalid inline files: {exc}") from exc
        box = ToolBox(agent_id=agent_id, manifest=manifest, carried={}, modules=self._runtime.modules,
                      store=self._runtime.store, services=_NoServices())  # type: ignore[arg-type]
        return box.call(name, json.dumps({"args": parsed.get("args", [])}).encode(), FileView(base, {}), meter).answer

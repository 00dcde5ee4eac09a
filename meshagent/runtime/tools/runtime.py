"""What a node (or a local run) shares among its agents' tools: compiled tools and the tool store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from meshagent.errors import JournalError, ModuleError
from meshagent.runtime.modules import engine_for
from meshagent.runtime.tools.sections import custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest
from meshagent.runtime.tools.store import ToolStore, default_store
from meshagent.runtime.tools.wasi_tool import ToolModules

__all__ = ["ToolRuntime", "default_tool_runtime", "manifest_of", "TOOL_STACK_BYTES"]

TOOL_STACK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ToolRuntime:
    modules: ToolModules
    store: ToolStore

    @classmethod
    def create(cls, data_dir: Path | None = None, store: ToolStore | None = None) -> ToolRuntime:
        """A runtime whose tools (and their compiled code) live under ``data_dir`` when given."""
        engine = engine_for(TOOL_STACK_BYTES)
        compiled = data_dir / "compiled" if data_dir is not None else None
        return cls(ToolModules(engine, compiled), store or ToolStore(data_dir))

    def carry(self, manifest: ToolManifest, carried: dict[str, bytes]) -> None:
        """Carry with an agent the tools it declares that this node has, so they travel with it.

        Adds them to ``carried`` (the agent's tool modules by sha256), then puts every carried tool in this node's store.
        """
        for spec in manifest.tools:
            if spec.sha256 not in carried:
                found = self.store.get(spec.sha256, fetch=False)
                if found is not None:
                    carried[spec.sha256] = found
        for sha, wasm in carried.items():
            if not self.store.has(sha):
                self.store.put(wasm)


_default: ToolRuntime | None = None
_lock = threading.Lock()
_manifests: dict[str, ToolManifest] = {}


def default_tool_runtime() -> ToolRuntime:
    global _default
    with _lock:
        if _default is None:
            _default = ToolRuntime(ToolModules(engine_for(TOOL_STACK_BYTES)), default_store())
        return _default


def manifest_of(sha256: str, wasm: bytes) -> ToolManifest:
    """The tool manifest in an agent module's ``meshagent.manifest`` section (empty when it has none)."""
    with _lock:
        hit = _manifests.get(sha256)
    if hit is not None:
        return hit
    try:
        raw = custom_section(wasm, MANIFEST_SECTION)
    except ModuleError as exc:
        raise JournalError(f"cannot read the agent's tool manifest: {exc}") from exc
    manifest = ToolManifest.decode(raw) if raw is not None else ToolManifest()
    with _lock:
        _manifests[sha256] = manifest
    return manifest

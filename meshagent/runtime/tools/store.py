"""Where tool modules come from: a content-addressed store, and the tools meshagent ships.

:class:`ToolStore` keeps WASI tool modules by sha256 (in memory, and in a
directory when given one). A node resolves an agent's tools from the agent's
snapshot first, then from its store, then (when the node wires one in) from a
peer by hash. The shipped tools are C programs in ``meshagent/agents/tools``
built with ``meshagent build`` (``zig cc``) on first use and cached.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, ConfigError, ModuleError
from meshagent.runtime.build import AGENTS_DIR, build_cached
from meshagent.runtime.tools.spec import DEFAULT_TOOL_FUEL, DEFAULT_TOOL_MEMORY, ToolManifest, ToolSpec
from meshagent.runtime.tools.wasi_tool import MAX_TOOL_MODULE

__all__ = ["ToolStore", "Fetcher", "SHIPPED", "TOOLS_DIR", "shipped_tool", "shipped_spec", "default_store", "resolve_tools",
           "default_build_dir"]

log = logging.getLogger(__name__)

TOOLS_DIR: Final = AGENTS_DIR / "tools"
SHIPPED: Final = {
    "lines": "count lines/words/bytes of files, optionally only lines matching a regex (-e RE, -i, -v, -m)",
    "ccheck": "check C sources: unbalanced brackets, unterminated comments/strings, unsafe calls, style",
}

TOOL_FLAGS: Final = ("-Wl,-z,stack-size=262144",)
"""A 256 KiB stack (zig's default is 16 MiB): a tool's memory is then mostly its data and heap."""

Fetcher = Callable[[str], bytes | None]
"""Fetch a tool module by sha256 from elsewhere (a peer); ``None`` if nobody has it."""


class ToolStore:
    """Tool modules by sha256."""

    def __init__(self, directory: Path | None = None, *, fetcher: Fetcher | None = None) -> None:
        self._dir = directory
        self._mem: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.fetcher = fetcher

    def put(self, wasm: bytes) -> str:
        if len(wasm) > MAX_TOOL_MODULE:
            raise ModuleError(f"a tool module of {len(wasm)} bytes is larger than the limit of {MAX_TOOL_MODULE}")
        sha = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            self._mem[sha] = wasm
        if self._dir is not None:
            path = self._dir / f"{sha}.wasm"
            if not path.is_file():
                try:
                    self._dir.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(wasm)
                    tmp.replace(path)
                except OSError as exc:
                    log.warning("cannot store tool %s: %s", sha[:16], exc)
        return sha

    def has(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._mem:
                return True
        return self._dir is not None and (self._dir / f"{sha256}.wasm").is_file()

    def has_prefix(self, prefix: str) -> bool:
        """Whether a tool whose sha256 starts with ``prefix`` is here (snapshot sections name tools so)."""
        if len(prefix) < 32:
            return False
        with self._lock:
            if any(sha.startswith(prefix) for sha in self._mem):
                return True
        return self._dir is not None and any(self._dir.glob(f"{prefix}*.wasm"))

    def get(self, sha256: str, *, fetch: bool = True) -> bytes | None:
        """The module, from memory, the directory or (``fetch``) the fetcher; checked against its hash."""
        with self._lock:
            hit = self._mem.get(sha256)
        if hit is not None:
            return hit
        if self._dir is not None:
            path = self._dir / f"{sha256}.wasm"
            if path.is_file():
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() == sha256:
                    with self._lock:
                        self._mem[sha256] = data
                    return data
                log.warning("discarding corrupt tool file %s", path)
                path.unlink(missing_ok=True)
        if fetch and self.fetcher is not None:
            fetched = self.fetcher(sha256)
            if fetched is not None and hashlib.sha256(fetched).hexdigest() == sha256:
                self.put(fetched)
                return fetched
        return None


def shipped_tool(name: str, cache_dir: Path) -> bytes:
    """Build (once) and return a shipped tool's module."""
    source = TOOLS_DIR / f"{name}.c"
    if name not in SHIPPED or not source.is_file():
        raise BuildError(f"meshagent ships no tool named {name!r} (it ships {', '.join(SHIPPED)})")
    return build_cached(source, cache_dir, flags=TOOL_FLAGS).read_bytes()


def shipped_spec(name: str, cache_dir: Path, *, memory_bytes: int = DEFAULT_TOOL_MEMORY, fuel: int = DEFAULT_TOOL_FUEL,
                 private: bool = False) -> tuple[ToolSpec, bytes]:
    wasm = shipped_tool(name, cache_dir)
    spec = ToolSpec(name, hashlib.sha256(wasm).hexdigest(), memory_bytes, fuel, private, SHIPPED[name])
    return spec, wasm


_default: ToolStore | None = None
_default_lock = threading.Lock()


def default_store() -> ToolStore:
    """The process-wide store (tools seen in snapshots and built here are kept for later agents)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ToolStore()
        return _default


def resolve_tools(manifest: ToolManifest, store: ToolStore, *, extra: Sequence[bytes] = (),
                  build_dir: Path | None = None) -> dict[str, bytes]:
    """The modules of every tool in ``manifest`` (sha256 → bytes), for a new agent's snapshot.

    Looked up in ``extra`` (modules given with the launch), the store (and its
    fetcher), the user's build store (``meshagent build --tools`` puts them there),
    then among the shipped tools (built here when their sha256 matches).
    """
    for given in extra:
        store.put(given)
    out: dict[str, bytes] = {}
    for spec in manifest.tools:
        wasm = store.get(spec.sha256)
        if wasm is None and build_dir is not None:  # put there by `meshagent build --tools`
            wasm = ToolStore(build_dir / "store").get(spec.sha256)
            if wasm is not None:
                store.put(wasm)
        if wasm is None and spec.name in SHIPPED and build_dir is not None:
            try:
                built = shipped_tool(spec.name, build_dir)
            except BuildError as exc:
                log.warning("cannot build the shipped tool %s: %s", spec.name, exc)
            else:
                if hashlib.sha256(built).hexdigest() == spec.sha256:
                    store.put(built)
                    wasm = built
        if wasm is None:
            raise ConfigError(
                f"the agent declares tool {spec.name!r} ({spec.sha256[:16]}…), whose module is not on this node: "
                "give it with --tool PATH.wasm"
            )
        out[spec.sha256] = wasm
    return out


def default_build_dir() -> Path:
    """Where shipped tools are built for this user (``$XDG_CACHE_HOME/meshagent/tools``)."""
    from meshagent.config import user_cache_dir

    return user_cache_dir() / "tools"

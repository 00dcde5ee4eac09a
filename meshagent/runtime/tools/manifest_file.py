"""``tools.toml``: how an agent's author declares its tools for ``meshagent build --tools``.

::

    [tools.lines]            # the name the agent passes to mesh_tool
    shipped = "lines"        # a tool meshagent ships (lines, ccheck) ...
    memory = "16MiB"         # linear memory limit of the tool's sandbox (bytes or KiB/MiB/GiB)
    fuel = 200_000_000       # CPU budget (wasmtime fuel, about one unit per instruction)
    private = false          # true: it handles private data; the agent then runs only on its owner's devices

    [tools.fmt]
    wasm = "build/fmt.wasm"  # ... or any wasm32-wasi command, relative to this file

A ``wasm`` path names a file inside this file's folder: an absolute path, a
``..`` that climbs out, or a symlink anywhere on the way is refused (the module
is stored, carried in snapshots and served by hash to peers, so it must never
be some other host file), and the file must be a WebAssembly module of at most
:data:`~meshagent.runtime.tools.wasi_tool.MAX_TOOL_MODULE` bytes.

The manifest is embedded in the agent's module (custom section
``meshagent.manifest``) with each tool's sha256; the tool modules go to the
tool store, from which ``meshagent run`` and nodes resolve them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, ConfigError, MeshError
from meshagent.runtime.hostfiles import read_beneath
from meshagent.runtime.modules import sha256_hex
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import DEFAULT_TOOL_FUEL, DEFAULT_TOOL_MEMORY, MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import SHIPPED, shipped_tool
from meshagent.runtime.tools.wasi_tool import MAX_TOOL_MODULE

__all__ = ["load_tools_file", "embed_manifest", "parse_size", "read_tool_module"]

_SIZE: Final = re.compile(r"^\s*(\d+)\s*(|B|KiB|MiB|GiB)\s*$")
_UNITS: Final = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_KEYS: Final = {"shipped", "wasm", "memory", "fuel", "private", "description"}
_WASM_HEADER: Final = b"\0asm\x01\x00\x00\x00"
"""Magic and version 1: a core module (a tool is a wasm32-wasi command, not a component)."""


def parse_size(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(f"{what}: expected bytes as an integer or a string like '16MiB'")


def read_tool_module(folder: Path, rel: object, where: str) -> bytes:
    """The tool module at ``rel`` inside ``folder``: contained, no symlinks, bounded, a wasm core module."""
    if not isinstance(rel, str):
        raise ConfigError(f"{where}: 'wasm' must be a path (a string)")
    wasm = read_beneath(folder, rel, limit=MAX_TOOL_MODULE, what=f"{where} wasm")
    if wasm[:8] != _WASM_HEADER:
        raise ConfigError(f"{where}: {rel!r} is not a WebAssembly module (no '\\0asm' version 1 header)")
    return wasm


def load_tools_file(path: Path, build_dir: Path) -> tuple[ToolManifest, dict[str, bytes]]:
    """The manifest a ``tools.toml`` declares and the tool modules it names (sha256 → bytes)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the tools file {path}: {exc}") from exc
    tools = raw.get("tools")
    if not isinstance(tools, dict) or not tools:
        raise ConfigError(f"{path}: declare tools as [tools.NAME] tables")
    specs: list[ToolSpec] = []
    modules: dict[str, bytes] = {}
    for name, table in tools.items():
        where = f"{path}: [tools.{name}]"
        if not isinstance(table, dict) or set(table) - _KEYS:
            raise ConfigError(f"{where}: unknown keys {sorted(set(table) - _KEYS) if isinstance(table, dict) else table}")
        if ("shipped" in table) == ("wasm" in table):
            raise ConfigError(f"{where}: give exactly one of 'shipped' ({', '.join(SHIPPED)}) or 'wasm' (a path)")
        try:
            if "shipped" in table:
                wasm = shipped_tool(str(table["shipped"]), build_dir)
                description = str(table.get("description", SHIPPED.get(str(table["shipped"]), "")))
            else:
                wasm = read_tool_module(path.parent, table["wasm"], where)
                description = str(table.get("description", ""))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {table.get('wasm')}: {exc.strerror}") from exc
        except BuildError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        private = table.get("private", False)
        fuel = table.get("fuel", DEFAULT_TOOL_FUEL)
        if not isinstance(private, bool) or not isinstance(fuel, int) or isinstance(fuel, bool):
            raise ConfigError(f"{where}: 'private' must be true or false and 'fuel' an integer")
        sha = sha256_hex(wasm)
        specs.append(ToolSpec(str(name), sha, parse_size(table.get("memory", DEFAULT_TOOL_MEMORY), f"{where} memory"),
                              fuel, private, description))
        modules[sha] = wasm
    return ToolManifest(tuple(specs)), modules


def embed_manifest(module_path: Path, manifest: ToolManifest) -> None:
    """Write ``manifest`` into the module file's ``meshagent.manifest`` section."""
    try:
        wasm = module_path.read_bytes()
        module_path.write_bytes(with_custom_section(wasm, MANIFEST_SECTION, manifest.encode()))
    except OSError as exc:
        raise BuildError(f"cannot add the tool manifest to {module_path}: {exc.strerror}") from exc
    except MeshError as exc:
        raise BuildError(f"cannot add the tool manifest to {module_path}: {exc}") from exc

"""What an agent declares about its tools, and what one tool call returns.

An agent's :class:`ToolManifest` lists the WASI tools it may call: each by
name, the sha256 of its module (tools are content-addressed), the limits its
sandbox runs under (memory, fuel) and whether it is *private* — it reads the
owner's private files, so the agent may only run where private steps may run
(the owner's devices). The manifest travels inside the agent's module, as the
custom section ``meshagent.manifest`` (see :mod:`~meshagent.runtime.tools.sections`),
so the module's own hash covers it, and it feeds the auction through
:meth:`ToolManifest.needs`.

A :class:`ToolResult` is what gets journaled for one ``mesh_tool`` call: the
answer bytes the agent reads and the file writes the tool made. Replay and
migration re-apply the writes from the journal and never run the tool again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final

from meshagent.errors import ConfigError, DecodeError, JournalError
from meshagent.protocol import codec

__all__ = [
    "ToolSpec",
    "ToolManifest",
    "ToolNeeds",
    "ToolResult",
    "MANIFEST_SECTION",
    "DEFAULT_TOOL_MEMORY",
    "DEFAULT_TOOL_FUEL",
    "MAX_TOOL_MEMORY",
    "MAX_TOOL_FUEL",
    "error_result",
    "json_result",
]

MANIFEST_SECTION: Final = "meshagent.manifest"
DEFAULT_TOOL_MEMORY: Final = 32 << 20
DEFAULT_TOOL_FUEL: Final = 500_000_000
MAX_TOOL_MEMORY: Final = 1 << 30
MAX_TOOL_FUEL: Final = 100_000_000_000
MAX_TOOLS: Final = 64
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SHA: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One WASI tool an agent may call."""

    name: str
    sha256: str
    memory_bytes: int = DEFAULT_TOOL_MEMORY
    fuel: int = DEFAULT_TOOL_FUEL
    private: bool = False
    """The tool reads private files: the agent stays on its owner's devices (privacy ``private``)."""
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"tool name {self.name!r} must match {_NAME.pattern}")
        if not _SHA.fullmatch(self.sha256):
            raise ConfigError(f"tool {self.name!r}: sha256 must be 64 lowercase hex digits")
        if not 1 << 16 <= self.memory_bytes <= MAX_TOOL_MEMORY:
            raise ConfigError(f"tool {self.name!r}: memory must be between 64 KiB and {MAX_TOOL_MEMORY} bytes")
        if not 1 <= self.fuel <= MAX_TOOL_FUEL:
            raise ConfigError(f"tool {self.name!r}: fuel must be between 1 and {MAX_TOOL_FUEL}")

    def to_wire(self) -> list[object]:
        return [self.name, self.sha256, self.memory_bytes, self.fuel, self.private, self.description]

    @classmethod
    def from_wire(cls, raw: object) -> ToolSpec:
        if not isinstance(raw, list) or len(raw) != 6:
            raise JournalError("a tool spec must be a 6-element array")
        name, sha, memory, fuel, private, description = raw
        if not (isinstance(name, str) and isinstance(sha, str) and isinstance(memory, int) and isinstance(fuel, int)
                and isinstance(private, bool) and isinstance(description, str) and len(description) <= 1024):
            raise JournalError("a tool spec has fields of the wrong type")
        try:
            return cls(name, sha, memory, fuel, private, description)
        except ConfigError as exc:
            raise JournalError(f"invalid tool spec: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ToolNeeds:
    """What a node must offer to host an agent's tools (fed to the auction)."""

    memory_bytes: int = 0
    fuel: int = 0
    private: bool = False


@dataclass(frozen=True, slots=True)
class ToolManifest:
    """The WASI tools an agent declares, by name."""

    tools: tuple[ToolSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names) or len(names) > MAX_TOOLS:
            raise ConfigError(f"a manifest lists at most {MAX_TOOLS} tools with distinct names")

    def get(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def needs(self) -> ToolNeeds:
        if not self.tools:
            return ToolNeeds()
        return ToolNeeds(max(t.memory_bytes for t in self.tools), max(t.fuel for t in self.tools),
                         any(t.private for t in self.tools))

    def encode(self) -> bytes:
        return codec.encode({"v": 1, "tools": [t.to_wire() for t in self.tools]})

    @classmethod
    def decode(cls, data: bytes) -> ToolManifest:
        try:
            raw = codec.decode_map(data, max_size=64 << 10, max_depth=4)
            tools = codec.field(raw, "tools", list)  # type: ignore[arg-type]
        except DecodeError as exc:
            raise JournalError(f"the agent's tool manifest is malformed: {exc}") from exc
        if raw.get("v") != 1:
            raise JournalError("unsupported tool manifest version")
        try:
            return cls(tuple(ToolSpec.from_wire(t) for t in tools))
        except ConfigError as exc:
            raise JournalError(f"invalid tool manifest: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call as journaled: the answer the agent reads and the file writes it made."""

    answer: bytes
    writes: tuple[tuple[str, bytes | None], ...] = field(default=())
    """(path, new content or ``None`` = deleted), applied to the agent's files in order."""

    def encode(self) -> bytes:
        return codec.encode([self.answer, [[p, d] for p, d in self.writes]])

    @classmethod
    def decode(cls, data: bytes) -> ToolResult:
        try:
            raw = codec.decode(data, max_size=len(data) + 1, max_depth=3)
        except DecodeError as exc:
            raise JournalError(f"a journaled tool result is malformed: {exc}") from exc
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], bytes) or not isinstance(raw[1], list):
            raise JournalError("a journaled tool result must be [answer, writes]")
        writes: list[tuple[str, bytes | None]] = []
        for item in raw[1]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and (item[1] is None or isinstance(item[1], bytes))):
                raise JournalError("a journaled tool write must be [path, bytes or null]")
            writes.append((item[0], item[1]))
        return cls(raw[0], tuple(writes))


def json_result(value: dict[str, object], writes: tuple[tuple[str, bytes | None], ...] = ()) -> ToolResult:
    """A result whose answer is compact, key-sorted JSON (deterministic bytes)."""
    return ToolResult(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(), writes)


def error_result(message: str) -> ToolResult:
    """What the agent reads when a tool fails: ``{"ok": false, "error": ...}`` (the agent goes on)."""
    return json_result({"ok": False, "error": message})

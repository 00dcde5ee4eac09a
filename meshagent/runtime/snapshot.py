"""An agent's snapshot: module, journal, memory image, virtual files and metadata.

A plain CBOR document through the strict codec. The journal is the truth;
the memory image is a cache that bounds the replay. Decoding treats the bytes
as hostile: the size is capped before parsing and every field is checked, so
corrupt, forged or truncated bytes raise :class:`~meshagent.errors.JournalError`
(or :class:`~meshagent.errors.DecodeError` from the codec, wrapped).
Sealing for transfer (compression, encryption, signature) is done elsewhere
on top of :meth:`AgentSnapshot.to_bytes`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from meshagent.errors import DecodeError, JournalError
from meshagent.protocol import codec
from meshagent.runtime.host_state import HostState
from meshagent.runtime.journal import Journal
from meshagent.runtime.vfs import VirtualFs

__all__ = ["MemoryImage", "AgentSnapshot", "tools_from_wire", "SNAPSHOT_VERSION", "PAGE", "MAX_SNAPSHOT_BYTES", "STATUSES"]

SNAPSHOT_VERSION: Final = 1
PAGE: Final = 1 << 16
MAX_SNAPSHOT_BYTES: Final = 1 << 30
MAX_MEMORY_BYTES: Final = 1 << 32
STATUSES: Final = ("ready", "running", "idle", "suspended", "exited", "failed", "killed")
"""``idle``: a reactor agent waiting for the node to call one of its entry points."""
_ZERO_PAGE: Final = bytes(PAGE)


@dataclass(frozen=True, slots=True)
class MemoryImage:
    """Linear memory + mutable globals + host state at journal ``position`` (no guest frame live)."""

    position: int
    memory_size: int
    pages: tuple[tuple[int, bytes], ...]
    """Non-zero 64 KiB pages only: (page index, bytes)."""
    globals: tuple[tuple[str, int | float], ...]
    host: HostState

    @classmethod
    def capture(cls, position: int, memory: bytes | memoryview, globals_: tuple[tuple[str, int | float], ...],
                host: HostState) -> MemoryImage:
        """Copy the non-zero pages of ``memory`` (a buffer over the live linear memory is fine)."""
        view = memoryview(memory).cast("B")
        size = len(view)
        pages: list[tuple[int, bytes]] = []
        for i, off in enumerate(range(0, size, PAGE)):
            page = bytes(view[off : off + PAGE])
            if page != _ZERO_PAGE[: len(page)]:
                pages.append((i, page))
        copy = HostState.from_wire(host.to_wire())
        return cls(position, size, tuple(pages), globals_, copy)

    def to_wire(self) -> list[object]:
        return [self.position, self.memory_size, [[i, p] for i, p in self.pages], [[n, v] for n, v in self.globals], self.host.to_wire()]

    @classmethod
    def from_wire(cls, raw: object) -> MemoryImage:
        if not isinstance(raw, list) or len(raw) != 5:
            raise JournalError("memory image must be a 5-element array")
        position, size, pages, globals_, host = raw
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise JournalError("memory image has an invalid position")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_MEMORY_BYTES or size % PAGE:
            raise JournalError("memory image has an invalid memory size")
        if not isinstance(pages, list) or not isinstance(globals_, list):
            raise JournalError("memory image pages/globals must be arrays")
        out_pages: list[tuple[int, bytes]] = []
        for item in pages:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], int) or isinstance(item[0], bool)
                    or not isinstance(item[1], bytes) or len(item[1]) != PAGE or not 0 <= item[0] < size // PAGE):
                raise JournalError("memory image holds an invalid page")
            out_pages.append((item[0], item[1]))
        out_globals: list[tuple[str, int | float]] = []
        for item in globals_:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
                raise JournalError("memory image holds an invalid global")
            out_globals.append((item[0], item[1]))
        return cls(position, size, tuple(out_pages), tuple(out_globals), HostState.from_wire(host))

    def memory(self) -> bytearray:
        buf = bytearray(self.memory_size)
        for index, page in self.pages:
            buf[index * PAGE : (index + 1) * PAGE] = page
        return buf


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """Everything needed to resume an agent anywhere."""

    agent_id: str
    module_sha256: str
    journal: Journal
    module: bytes | None = None
    parent_id: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    vfs: VirtualFs = field(default_factory=VirtualFs)
    tools: dict[str, bytes] = field(default_factory=dict)
    """WASI tool modules the agent carries, by sha256 (those its manifest declares)."""
    image: MemoryImage | None = None
    rollbacks: dict[str, int] = field(default_factory=dict)
    """How often the agent rolled back to each label: agent state outside the journal."""
    labels: dict[str, int] = field(default_factory=dict)
    """Checkpoints taken from outside (``meshagent checkpoint``): label → journal position."""
    status: str = "ready"
    exit_code: int | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, object]:
        return {
            "v": SNAPSHOT_VERSION,
            "agent_id": self.agent_id,
            "parent_id": self.parent_id,
            "module_sha256": self.module_sha256,
            "module": self.module,
            "args": list(self.args),
            "env": [[k, v] for k, v in self.env],
            "vfs": self.vfs.to_wire(),
            "tools": dict(self.tools),
            "journal": self.journal.to_wire(),
            "image": self.image.to_wire() if self.image else None,
            "rollbacks": dict(self.rollbacks),
            "labels": dict(self.labels),
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
        }

    def to_bytes(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_SNAPSHOT_BYTES, journal_limit: int = 64 << 20) -> AgentSnapshot:
        try:
            raw = codec.decode_map(data, max_size=max_size, max_depth=10)
        except DecodeError as exc:
            raise JournalError(f"snapshot bytes are corrupt or truncated: {exc}") from exc
        return cls.from_wire(raw, journal_limit=journal_limit)

    @classmethod
    def from_wire(cls, raw: dict[str | int, object], *, journal_limit: int = 64 << 20) -> AgentSnapshot:
        try:
            if codec.field(raw, "v", int) != SNAPSHOT_VERSION:  # type: ignore[arg-type]
                raise JournalError(f"unsupported snapshot version {raw.get('v')!r}")
            agent_id = codec.field(raw, "agent_id", str)  # type: ignore[arg-type]
            parent_id = codec.opt_field(raw, "parent_id", str, "") or None  # type: ignore[arg-type]
            sha = codec.field(raw, "module_sha256", str)  # type: ignore[arg-type]
            module = raw.get("module")
            if module is not None and not isinstance(module, bytes):
                raise JournalError("snapshot field 'module' must be bytes")
            if module is not None and hashlib.sha256(module).hexdigest() != sha:
                raise JournalError("snapshot module bytes do not match module_sha256 (forged or corrupt)")
            args = codec.field(raw, "args", list)  # type: ignore[arg-type]
            env = codec.field(raw, "env", list)  # type: ignore[arg-type]
            if not all(isinstance(a, str) for a in args):
                raise JournalError("snapshot args must be strings")
            if not all(isinstance(e, list) and len(e) == 2 and all(isinstance(s, str) for s in e) for e in env):
                raise JournalError("snapshot env must be [name, value] string pairs")
            rollbacks = _int_map(raw.get("rollbacks"), "rollbacks")
            labels = _int_map(raw.get("labels"), "labels")
            status = codec.field(raw, "status", str)  # type: ignore[arg-type]
            if status not in STATUSES:
                raise JournalError(f"snapshot has unknown status {status!r}")
            exit_code = raw.get("exit_code")
            if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
                raise JournalError("snapshot exit_code must be an integer")
            error = raw.get("error")
            if error is not None and not isinstance(error, str):
                raise JournalError("snapshot error must be a string")
            journal = Journal.from_wire(raw.get("journal"), limit=journal_limit)
            image = MemoryImage.from_wire(raw["image"]) if raw.get("image") is not None else None
            if image is not None and image.position > len(journal):
                raise JournalError("memory image lies beyond the end of the journal")
            if any(pos > len(journal) or pos < 0 for pos in labels.values()):
                raise JournalError("a checkpoint label points beyond the end of the journal")
        except DecodeError as exc:
            raise JournalError(f"snapshot is malformed: {exc}") from exc
        return cls(
            agent_id=agent_id,
            parent_id=parent_id,
            module_sha256=sha,
            module=module,
            args=tuple(args),
            env=tuple((k, v) for k, v in env),
            vfs=VirtualFs.from_wire(raw.get("vfs")),
            tools=tools_from_wire(raw.get("tools")),
            journal=journal,
            image=image,
            rollbacks=rollbacks,
            labels=labels,
            status=status,
            exit_code=exit_code,
            error=error,
        )


MAX_TOOL_BYTES: Final = 256 << 20


def tools_from_wire(raw: object) -> dict[str, bytes]:
    """The ``tools`` field: sha256 → module bytes, each checked against its hash."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 64:
        raise JournalError("snapshot field 'tools' must map at most 64 sha256 digests to modules")
    out: dict[str, bytes] = {}
    total = 0
    for sha, wasm in raw.items():
        if not isinstance(sha, str) or not isinstance(wasm, bytes) or hashlib.sha256(wasm).hexdigest() != sha:
            raise JournalError("a tool module in the snapshot does not match its sha256 (forged or corrupt)")
        total += len(wasm)
        out[sha] = wasm
    if total > MAX_TOOL_BYTES:
        raise JournalError("the snapshot's tool modules are larger than allowed")
    return out


def _int_map(raw: object, name: str) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()
    ):
        raise JournalError(f"snapshot field {name!r} must map labels to non-negative integers")
    return {str(k): int(v) for k, v in raw.items()}  # type: ignore[call-overload]

"""The agent's virtual filesystem: one preopened directory, in the snapshot.

The agent's owner fills it (``meshagent run --dir PATH``) — for example with a
code base to analyse. Its content travels inside the snapshot, so an agent
resumed on another node sees the same files.

Writes never touch the snapshot's base files: they go to an *overlay* (path →
new bytes, or ``None`` for a deleted file) that is guest-visible host state.
WASI writes are recomputed on replay like every other deterministic call; tool
writes are recorded in the tool's journal entry and re-applied on replay. So
the files an agent sees at journal position N are always the base files plus
the writes of entries 0..N-1, wherever it resumes, and a rollback undoes them.

:class:`VirtualFs` is the immutable base content; :class:`FileView` is base +
overlay (what reads and writes go through); :class:`OpenFiles` is the table
of open descriptors. Overlay and descriptors are rebuilt by replay and saved
in memory images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from meshagent.errors import JournalError
from meshagent.runtime.hostfiles import copy_tree

__all__ = [
    "VirtualFs",
    "FileView",
    "overlay_to_wire",
    "overlay_from_wire",
    "OpenFile",
    "OpenFiles",
    "PREOPEN_FD",
    "PREOPEN_NAME",
    "MAX_VFS_BYTES",
    "MAX_VFS_FILES",
]

log = logging.getLogger(__name__)

PREOPEN_FD: Final = 3
PREOPEN_NAME: Final = "/"
MAX_VFS_BYTES: Final = 64 << 20
MAX_VFS_FILES: Final = 10_000
MAX_OPEN: Final = 256


def _normalise(path: str) -> str | None:
    """Collapse ``.``/``..`` in a relative path; ``None`` if it escapes the root."""
    parts: list[str] = []
    for part in path.split("/"):
        match part:
            case "" | ".":
                continue
            case "..":
                if not parts:
                    return None
                parts.pop()
            case _:
                parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class VirtualFs:
    """Files (relative posix path → bytes); directories are implied by the paths."""

    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, root: Path, *, max_bytes: int = MAX_VFS_BYTES, max_files: int = MAX_VFS_FILES) -> VirtualFs:
        """Copy a host directory tree (regular files only, no symlinks followed) into memory.

        See :func:`meshagent.runtime.hostfiles.copy_tree`: openat-style, sizes checked before reading."""
        return cls(copy_tree(root, max_bytes=max_bytes, max_files=max_files))

    def dirs(self) -> set[str]:
        out = {""}
        for path in self.files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                out.add("/".join(parts[:i]))
        return out

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.files)

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        """Sorted (name, is_dir) children of directory ``path``."""
        prefix = "" if path == "" else path + "/"
        children: dict[str, bool] = {}
        for p in self.files:
            if p.startswith(prefix):
                rest = p[len(prefix):]
                name, sep, _ = rest.partition("/")
                children[name] = children.get(name, False) or bool(sep)
        return sorted(children.items())

    def resolve(self, base: str, path: str) -> str | None:
        joined = path[1:] if path.startswith("/") else (f"{base}/{path}" if base else path)
        return _normalise(joined)

    def to_wire(self) -> dict[str, bytes]:
        return dict(self.files)

    @classmethod
    def from_wire(cls, raw: object) -> VirtualFs:
        if not isinstance(raw, dict):
            raise JournalError("snapshot field 'vfs' must be a map of path to bytes")
        files: dict[str, bytes] = {}
        total = 0
        for path, data in raw.items():
            if not isinstance(path, str) or not isinstance(data, bytes) or _normalise(path) != path or not path:
                raise JournalError("snapshot field 'vfs' holds an invalid path or file")
            total += len(data)
            files[path] = data
        if total > MAX_VFS_BYTES or len(files) > MAX_VFS_FILES:
            raise JournalError("snapshot field 'vfs' is larger than allowed")
        return cls(files)


class FileView:
    """The agent's files now: the base :class:`VirtualFs` plus an overlay of writes.

    ``overlay`` is shared, not copied: writes through the view change it.
    """

    __slots__ = ("base", "overlay")

    def __init__(self, base: VirtualFs, overlay: dict[str, bytes | None]) -> None:
        self.base = base
        self.overlay = overlay

    def get(self, path: str) -> bytes | None:
        if path in self.overlay:
            return self.overlay[path]
        return self.base.files.get(path)

    def is_file(self, path: str) -> bool:
        return self.get(path) is not None

    def paths(self) -> list[str]:
        """Every file path, sorted."""
        out = {p for p in self.base.files if self.overlay.get(p, b"") is not None}
        out.update(p for p, data in self.overlay.items() if data is not None)
        return sorted(out)

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        if not self.overlay:
            return self.base.is_dir(path)
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.paths())

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        if not self.overlay:
            return self.base.listdir(path)
        return VirtualFs({p: b"" for p in self.paths()}).listdir(path)

    def resolve(self, base: str, path: str) -> str | None:
        return self.base.resolve(base, path)

    def total_bytes(self) -> int:
        return sum(len(self.get(p) or b"") for p in self.paths())

    def put(self, path: str, data: bytes) -> None:
        """Write a whole file; raises :class:`JournalError` past the size limits."""
        if not path or _normalise(path) != path:
            raise JournalError(f"invalid file path {path!r}")
        old = len(self.get(path) or b"")
        if self.total_bytes() - old + len(data) > MAX_VFS_BYTES or len(self.paths()) >= MAX_VFS_FILES and old == 0:
            raise JournalError(f"writing {path!r} would grow the agent's files past {MAX_VFS_BYTES} bytes or {MAX_VFS_FILES} files")
        self.overlay[path] = bytes(data)

    def delete(self, path: str) -> bool:
        if self.get(path) is None:
            return False
        self.overlay[path] = None
        return True

    def snapshot_files(self) -> VirtualFs:
        """The current files as an immutable :class:`VirtualFs`."""
        return VirtualFs({p: self.get(p) or b"" for p in self.paths()})


def overlay_to_wire(overlay: dict[str, bytes | None]) -> list[object]:
    return [[p, d] for p, d in sorted(overlay.items())]


def overlay_from_wire(raw: object) -> dict[str, bytes | None]:
    if not isinstance(raw, list):
        raise JournalError("a file overlay must be an array")
    out: dict[str, bytes | None] = {}
    total = 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) or not item[0]
                or _normalise(item[0]) != item[0] or not (item[1] is None or isinstance(item[1], bytes))):
            raise JournalError("a file overlay holds an invalid path or content")
        total += len(item[1] or b"")
        out[item[0]] = item[1]
    if total > MAX_VFS_BYTES or len(out) > MAX_VFS_FILES:
        raise JournalError("a file overlay is larger than allowed")
    return out


@dataclass(slots=True)
class OpenFile:
    """An open descriptor: a file (``offset`` in bytes) or a directory; ``mode`` 0 read, 1 write, 2 append."""

    path: str
    is_dir: bool
    offset: int = 0
    mode: int = 0


class OpenFiles:
    """The descriptor table beyond stdio (0-2) and the preopen (3)."""

    __slots__ = ("table", "next_fd")

    def __init__(self) -> None:
        self.table: dict[int, OpenFile] = {PREOPEN_FD: OpenFile("", True)}
        self.next_fd = PREOPEN_FD + 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenFiles) and self.to_wire() == other.to_wire()

    __hash__ = None  # type: ignore[assignment]

    def open(self, path: str, is_dir: bool, mode: int = 0) -> int | None:
        if len(self.table) >= MAX_OPEN:
            return None
        fd = self.next_fd
        while fd in self.table:
            fd += 1
        self.table[fd] = OpenFile(path, is_dir, 0, mode)
        self.next_fd = fd + 1
        return fd

    def close(self, fd: int) -> bool:
        if fd == PREOPEN_FD or fd not in self.table:
            return False
        del self.table[fd]
        self.next_fd = min(self.next_fd, fd)
        return True

    def to_wire(self) -> list[object]:
        return [self.next_fd, [[fd, f.path, f.is_dir, f.offset, *([f.mode] if f.mode else [])]
                               for fd, f in sorted(self.table.items())]]

    @classmethod
    def from_wire(cls, raw: object) -> OpenFiles:
        try:
            next_fd, rows = raw  # type: ignore[misc]
            table = {}
            for row in rows:
                fd, path, is_dir, offset, *rest = row
                mode = rest[0] if rest else 0
                if not (isinstance(fd, int) and isinstance(path, str) and isinstance(is_dir, bool) and isinstance(offset, int)
                        and isinstance(mode, int) and mode in (0, 1, 2) and len(rest) <= 1):
                    raise TypeError
                table[fd] = OpenFile(path, is_dir, offset, mode)
            if not isinstance(next_fd, int) or len(table) > MAX_OPEN:
                raise TypeError
        except (TypeError, ValueError) as exc:
            raise JournalError("memory image holds an invalid descriptor table") from exc
        files = cls()
        files.table = table
        files.next_fd = next_fd
        return files

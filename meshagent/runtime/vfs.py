"""The agent's virtual filesystem: one read-only preopened directory, in the snapshot.

The agent's owner fills it (``meshagent run --dir PATH``) — for example with a
code base to analyse. Its content travels inside the snapshot, so an agent
resumed on another node sees the same files. The agent can list and read but
not write: a write would be a side effect outside the journal.

:class:`VirtualFs` is the immutable content; :class:`OpenFiles` is the table
of open descriptors, which is guest-visible state rebuilt by replay and saved
in memory images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from meshagent.errors import ConfigError, JournalError

__all__ = [
    "VirtualFs",
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
        """Copy a host directory tree (regular files only, no symlinks) into memory."""
        if not root.is_dir():
            raise ConfigError(f"--dir {root}: not a directory")
        files: dict[str, bytes] = {}
        total = 0
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes or len(files) >= max_files:
                raise ConfigError(
                    f"--dir {root} holds more than {max_bytes} bytes or {max_files} files; "
                    "give the agent a smaller directory"
                )
            files[rel] = data
        log.debug("virtual dir from %s: %d files, %d bytes", root, len(files), total)
        return cls(files)

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


@dataclass(slots=True)
class OpenFile:
    """An open descriptor: a file (``offset`` in bytes) or a directory."""

    path: str
    is_dir: bool
    offset: int = 0


class OpenFiles:
    """The descriptor table beyond stdio (0-2) and the preopen (3)."""

    __slots__ = ("table", "next_fd")

    def __init__(self) -> None:
        self.table: dict[int, OpenFile] = {PREOPEN_FD: OpenFile("", True)}
        self.next_fd = PREOPEN_FD + 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenFiles) and self.to_wire() == other.to_wire()

    __hash__ = None  # type: ignore[assignment]

    def open(self, path: str, is_dir: bool) -> int | None:
        if len(self.table) >= MAX_OPEN:
            return None
        fd = self.next_fd
        while fd in self.table:
            fd += 1
        self.table[fd] = OpenFile(path, is_dir)
        self.next_fd = fd + 1
        return fd

    def close(self, fd: int) -> bool:
        if fd == PREOPEN_FD or fd not in self.table:
            return False
        del self.table[fd]
        self.next_fd = min(self.next_fd, fd)
        return True

    def to_wire(self) -> list[object]:
        return [self.next_fd, [[fd, f.path, f.is_dir, f.offset] for fd, f in sorted(self.table.items())]]

    @classmethod
    def from_wire(cls, raw: object) -> OpenFiles:
        try:
            next_fd, rows = raw  # type: ignore[misc]
            table = {}
            for fd, path, is_dir, offset in rows:
                if not (isinstance(fd, int) and isinstance(path, str) and isinstance(is_dir, bool) and isinstance(offset, int)):
                    raise TypeError
                table[fd] = OpenFile(path, is_dir, offset)
            if not isinstance(next_fd, int) or len(table) > MAX_OPEN:
                raise TypeError
        except (TypeError, ValueError) as exc:
            raise JournalError("memory image holds an invalid descriptor table") from exc
        files = cls()
        files.table = table
        files.next_fd = next_fd
        return files

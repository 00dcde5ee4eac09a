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
:class:`Overlay` (what reads and writes go through); :class:`OpenFiles` is the
table of open descriptors. Overlay and descriptors are rebuilt by replay and
saved in memory images.

Sizes come from the agent, so every write is checked against the agent's files
budget (a running total, kept as the overlay changes) before the host
allocates a byte, and a write at an offset changes the file in place instead
of copying it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from meshagent.errors import JournalError
from meshagent.runtime.hostfiles import copy_tree

__all__ = [
    "VirtualFs",
    "FileView",
    "Overlay",
    "Content",
    "overlay_to_wire",
    "overlay_from_wire",
    "OpenFile",
    "OpenFiles",
    "PREOPEN_FD",
    "PREOPEN_NAME",
    "MAX_VFS_BYTES",
    "MAX_VFS_FILES",
    "MAX_PATH",
]

log = logging.getLogger(__name__)

PREOPEN_FD: Final = 3
PREOPEN_NAME: Final = "/"
MAX_VFS_BYTES: Final = 64 << 20
MAX_VFS_FILES: Final = 10_000
MAX_PATH: Final = 1024
"""Longest file path, in bytes (names are not counted in the files budget, so they are bounded here)."""
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


class _Index:
    """Running totals of a base plus an overlay: bytes, files, and files below each directory."""

    __slots__ = ("base", "bytes", "files", "dirs")

    def __init__(self, base: VirtualFs, total: int, files: int, dirs: Counter[str]) -> None:
        self.base = base
        self.bytes = total
        self.files = files
        self.dirs = dirs

    @classmethod
    def build(cls, base: VirtualFs, overlay: Mapping[str, Content | None]) -> _Index:
        index = cls(base, 0, 0, Counter())
        for path, data in base.files.items():
            index.add(path, len(data))
        for path, data in overlay.items():
            old = base.files.get(path)
            if old is not None:
                index.remove(path, len(old))
            if data is not None:
                index.add(path, len(data))
        return index

    def copy(self) -> _Index:
        return _Index(self.base, self.bytes, self.files, Counter(self.dirs))

    def add(self, path: str, size: int) -> None:
        self.bytes += size
        self.files += 1
        for parent in _parents(path):
            self.dirs[parent] += 1

    def remove(self, path: str, size: int) -> None:
        self.bytes -= size
        self.files -= 1
        for parent in _parents(path):
            self.dirs[parent] -= 1
            if not self.dirs[parent]:
                del self.dirs[parent]


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class Overlay:
    """The agent's writes over its base files: path → content, ``None`` for a deleted file.

    A content this overlay created is a bytearray it changes in place, so a write at an
    offset copies only the bytes written. A content it did not create (decoded from a
    memory image, given by a tool result, shared with a :meth:`copy`) is immutable here
    and copied once, at its first change. The totals of base + overlay are kept as the
    overlay changes, never recomputed per write.
    """

    __slots__ = ("files", "_owned", "_index")

    def __init__(self, files: Mapping[str, Content | None] | None = None) -> None:
        self.files: dict[str, Content | None] = dict(files) if files else {}
        self._owned: set[str] = set()
        self._index: _Index | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Overlay):
            return self.files == other.files
        return isinstance(other, dict) and self.files == other

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Overlay:
        """An overlay with the same files. The two share contents, so from now on neither changes one
        in place: each copies a content at its first change."""
        out = Overlay(self.files)
        out._index = self._index.copy() if self._index is not None else None
        self._owned.clear()
        return out

    def to_dict(self) -> dict[str, bytes | None]:
        """The writes as immutable bytes."""
        return {p: None if d is None else bytes(d) for p, d in self.files.items()}


Content = bytes | bytearray
"""A file's content as :class:`FileView` hands it out: read it, never keep it across a write."""

_ZEROS: Final = bytes(1 << 20)


class FileView:
    """The agent's files now: the base :class:`VirtualFs` plus an :class:`Overlay` of writes.

    ``overlay`` is shared, not copied: writes through the view change it. Every write checks
    the sizes it would reach against ``limit`` (bytes) and :data:`MAX_VFS_FILES` *before* it
    allocates anything, and raises :class:`JournalError` past them.
    """

    __slots__ = ("base", "overlay", "limit")

    def __init__(self, base: VirtualFs, overlay: Overlay | dict[str, Content | None] | None = None, *,
                 limit: int = MAX_VFS_BYTES) -> None:
        self.base = base
        self.overlay = overlay if isinstance(overlay, Overlay) else Overlay(overlay)
        self.limit = min(limit, MAX_VFS_BYTES)

    def _index(self) -> _Index:
        index = self.overlay._index
        if index is None or index.base is not self.base:
            index = self.overlay._index = _Index.build(self.base, self.overlay.files)
        return index

    def get(self, path: str) -> Content | None:
        files = self.overlay.files
        if path in files:
            return files[path]
        return self.base.files.get(path)

    def size(self, path: str) -> int | None:
        data = self.get(path)
        return None if data is None else len(data)

    def is_file(self, path: str) -> bool:
        return self.get(path) is not None

    def paths(self) -> list[str]:
        """Every file path, sorted."""
        files = self.overlay.files
        out = {p for p in self.base.files if files.get(p, b"") is not None}
        out.update(p for p, data in files.items() if data is not None)
        return sorted(out)

    def is_dir(self, path: str) -> bool:
        return path == "" or self._index().dirs.get(path, 0) > 0

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        if not self.overlay:
            return self.base.listdir(path)
        return VirtualFs({p: b"" for p in self.paths()}).listdir(path)

    def resolve(self, base: str, path: str) -> str | None:
        return self.base.resolve(base, path)

    def total_bytes(self) -> int:
        return self._index().bytes

    def file_count(self) -> int:
        return self._index().files

    def _reserve(self, path: str, old: int | None, new: int) -> None:
        """Raise :class:`JournalError` unless ``path`` may go from ``old`` bytes (``None``: absent) to ``new``."""
        if not path or len(path.encode()) > MAX_PATH or _normalise(path) != path:
            raise JournalError(f"invalid file path {path[:100]!r} (at most {MAX_PATH} bytes, inside the agent's directory)")
        index = self._index()
        grow = new - (old or 0)
        if grow > 0 and index.bytes + grow > self.limit:
            raise JournalError(f"writing {path!r} would grow the agent's files past {self.limit} bytes")
        if old is None and index.files >= MAX_VFS_FILES:
            raise JournalError(f"creating {path!r} would make the agent's files more than {MAX_VFS_FILES}")

    def _changed(self, path: str, old: int | None, new: int | None) -> None:
        index = self._index()
        if old is not None:
            index.remove(path, old)
        if new is not None:
            index.add(path, new)

    def put(self, path: str, data: bytes | bytearray) -> None:
        """Write a whole file; raises :class:`JournalError` past the size limits."""
        old = self.size(path)
        self._reserve(path, old, len(data))
        self._changed(path, old, len(data))
        self.overlay.files[path] = bytes(data)
        self.overlay._owned.discard(path)

    def write_at(self, path: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (zero-filling a gap), creating the file if needed.

        Checked against the limits before anything is allocated. Returns the bytes the host
        copied or filled: the data, the gap and, at the first change of a content this
        overlay did not create, the file itself.
        """
        old = self.size(path)
        size = old or 0
        end = offset + len(data)
        self._reserve(path, old, max(size, end))
        buffer, copied = self._own(path)
        if offset > size:
            copied += _zero_fill(buffer, offset - size)
        buffer[offset:end] = data
        self._changed(path, old, len(buffer))
        return copied + len(data)

    def truncate(self, path: str, size: int) -> int:
        """Cut or zero-extend the file to ``size`` bytes (checked first); returns the bytes copied or filled."""
        old = self.size(path)
        self._reserve(path, old, size)
        buffer, copied = self._own(path)
        if size < len(buffer):
            del buffer[size:]
        else:
            copied += _zero_fill(buffer, size - len(buffer))
        self._changed(path, old, size)
        return copied

    def _own(self, path: str) -> tuple[bytearray, int]:
        """The file's content as a bytearray this overlay may change in place (and the bytes copied for it)."""
        files, owned = self.overlay.files, self.overlay._owned
        current = files.get(path) if path in files else self.base.files.get(path)
        if path in owned and isinstance(current, bytearray):
            return current, 0
        buffer = bytearray(current or b"")
        files[path] = buffer
        owned.add(path)
        return buffer, len(buffer)

    def delete(self, path: str) -> bool:
        old = self.size(path)
        if old is None:
            return False
        self._changed(path, old, None)
        self.overlay.files[path] = None
        self.overlay._owned.discard(path)
        return True

    def snapshot_files(self) -> VirtualFs:
        """The current files as an immutable :class:`VirtualFs`."""
        return VirtualFs({p: bytes(self.get(p) or b"") for p in self.paths()})


def _zero_fill(buffer: bytearray, count: int) -> int:
    """Append ``count`` zero bytes, a megabyte at a time (no temporary as large as the gap)."""
    left = count
    while left > 0:
        step = min(left, len(_ZEROS))
        buffer += memoryview(_ZEROS)[:step]
        left -= step
    return count


def overlay_to_wire(overlay: Overlay) -> list[object]:
    return [[p, None if d is None else bytes(d)] for p, d in sorted(overlay.files.items())]


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

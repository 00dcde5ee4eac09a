"""The file half of meshagent's WASI: descriptors, reads, writes and paths in the agent's own files.

Files are read and written through ``h.fs`` (a :class:`~meshagent.runtime.vfs.FileView`):
writes land in the agent's overlay, never on a host disk. Files can be created, truncated,
written, appended to and unlinked; directories are implied by file paths, so renames, links
and empty directories answer ``ENOTSUP`` (see :mod:`~meshagent.runtime.wasi`).

Sizes, offsets and lengths come from the agent: each is checked against the limit that
applies (the files budget, the output limit) *before* the host allocates anything, and the
bytes the host moves are charged to the agent's fuel (:mod:`meshagent.runtime.costs`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from meshagent.errors import JournalError
from meshagent.runtime.costs import FUEL_PER_BYTE, FUEL_PER_FILE
from meshagent.runtime.guest_memory import GuestMemory
from meshagent.runtime.vfs import MAX_PATH, PREOPEN_FD, PREOPEN_NAME, OpenFile
from meshagent.runtime.wasi_types import (
    ALL_RIGHTS,
    EBADF,
    EEXIST,
    EFBIG,
    EINVAL,
    EISDIR,
    ENAMETOOLONG,
    ENFILE,
    ENOENT,
    ENOTCAPABLE,
    ENOTDIR,
    ENOTSUP,
    ESPIPE,
    ESUCCESS,
    FDFLAG_APPEND,
    FILETYPE_CHAR,
    FILETYPE_DIR,
    FILETYPE_FILE,
    OFLAG_CREAT,
    OFLAG_DIRECTORY,
    OFLAG_EXCL,
    OFLAG_TRUNC,
    RIGHT_FD_WRITE,
    STDIO_RIGHTS,
    Ret,
    det,
    u32,
)

if TYPE_CHECKING:
    from meshagent.runtime.sandbox import HostCalls

__all__ = ["file_functions", "MAX_OFFSET"]

MAX_OFFSET: Final = (1 << 63) - 1
"""Largest file offset (WASI's filesize is a u64; past 2^63 is no file anyone can have)."""


def _gather(m: GuestMemory, iovs: int, n: int, cap: int) -> tuple[bytes | None, int]:
    """The bytes an iovec array points at, or ``None`` when they add up to more than ``cap``
    (then nothing is read: a thousand iovecs over the whole memory would be a thousand copies)."""
    bufs = m.iovecs(u32(iovs), u32(n))
    total = sum(length for _, length in bufs)
    if total > cap:
        return None, total
    return b"".join(m.read(p, length) for p, length in bufs), total


def file_functions(h: HostCalls) -> dict[str, Callable[..., int]]:
    """Name → implementation of the WASI file functions, bound to one agent."""

    def fd_write(fd: int, iovs: int, n: int, nwritten: int) -> int:
        m = h.mem()
        stdio = fd in (1, 2)
        data, total = _gather(m, iovs, n, h.limits.output_bytes if stdio else h.fs.limit)
        m.check(u32(nwritten), 4)
        if data is None:  # more than any write may carry: refused before it is read
            return h.call("fd_write", (fd, total), lambda: too_big(fd, total, False))[0]

        def live() -> Ret:
            if not stdio:
                f = h.state.files.table.get(fd)
                if f is None:
                    return EBADF, None
                return write_file(f, data, None, m, nwritten), None
            h.state.write_output(fd, data, h.limits.output_bytes)
            h.charge(len(data) * FUEL_PER_BYTE, "output")
            m.put_u32(u32(nwritten), len(data))
            return ESUCCESS, None

        return h.call("fd_write", (fd, data), live)[0]

    def too_big(fd: int, total: int, positioned: bool) -> Ret:
        """A write of ``total`` bytes, more than the output limit or the files budget: what it answers."""
        if fd in (1, 2) and not positioned:
            h.state.check_output(total, h.limits.output_bytes)
        f = h.state.files.table.get(fd)
        if f is None:
            return (ESPIPE if positioned and fd in (0, 1, 2) else EBADF), None
        return (EISDIR if f.is_dir else EBADF if f.mode == 0 else EFBIG), None

    def write_file(f: OpenFile, data: bytes, at: int | None, m: GuestMemory, nwritten: int) -> int:
        if f.is_dir:
            return EISDIR
        if f.mode == 0:
            return EBADF
        start = (h.fs.size(f.path) or 0) if f.mode == 2 and at is None else (f.offset if at is None else at)
        try:
            copied = h.fs.write_at(f.path, start, data)  # checks the files budget before it allocates
        except JournalError:
            return EFBIG
        h.charge(copied * FUEL_PER_BYTE, "a file write")
        if at is None:
            f.offset = start + len(data)
        m.put_u32(u32(nwritten), len(data))
        return ESUCCESS

    def fd_pwrite(fd: int, iovs: int, n: int, offset: int, nwritten: int) -> int:
        m = h.mem()
        data, total = _gather(m, iovs, n, h.fs.limit)
        m.check(u32(nwritten), 4)
        at = offset & ((1 << 64) - 1)
        if data is None:
            return h.call("fd_pwrite", (fd, total, at), lambda: too_big(fd, total, True))[0]

        def live() -> Ret:
            f = h.state.files.table.get(fd)
            if f is None:
                return (ESPIPE if fd in (0, 1, 2) else EBADF), None
            return write_file(f, data, at, m, nwritten), None

        return h.call("fd_pwrite", (fd, data, at), live)[0]

    def fd_filestat_set_size(fd: int, size: int) -> int:
        wanted = size & ((1 << 64) - 1)

        def live() -> Ret:
            f = h.state.files.table.get(fd)
            if f is None or f.is_dir or f.mode == 0:
                return EBADF, None
            try:
                filled = h.fs.truncate(f.path, wanted)  # checks the files budget before it allocates
            except JournalError:
                return EFBIG, None
            h.charge(filled * FUEL_PER_BYTE, "a file resize")
            return ESUCCESS, None

        return h.call("fd_filestat_set_size", (fd, size), live)[0]

    def path_unlink_file(dirfd: int, path: int, plen: int) -> int:
        raw = h.mem().read(u32(path), u32(plen), "path")

        def live() -> Ret:
            err, resolved, is_dir = lookup(dirfd, raw)
            if err:
                return err, None
            if is_dir:
                return EISDIR, None
            h.fs.delete(resolved)
            return ESUCCESS, None

        return h.call("path_unlink_file", (dirfd, raw), live)[0]

    def _file(fd: int) -> tuple[int, object]:
        f = h.state.files.table.get(fd)
        return (EBADF, None) if f is None else (ESUCCESS, f)

    def read_into(fd: int, iovs: int, n: int, nread: int, at: int | None, name: str) -> int:
        m = h.mem()
        bufs = m.iovecs(u32(iovs), u32(n))
        m.check(u32(nread), 4)
        want = sum(ln for _, ln in bufs)

        def live() -> Ret:
            if fd == 0:
                m.put_u32(u32(nread), 0)
                return ESUCCESS, None
            f = h.state.files.table.get(fd)
            if f is None:
                return EBADF, None
            if f.is_dir:
                return EISDIR, None
            content = h.fs.get(f.path) or b""
            start = f.offset if at is None else at
            chunk = bytes(content[start : start + want]) if start >= 0 else b""
            h.charge(len(chunk) * FUEL_PER_BYTE, "a file read")
            pos = 0
            for p, ln in bufs:
                piece = chunk[pos : pos + ln]
                m.write(p, piece)
                pos += len(piece)
                if len(piece) < ln:
                    break
            if at is None:
                f.offset += len(chunk)
            m.put_u32(u32(nread), len(chunk))
            return ESUCCESS, None

        return h.call(name, (fd, want, -1 if at is None else at), live)[0]

    def fd_read(fd: int, iovs: int, n: int, nread: int) -> int:
        return read_into(fd, iovs, n, nread, None, "fd_read")

    def fd_pread(fd: int, iovs: int, n: int, offset: int, nread: int) -> int:
        return read_into(fd, iovs, n, nread, offset & ((1 << 64) - 1), "fd_pread")

    def fd_seek(fd: int, offset: int, whence: int, out: int) -> int:
        m = h.mem()
        m.check(u32(out), 8)

        def live() -> Ret:
            if fd in (0, 1, 2):
                return ESPIPE, None
            f = h.state.files.table.get(fd)
            if f is None:
                return EBADF, None
            if f.is_dir:
                return EISDIR, None
            size = h.fs.size(f.path) or 0
            match whence:
                case 0:
                    new = offset
                case 1:
                    new = f.offset + offset
                case 2:
                    new = size + offset
                case _:
                    return EINVAL, None
            if not 0 <= new <= MAX_OFFSET:
                return EINVAL, None
            f.offset = new
            m.put_u64(u32(out), new)
            return ESUCCESS, None

        return h.call("fd_seek", (fd, offset, whence), live)[0]

    def fd_tell(fd: int, out: int) -> int:
        return fd_seek(fd, 0, 1, out)

    def fd_close(fd: int) -> int:
        def live() -> Ret:
            if fd in (0, 1, 2):
                return ESUCCESS, None
            return (ESUCCESS if h.state.files.close(fd) else EBADF), None

        return h.call("fd_close", (fd,), live)[0]

    def fd_fdstat_get(fd: int, out: int) -> int:
        m = h.mem()
        m.check(u32(out), 24)

        def live() -> Ret:
            if fd in (0, 1, 2):
                ftype, rights, inherit = FILETYPE_CHAR, STDIO_RIGHTS, 0
            else:
                f = h.state.files.table.get(fd)
                if f is None:
                    return EBADF, None
                ftype = FILETYPE_DIR if f.is_dir else FILETYPE_FILE
                rights, inherit = ALL_RIGHTS, ALL_RIGHTS
            m.write(u32(out), struct.pack("<BxHxxxxQQ", ftype, 0, rights, inherit))
            return ESUCCESS, None

        return h.call("fd_fdstat_get", (fd,), live)[0]

    def fd_fdstat_set_flags(fd: int, flags: int) -> int:
        return h.call("fd_fdstat_set_flags", (fd, flags), det(ESUCCESS if fd in (0, 1, 2) else ENOTSUP))[0]

    def stat_bytes(path: str, is_dir: bool) -> bytes:
        size = 0 if is_dir else (h.fs.size(path) or 0)
        ino = int.from_bytes(path.encode()[:7].ljust(7, b"\0"), "little") + 1
        return struct.pack("<QQB7xQQQQQ", 1, ino, FILETYPE_DIR if is_dir else FILETYPE_FILE, 1, size, 0, 0, 0)

    def fd_filestat_get(fd: int, out: int) -> int:
        m = h.mem()
        m.check(u32(out), 64)

        def live() -> Ret:
            if fd in (0, 1, 2):
                m.write(u32(out), struct.pack("<QQB7xQQQQQ", 0, 0, FILETYPE_CHAR, 1, 0, 0, 0, 0))
                return ESUCCESS, None
            f = h.state.files.table.get(fd)
            if f is None:
                return EBADF, None
            m.write(u32(out), stat_bytes(f.path, f.is_dir))
            return ESUCCESS, None

        return h.call("fd_filestat_get", (fd,), live)[0]

    def lookup(dirfd: int, raw_path: bytes) -> tuple[int, str, bool]:
        """(errno, resolved path, is_dir)."""
        base = h.state.files.table.get(dirfd)
        if base is None:
            return EBADF, "", False
        if not base.is_dir:
            return ENOTDIR, "", False
        if len(raw_path) > MAX_PATH:
            return ENAMETOOLONG, "", False
        try:
            text = raw_path.decode()
        except UnicodeDecodeError:
            return EINVAL, "", False
        path = h.fs.resolve(base.path, text)
        if path is None:
            return ENOTCAPABLE, "", False
        if h.fs.is_file(path):
            return ESUCCESS, path, False
        if h.fs.is_dir(path):
            return ESUCCESS, path, True
        return ENOENT, path, False

    def path_filestat_get(fd: int, flags: int, path: int, plen: int, out: int) -> int:
        m = h.mem()
        raw = m.read(u32(path), u32(plen), "path")
        m.check(u32(out), 64)

        def live() -> Ret:
            err, resolved, is_dir = lookup(fd, raw)
            if err:
                return err, None
            m.write(u32(out), stat_bytes(resolved, is_dir))
            return ESUCCESS, None

        return h.call("path_filestat_get", (fd, raw), live)[0]

    def path_open(dirfd: int, dirflags: int, path: int, plen: int, oflags: int,
                  rights: int, inherit: int, fdflags: int, out: int) -> int:
        m = h.mem()
        raw = m.read(u32(path), u32(plen), "path")
        m.check(u32(out), 4)

        def live() -> Ret:
            writing = bool(oflags & (OFLAG_CREAT | OFLAG_TRUNC) or fdflags & FDFLAG_APPEND or rights & RIGHT_FD_WRITE)
            err, resolved, is_dir = lookup(dirfd, raw)
            if err == ENOENT and oflags & OFLAG_CREAT and resolved:
                parts = resolved.split("/")
                if any(h.fs.is_file("/".join(parts[:i])) for i in range(1, len(parts))):
                    return ENOTDIR, None
                try:
                    h.fs.put(resolved, b"")
                except JournalError:
                    return EFBIG, None
                err, oflags_now = ESUCCESS, oflags & ~OFLAG_EXCL
            elif err:
                return err, None
            else:
                oflags_now = oflags
                if oflags & OFLAG_CREAT and oflags & OFLAG_EXCL:
                    return EEXIST, None
            if oflags_now & OFLAG_DIRECTORY and not is_dir:
                return ENOTDIR, None
            if is_dir and writing:
                return EISDIR, None
            if oflags_now & OFLAG_TRUNC and not is_dir:
                h.fs.put(resolved, b"")
            mode = (2 if fdflags & FDFLAG_APPEND else 1) if writing else 0
            fd = h.state.files.open(resolved, is_dir, mode)
            if fd is None:
                return ENFILE, None
            m.put_u32(u32(out), fd)
            return ESUCCESS, None

        return h.call("path_open", (dirfd, raw, oflags, rights, fdflags), live)[0]

    def fd_readdir(fd: int, buf: int, blen: int, cookie: int, used: int) -> int:
        m = h.mem()
        size = u32(blen)
        m.check(u32(buf), size, "readdir buffer")
        m.check(u32(used), 4)

        def live() -> Ret:
            f = h.state.files.table.get(fd)
            if f is None:
                return EBADF, None
            if not f.is_dir:
                return ENOTDIR, None
            entries = [(".", True), ("..", True), *h.fs.listdir(f.path)]
            h.charge(h.fs.file_count() * FUEL_PER_FILE, "a directory listing")
            out = bytearray()
            for index in range(cookie & ((1 << 63) - 1), len(entries)):
                name, is_dir = entries[index]
                raw_name = name.encode()
                out += struct.pack("<QQIB3x", index + 1, index + 1, len(raw_name), FILETYPE_DIR if is_dir else FILETYPE_FILE)
                out += raw_name
                if len(out) >= size:
                    break
            out = out[:size]
            m.write(u32(buf), bytes(out))
            m.put_u32(u32(used), len(out))
            return ESUCCESS, None

        return h.call("fd_readdir", (fd, size, cookie), live)[0]

    def fd_prestat_get(fd: int, out: int) -> int:
        m = h.mem()
        m.check(u32(out), 8)

        def live() -> Ret:
            if fd != PREOPEN_FD:
                return EBADF, None
            m.write(u32(out), struct.pack("<BxxxI", 0, len(PREOPEN_NAME)))
            return ESUCCESS, None

        return h.call("fd_prestat_get", (fd,), live)[0]

    def fd_prestat_dir_name(fd: int, path: int, plen: int) -> int:
        m = h.mem()
        m.check(u32(path), u32(plen), "path buffer")

        def live() -> Ret:
            if fd != PREOPEN_FD:
                return EBADF, None
            name = PREOPEN_NAME.encode()
            if u32(plen) < len(name):
                return ENAMETOOLONG, None
            m.write(u32(path), name)
            return ESUCCESS, None

        return h.call("fd_prestat_dir_name", (fd, u32(plen)), live)[0]

    return {"fd_write": fd_write, "fd_pwrite": fd_pwrite, "fd_filestat_set_size": fd_filestat_set_size, "path_unlink_file": path_unlink_file, "fd_read": fd_read, "fd_pread": fd_pread, "fd_seek": fd_seek, "fd_tell": fd_tell, "fd_close": fd_close, "fd_fdstat_get": fd_fdstat_get, "fd_fdstat_set_flags": fd_fdstat_set_flags, "fd_filestat_get": fd_filestat_get, "path_filestat_get": path_filestat_get, "path_open": path_open, "fd_readdir": fd_readdir, "fd_prestat_get": fd_prestat_get, "fd_prestat_dir_name": fd_prestat_dir_name}

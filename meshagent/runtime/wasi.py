"""Deterministic WASI preview 1, implemented by meshagent (not wasmtime's WASI).

Every function goes through :meth:`HostCalls.call`, which journals it.
Functions whose answer follows from the agent's own state (args, stdout
writes, reads and writes of the virtual directory) are *recomputed* on replay
and checked against the journal; functions whose answer comes from the world
(clocks, randomness, sleeps) are *answered* from the journal on replay.

Files are read and written through ``h.fs`` (a :class:`~meshagent.runtime.vfs.FileView`):
writes land in the agent's overlay, never on a host disk. Files can be
created, truncated, written, appended to and unlinked; directories are implied
by file paths, so renames, links and empty directories answer ``ENOTSUP``.

Sizes, offsets and lengths come from the agent: each is checked against the
limit that applies (the files budget, the output limit) *before* the host
allocates anything, and the bytes the host moves are charged to the agent's
fuel (:mod:`meshagent.runtime.costs`). A sleep gives the agent's execution
slot back while it lasts (the supervisor's ``sleep`` hook).

Only what C programs built with ``zig cc`` (wasi-libc) need is implemented.
The same functions serve WASI tools (:mod:`meshagent.runtime.tools.wasi_tool`),
whose ``h`` runs every call live.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import wasmtime

from meshagent.errors import AgentExit, JournalError
from meshagent.runtime.costs import FUEL_PER_BYTE, FUEL_PER_FILE
from meshagent.runtime.guest_memory import GuestMemory
from meshagent.runtime.vfs import MAX_PATH, PREOPEN_FD, PREOPEN_NAME, OpenFile

if TYPE_CHECKING:
    from meshagent.runtime.sandbox import HostCalls

__all__ = ["MODULE", "wasi_functions", "WASI_NAMES", "func_type"]

MODULE: Final = "wasi_snapshot_preview1"

# errno values of WASI preview 1
ESUCCESS, EBADF, EEXIST, EFBIG, EINVAL, EIO, EISDIR, ENAMETOOLONG, ENFILE = 0, 8, 20, 22, 28, 29, 31, 37, 41
ENOENT, ENOSYS, ENOTDIR, ENOTSUP, EPERM, EROFS, ESPIPE, ENOTCAPABLE = 44, 52, 54, 58, 63, 69, 70, 76

FILETYPE_CHAR, FILETYPE_DIR, FILETYPE_FILE = 2, 3, 4
RIGHT_FD_SEEK, RIGHT_FD_TELL, RIGHT_FD_WRITE = 1 << 2, 1 << 5, 1 << 6
ALL_RIGHTS: Final = (1 << 29) - 1
STDIO_RIGHTS: Final = ALL_RIGHTS & ~(RIGHT_FD_SEEK | RIGHT_FD_TELL)
OFLAG_CREAT, OFLAG_DIRECTORY, OFLAG_EXCL, OFLAG_TRUNC = 1, 2, 4, 8
FDFLAG_APPEND = 1
MAX_RANDOM: Final = 1 << 20
MAX_SLEEP_S: Final = 60.0
MAX_OFFSET: Final = (1 << 63) - 1
"""Largest file offset (WASI's filesize is a u64; past 2^63 is no file anyone can have)."""

_SUB: Final = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id, timeout, precision, flags
_EVENT: Final = struct.Struct("<QHB5xQH6x")

_TYPES: Final = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}


def func_type(sig: str) -> wasmtime.FuncType:
    """``"iIi>i"``: i32/i64 params before ``>``, results after."""
    params, _, results = sig.partition(">")
    return wasmtime.FuncType([_TYPES[c] for c in params], [_TYPES[c] for c in results])


def _u(x: int) -> int:
    return x & 0xFFFFFFFF


Ret = tuple[int, bytes | None]


def _det(value: int) -> Callable[[], Ret]:
    return lambda: (value, None)


def _gather(m: GuestMemory, iovs: int, n: int, cap: int) -> tuple[bytes | None, int]:
    """The bytes an iovec array points at, or ``None`` when they add up to more than ``cap``
    (then nothing is read: a thousand iovecs over the whole memory would be a thousand copies)."""
    bufs = m.iovecs(_u(iovs), _u(n))
    total = sum(length for _, length in bufs)
    if total > cap:
        return None, total
    return b"".join(m.read(p, length) for p, length in bufs), total


def wasi_functions(h: HostCalls) -> dict[str, tuple[str, Callable[..., int | None]]]:
    """Name → (signature, implementation) for the WASI functions, bound to one agent."""

    def strings_sizes(name: str, items: tuple[str, ...], count_ptr: int, size_ptr: int) -> int:
        m = h.mem()
        m.check(_u(count_ptr), 4)
        m.check(_u(size_ptr), 4)

        def live() -> Ret:
            m.put_u32(_u(count_ptr), len(items))
            m.put_u32(_u(size_ptr), sum(len(s.encode()) + 1 for s in items))
            return ESUCCESS, None

        return h.call(name, (), live)[0]

    def strings_get(name: str, items: tuple[str, ...], ptrs: int, buf: int) -> int:
        m = h.mem()
        encoded = [s.encode() + b"\0" for s in items]
        m.check(_u(ptrs), 4 * len(items), "pointer array")
        m.check(_u(buf), sum(map(len, encoded)), "string buffer")

        def live() -> Ret:
            at = _u(buf)
            for i, raw in enumerate(encoded):
                m.put_u32(_u(ptrs) + 4 * i, at)
                m.write(at, raw)
                at += len(raw)
            return ESUCCESS, None

        return h.call(name, (), live)[0]

    def args_sizes_get(c: int, s: int) -> int:
        return strings_sizes("args_sizes_get", h.argv, c, s)

    def args_get(p: int, b: int) -> int:
        return strings_get("args_get", h.argv, p, b)

    def environ_sizes_get(c: int, s: int) -> int:
        return strings_sizes("environ_sizes_get", tuple(f"{k}={v}" for k, v in h.env), c, s)

    def environ_get(p: int, b: int) -> int:
        return strings_get("environ_get", tuple(f"{k}={v}" for k, v in h.env), p, b)

    def clock_res_get(clock: int, out: int) -> int:
        m = h.mem()
        m.check(_u(out), 8)

        def live() -> Ret:
            m.put_u64(_u(out), 1000)
            return ESUCCESS, None

        return h.call("clock_res_get", (clock,), live)[0]

    def clock_time_get(clock: int, precision: int, out: int) -> int:
        m = h.mem()
        m.check(_u(out), 8)

        def live() -> Ret:
            if clock not in (0, 1, 2, 3):
                return EINVAL, None
            now = h.steady_now_ns(clock, h.world.now_ns(clock, h.position)) & ((1 << 64) - 1)
            return ESUCCESS, now.to_bytes(8, "little")

        ret, data = h.call("clock_time_get", (clock,), live, nondet=True)
        if ret == ESUCCESS and data is not None:
            m.write(_u(out), data)
        return ret

    def random_get(buf: int, length: int) -> int:
        m = h.mem()
        m.check(_u(buf), _u(length), "random buffer")
        n = _u(length)

        def live() -> Ret:
            if n > MAX_RANDOM:
                return EINVAL, None
            return ESUCCESS, bytes(h.world.random_bytes(n, h.position))[:n].ljust(n, b"\0")

        ret, data = h.call("random_get", (n,), live, nondet=True)
        if ret == ESUCCESS and data is not None:
            m.write(_u(buf), data)
        return ret

    def poll_oneoff(subs: int, events: int, nsubs: int, nevents: int) -> int:
        m = h.mem()
        count = _u(nsubs)
        if count > 1024:
            return EINVAL
        raw = m.read(_u(subs), _SUB.size * count, "subscriptions")
        m.check(_u(events), _EVENT.size * count, "events")
        m.check(_u(nevents), 4)

        def live() -> Ret:
            out: list[bytes] = []
            timeouts: list[float] = []
            for i in range(count):
                userdata, tag, clock, timeout, _prec, flags = _SUB.unpack_from(raw, _SUB.size * i)
                if tag == 0:
                    now = h.steady_now_ns(clock, h.world.now_ns(clock, h.position))
                    rel = timeout - now if flags & 1 else timeout
                    timeouts.append(max(0, rel) / 1e9)
                    out.append(_EVENT.pack(userdata, 0, 0, 0, 0))
                else:
                    out.append(_EVENT.pack(userdata, 0, tag, 0, 1))
            if timeouts and len(timeouts) == count:
                h.sleep(min(min(timeouts), MAX_SLEEP_S))
            return ESUCCESS, b"".join(out)

        ret, data = h.call("poll_oneoff", (raw,), live, nondet=True)
        if ret == ESUCCESS and data is not None:
            m.write(_u(events), data)
            m.put_u32(_u(nevents), len(data) // _EVENT.size)
        return ret

    def proc_exit(code: int) -> None:
        h.call("proc_exit", (code,), _det(code))
        raise AgentExit(code)

    def fd_write(fd: int, iovs: int, n: int, nwritten: int) -> int:
        m = h.mem()
        stdio = fd in (1, 2)
        data, total = _gather(m, iovs, n, h.limits.output_bytes if stdio else h.fs.limit)
        m.check(_u(nwritten), 4)
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
            m.put_u32(_u(nwritten), len(data))
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
        m.put_u32(_u(nwritten), len(data))
        return ESUCCESS

    def fd_pwrite(fd: int, iovs: int, n: int, offset: int, nwritten: int) -> int:
        m = h.mem()
        data, total = _gather(m, iovs, n, h.fs.limit)
        m.check(_u(nwritten), 4)
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
        raw = h.mem().read(_u(path), _u(plen), "path")

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
        bufs = m.iovecs(_u(iovs), _u(n))
        m.check(_u(nread), 4)
        want = sum(ln for _, ln in bufs)

        def live() -> Ret:
            if fd == 0:
                m.put_u32(_u(nread), 0)
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
            m.put_u32(_u(nread), len(chunk))
            return ESUCCESS, None

        return h.call(name, (fd, want, -1 if at is None else at), live)[0]

    def fd_read(fd: int, iovs: int, n: int, nread: int) -> int:
        return read_into(fd, iovs, n, nread, None, "fd_read")

    def fd_pread(fd: int, iovs: int, n: int, offset: int, nread: int) -> int:
        return read_into(fd, iovs, n, nread, offset & ((1 << 64) - 1), "fd_pread")

    def fd_seek(fd: int, offset: int, whence: int, out: int) -> int:
        m = h.mem()
        m.check(_u(out), 8)

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
            m.put_u64(_u(out), new)
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
        m.check(_u(out), 24)

        def live() -> Ret:
            if fd in (0, 1, 2):
                ftype, rights, inherit = FILETYPE_CHAR, STDIO_RIGHTS, 0
            else:
                f = h.state.files.table.get(fd)
                if f is None:
                    return EBADF, None
                ftype = FILETYPE_DIR if f.is_dir else FILETYPE_FILE
                rights, inherit = ALL_RIGHTS, ALL_RIGHTS
            m.write(_u(out), struct.pack("<BxHxxxxQQ", ftype, 0, rights, inherit))
            return ESUCCESS, None

        return h.call("fd_fdstat_get", (fd,), live)[0]

    def fd_fdstat_set_flags(fd: int, flags: int) -> int:
        return h.call("fd_fdstat_set_flags", (fd, flags), _det(ESUCCESS if fd in (0, 1, 2) else ENOTSUP))[0]

    def stat_bytes(path: str, is_dir: bool) -> bytes:
        size = 0 if is_dir else (h.fs.size(path) or 0)
        ino = int.from_bytes(path.encode()[:7].ljust(7, b"\0"), "little") + 1
        return struct.pack("<QQB7xQQQQQ", 1, ino, FILETYPE_DIR if is_dir else FILETYPE_FILE, 1, size, 0, 0, 0)

    def fd_filestat_get(fd: int, out: int) -> int:
        m = h.mem()
        m.check(_u(out), 64)

        def live() -> Ret:
            if fd in (0, 1, 2):
                m.write(_u(out), struct.pack("<QQB7xQQQQQ", 0, 0, FILETYPE_CHAR, 1, 0, 0, 0, 0))
                return ESUCCESS, None
            f = h.state.files.table.get(fd)
            if f is None:
                return EBADF, None
            m.write(_u(out), stat_bytes(f.path, f.is_dir))
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
        raw = m.read(_u(path), _u(plen), "path")
        m.check(_u(out), 64)

        def live() -> Ret:
            err, resolved, is_dir = lookup(fd, raw)
            if err:
                return err, None
            m.write(_u(out), stat_bytes(resolved, is_dir))
            return ESUCCESS, None

        return h.call("path_filestat_get", (fd, raw), live)[0]

    def path_open(dirfd: int, dirflags: int, path: int, plen: int, oflags: int,
                  rights: int, inherit: int, fdflags: int, out: int) -> int:
        m = h.mem()
        raw = m.read(_u(path), _u(plen), "path")
        m.check(_u(out), 4)

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
            m.put_u32(_u(out), fd)
            return ESUCCESS, None

        return h.call("path_open", (dirfd, raw, oflags, rights, fdflags), live)[0]

    def fd_readdir(fd: int, buf: int, blen: int, cookie: int, used: int) -> int:
        m = h.mem()
        size = _u(blen)
        m.check(_u(buf), size, "readdir buffer")
        m.check(_u(used), 4)

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
            m.write(_u(buf), bytes(out))
            m.put_u32(_u(used), len(out))
            return ESUCCESS, None

        return h.call("fd_readdir", (fd, size, cookie), live)[0]

    def fd_prestat_get(fd: int, out: int) -> int:
        m = h.mem()
        m.check(_u(out), 8)

        def live() -> Ret:
            if fd != PREOPEN_FD:
                return EBADF, None
            m.write(_u(out), struct.pack("<BxxxI", 0, len(PREOPEN_NAME)))
            return ESUCCESS, None

        return h.call("fd_prestat_get", (fd,), live)[0]

    def fd_prestat_dir_name(fd: int, path: int, plen: int) -> int:
        m = h.mem()
        m.check(_u(path), _u(plen), "path buffer")

        def live() -> Ret:
            if fd != PREOPEN_FD:
                return EBADF, None
            name = PREOPEN_NAME.encode()
            if _u(plen) < len(name):
                return ENAMETOOLONG, None
            m.write(_u(path), name)
            return ESUCCESS, None

        return h.call("fd_prestat_dir_name", (fd, _u(plen)), live)[0]

    def constant(name: str, value: int) -> Callable[..., int]:
        def fn(*args: int) -> int:
            return h.call(name, tuple(args), _det(value))[0]

        return fn

    table: dict[str, tuple[str, Callable[..., int | None]]] = {
        "args_get": ("ii>i", args_get),
        "args_sizes_get": ("ii>i", args_sizes_get),
        "environ_get": ("ii>i", environ_get),
        "environ_sizes_get": ("ii>i", environ_sizes_get),
        "clock_res_get": ("ii>i", clock_res_get),
        "clock_time_get": ("iIi>i", clock_time_get),
        "random_get": ("ii>i", random_get),
        "poll_oneoff": ("iiii>i", poll_oneoff),
        "proc_exit": ("i>", proc_exit),
        "fd_write": ("iiii>i", fd_write),
        "fd_read": ("iiii>i", fd_read),
        "fd_pread": ("iiiIi>i", fd_pread),
        "fd_seek": ("iIii>i", fd_seek),
        "fd_tell": ("ii>i", fd_tell),
        "fd_close": ("i>i", fd_close),
        "fd_fdstat_get": ("ii>i", fd_fdstat_get),
        "fd_fdstat_set_flags": ("ii>i", fd_fdstat_set_flags),
        "fd_filestat_get": ("ii>i", fd_filestat_get),
        "path_filestat_get": ("iiiii>i", path_filestat_get),
        "path_open": ("iiiiiIIii>i", path_open),
        "fd_readdir": ("iiiIi>i", fd_readdir),
        "fd_prestat_get": ("ii>i", fd_prestat_get),
        "fd_prestat_dir_name": ("iii>i", fd_prestat_dir_name),
        "sched_yield": (">i", constant("sched_yield", ESUCCESS)),
        "fd_sync": ("i>i", constant("fd_sync", ESUCCESS)),
        "fd_datasync": ("i>i", constant("fd_datasync", ESUCCESS)),
        "fd_advise": ("iIIi>i", constant("fd_advise", ESUCCESS)),
        "fd_allocate": ("iII>i", constant("fd_allocate", EROFS)),
        "fd_filestat_set_size": ("iI>i", fd_filestat_set_size),
        "fd_filestat_set_times": ("iIIi>i", constant("fd_filestat_set_times", EROFS)),
        "fd_pwrite": ("iiiIi>i", fd_pwrite),
        "fd_renumber": ("ii>i", constant("fd_renumber", ENOTSUP)),
        "path_create_directory": ("iii>i", constant("path_create_directory", ENOTSUP)),
        "path_remove_directory": ("iii>i", constant("path_remove_directory", ENOTSUP)),
        "path_unlink_file": ("iii>i", path_unlink_file),
        "path_rename": ("iiiiii>i", constant("path_rename", ENOTSUP)),
        "path_link": ("iiiiiii>i", constant("path_link", ENOTSUP)),
        "path_symlink": ("iiiii>i", constant("path_symlink", ENOTSUP)),
        "path_readlink": ("iiiiii>i", constant("path_readlink", EINVAL)),
        "path_filestat_set_times": ("iiiiIIi>i", constant("path_filestat_set_times", EROFS)),
        "proc_raise": ("i>i", constant("proc_raise", ENOSYS)),
        "sock_accept": ("iii>i", constant("sock_accept", ENOTSUP)),
        "sock_recv": ("iiiiii>i", constant("sock_recv", ENOTSUP)),
        "sock_send": ("iiiii>i", constant("sock_send", ENOTSUP)),
        "sock_shutdown": ("ii>i", constant("sock_shutdown", ENOTSUP)),
    }
    return table


WASI_NAMES: Final = frozenset(
    (MODULE, name)
    for name in (
        "args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get random_get "
        "poll_oneoff proc_exit fd_write fd_read fd_pread fd_seek fd_tell fd_close fd_fdstat_get "
        "fd_fdstat_set_flags fd_filestat_get path_filestat_get path_open fd_readdir fd_prestat_get "
        "fd_prestat_dir_name sched_yield fd_sync fd_datasync fd_advise fd_allocate fd_filestat_set_size "
        "fd_filestat_set_times fd_pwrite fd_renumber path_create_directory path_remove_directory "
        "path_unlink_file path_rename path_link path_symlink path_readlink path_filestat_set_times "
        "proc_raise sock_accept sock_recv sock_send sock_shutdown"
    ).split()
)

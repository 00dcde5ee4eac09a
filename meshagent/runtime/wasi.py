"""Deterministic WASI preview 1, implemented by meshagent (not wasmtime's WASI).

Every function goes through :meth:`HostCalls.call`, which journals it.
Functions whose answer follows from the agent's own state (args, stdout
writes, reads and writes of the virtual directory) are *recomputed* on replay
and checked against the journal; functions whose answer comes from the world
(clocks, randomness, sleeps) are *answered* from the journal on replay.

The file functions (descriptors, reads, writes, paths in the agent's own
files, with every size checked before the host allocates) are in
:mod:`~meshagent.runtime.wasi_files`; this module holds the rest and the
table of both. A sleep gives the agent's execution slot back while it lasts
(the supervisor's ``sleep`` hook).

Only what C programs built with ``zig cc`` (wasi-libc) need is implemented.
The same functions serve WASI tools (:mod:`meshagent.runtime.tools.wasi_tool`),
whose ``h`` runs every call live.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import wasmtime

from meshagent.errors import AgentExit
from meshagent.runtime.wasi_files import file_functions
from meshagent.runtime.wasi_types import EINVAL, ENOSYS, ENOTSUP, EROFS, ESUCCESS, Ret, det, u32

if TYPE_CHECKING:
    from meshagent.runtime.sandbox import HostCalls

__all__ = ["MODULE", "wasi_functions", "WASI_NAMES", "func_type"]

MODULE: Final = "wasi_snapshot_preview1"

MAX_RANDOM: Final = 1 << 20
MAX_SLEEP_S: Final = 60.0
_SUB: Final = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id, timeout, precision, flags
_EVENT: Final = struct.Struct("<QHB5xQH6x")

_TYPES: Final = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}


def func_type(sig: str) -> wasmtime.FuncType:
    """``"iIi>i"``: i32/i64 params before ``>``, results after."""
    params, _, results = sig.partition(">")
    return wasmtime.FuncType([_TYPES[c] for c in params], [_TYPES[c] for c in results])


def wasi_functions(h: HostCalls) -> dict[str, tuple[str, Callable[..., int | None]]]:
    """Name → (signature, implementation) for the WASI functions, bound to one agent."""

    def strings_sizes(name: str, items: tuple[str, ...], count_ptr: int, size_ptr: int) -> int:
        m = h.mem()
        m.check(u32(count_ptr), 4)
        m.check(u32(size_ptr), 4)

        def live() -> Ret:
            m.put_u32(u32(count_ptr), len(items))
            m.put_u32(u32(size_ptr), sum(len(s.encode()) + 1 for s in items))
            return ESUCCESS, None

        return h.call(name, (), live)[0]

    def strings_get(name: str, items: tuple[str, ...], ptrs: int, buf: int) -> int:
        m = h.mem()
        encoded = [s.encode() + b"\0" for s in items]
        m.check(u32(ptrs), 4 * len(items), "pointer array")
        m.check(u32(buf), sum(map(len, encoded)), "string buffer")

        def live() -> Ret:
            at = u32(buf)
            for i, raw in enumerate(encoded):
                m.put_u32(u32(ptrs) + 4 * i, at)
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
        m.check(u32(out), 8)

        def live() -> Ret:
            m.put_u64(u32(out), 1000)
            return ESUCCESS, None

        return h.call("clock_res_get", (clock,), live)[0]

    def clock_time_get(clock: int, precision: int, out: int) -> int:
        m = h.mem()
        m.check(u32(out), 8)

        def live() -> Ret:
            if clock not in (0, 1, 2, 3):
                return EINVAL, None
            now = h.steady_now_ns(clock, h.world.now_ns(clock, h.position)) & ((1 << 64) - 1)
            return ESUCCESS, now.to_bytes(8, "little")

        ret, data = h.call("clock_time_get", (clock,), live, nondet=True)
        if ret == ESUCCESS and data is not None:
            m.write(u32(out), data)
        return ret

    def random_get(buf: int, length: int) -> int:
        m = h.mem()
        m.check(u32(buf), u32(length), "random buffer")
        n = u32(length)

        def live() -> Ret:
            if n > MAX_RANDOM:
                return EINVAL, None
            return ESUCCESS, bytes(h.world.random_bytes(n, h.position))[:n].ljust(n, b"\0")

        ret, data = h.call("random_get", (n,), live, nondet=True)
        if ret == ESUCCESS and data is not None:
            m.write(u32(buf), data)
        return ret

    def poll_oneoff(subs: int, events: int, nsubs: int, nevents: int) -> int:
        m = h.mem()
        count = u32(nsubs)
        if count > 1024:
            return EINVAL
        raw = m.read(u32(subs), _SUB.size * count, "subscriptions")
        m.check(u32(events), _EVENT.size * count, "events")
        m.check(u32(nevents), 4)

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
            m.write(u32(events), data)
            m.put_u32(u32(nevents), len(data) // _EVENT.size)
        return ret

    def proc_exit(code: int) -> None:
        h.call("proc_exit", (code,), det(code))
        raise AgentExit(code)

    files = file_functions(h)

    def constant(name: str, value: int) -> Callable[..., int]:
        def fn(*args: int) -> int:
            return h.call(name, tuple(args), det(value))[0]

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
        "fd_write": ("iiii>i", files["fd_write"]),
        "fd_read": ("iiii>i", files["fd_read"]),
        "fd_pread": ("iiiIi>i", files["fd_pread"]),
        "fd_seek": ("iIii>i", files["fd_seek"]),
        "fd_tell": ("ii>i", files["fd_tell"]),
        "fd_close": ("i>i", files["fd_close"]),
        "fd_fdstat_get": ("ii>i", files["fd_fdstat_get"]),
        "fd_fdstat_set_flags": ("ii>i", files["fd_fdstat_set_flags"]),
        "fd_filestat_get": ("ii>i", files["fd_filestat_get"]),
        "path_filestat_get": ("iiiii>i", files["path_filestat_get"]),
        "path_open": ("iiiiiIIii>i", files["path_open"]),
        "fd_readdir": ("iiiIi>i", files["fd_readdir"]),
        "fd_prestat_get": ("ii>i", files["fd_prestat_get"]),
        "fd_prestat_dir_name": ("iii>i", files["fd_prestat_dir_name"]),
        "sched_yield": (">i", constant("sched_yield", ESUCCESS)),
        "fd_sync": ("i>i", constant("fd_sync", ESUCCESS)),
        "fd_datasync": ("i>i", constant("fd_datasync", ESUCCESS)),
        "fd_advise": ("iIIi>i", constant("fd_advise", ESUCCESS)),
        "fd_allocate": ("iII>i", constant("fd_allocate", EROFS)),
        "fd_filestat_set_size": ("iI>i", files["fd_filestat_set_size"]),
        "fd_filestat_set_times": ("iIIi>i", constant("fd_filestat_set_times", EROFS)),
        "fd_pwrite": ("iiiIi>i", files["fd_pwrite"]),
        "fd_renumber": ("ii>i", constant("fd_renumber", ENOTSUP)),
        "path_create_directory": ("iii>i", constant("path_create_directory", ENOTSUP)),
        "path_remove_directory": ("iii>i", constant("path_remove_directory", ENOTSUP)),
        "path_unlink_file": ("iii>i", files["path_unlink_file"]),
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

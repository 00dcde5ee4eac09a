"""Numbers and small helpers of WASI preview 1 shared by :mod:`~meshagent.runtime.wasi` and
:mod:`~meshagent.runtime.wasi_files`: errno values, file types, rights and flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["ALL_RIGHTS", "EBADF", "EEXIST", "EFBIG", "EINVAL", "EIO", "EISDIR", "ENAMETOOLONG", "ENFILE", "ENOENT", "ENOSYS", "ENOTCAPABLE", "ENOTDIR", "ENOTSUP", "EPERM", "EROFS", "ESPIPE", "ESUCCESS", "FDFLAG_APPEND", "FILETYPE_CHAR", "FILETYPE_DIR", "FILETYPE_FILE", "OFLAG_CREAT", "OFLAG_DIRECTORY", "OFLAG_EXCL", "OFLAG_TRUNC", "RIGHT_FD_SEEK", "RIGHT_FD_TELL", "RIGHT_FD_WRITE", "STDIO_RIGHTS", "Ret", "det", "u32"]

# errno values of WASI preview 1
ESUCCESS, EBADF, EEXIST, EFBIG, EINVAL, EIO, EISDIR, ENAMETOOLONG, ENFILE = 0, 8, 20, 22, 28, 29, 31, 37, 41
ENOENT, ENOSYS, ENOTDIR, ENOTSUP, EPERM, EROFS, ESPIPE, ENOTCAPABLE = 44, 52, 54, 58, 63, 69, 70, 76

FILETYPE_CHAR, FILETYPE_DIR, FILETYPE_FILE = 2, 3, 4
RIGHT_FD_SEEK, RIGHT_FD_TELL, RIGHT_FD_WRITE = 1 << 2, 1 << 5, 1 << 6
ALL_RIGHTS: Final = (1 << 29) - 1
STDIO_RIGHTS: Final = ALL_RIGHTS & ~(RIGHT_FD_SEEK | RIGHT_FD_TELL)
OFLAG_CREAT, OFLAG_DIRECTORY, OFLAG_EXCL, OFLAG_TRUNC = 1, 2, 4, 8
FDFLAG_APPEND = 1


def u32(x: int) -> int:
    """An i32 argument as the unsigned pointer or length it stands for."""
    return x & 0xFFFFFFFF


Ret = tuple[int, bytes | None]
"""What a call's live part returns: the errno and, for answers from the world, the bytes to journal."""


def det(value: int) -> Callable[[], Ret]:
    """A call whose answer is always ``value``."""
    return lambda: (value, None)

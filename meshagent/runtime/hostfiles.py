"""Host files that someone else may have arranged: read and written without following symlinks.

A directory handed to ``meshagent run --dir``, a tool path in ``NAME.tools.toml``,
the files ``run --out-dir`` writes: in each, a path component may be a symlink
(planted, or swapped in for a directory while the walk is under way), a FIFO, or
a file far larger than the limit. So every component below the root the user
named is opened relative to its parent's descriptor with ``O_NOFOLLOW``
(openat-style): a swap can make a step fail, never lead outside. A file's size
is taken from ``fstat`` of the opened descriptor before a single byte is read,
and the read is bounded by it. Writes go to a fresh temporary file beside the
target and are renamed over it, so they never go through a symlink or into a
hard-linked file.

Every failure is a :class:`~meshagent.errors.ConfigError` naming the path and
the reason, fit to print as the one line a user sees.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from meshagent.errors import ConfigError

__all__ = ["relative_parts", "read_bounded", "read_beneath", "copy_tree", "write_beneath", "write_private",
           "MAX_TREE_DEPTH"]

log = logging.getLogger(__name__)

MAX_TREE_DEPTH: Final = 64
"""Directories nested deeper than this under a copied tree are refused (each level holds a descriptor)."""

_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK: Final = 1 << 20


def relative_parts(rel: str, what: str) -> list[str]:
    """The components of a relative path that stays beneath its root (no absolute path, no ``..``)."""
    if not rel or rel.startswith("/") or "\0" in rel:
        raise ConfigError(f"{what}: {rel!r} must be a relative path inside the folder")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ConfigError(f"{what}: {rel!r} must stay inside the folder (no '..')")
    return parts


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return "it is a symlink (symlinks are not followed)"
    if exc.errno == errno.ENOTDIR:
        return "a component is not a directory (or is a symlink)"
    return exc.strerror or str(exc)


def read_bounded(fd: int, limit: int, what: str) -> bytes:
    """The whole regular file open at ``fd``, refused by its ``fstat`` size before reading if over ``limit``."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: not a regular file")
    if st.st_size > limit:
        raise ConfigError(f"{what}: {st.st_size} bytes is more than the limit of {limit}")
    chunks: list[bytes] = []
    got = 0
    while got < st.st_size:
        chunk = os.read(fd, min(_CHUNK, st.st_size - got))
        if not chunk:
            break  # it shrank while being read: what is there is the file
        chunks.append(chunk)
        got += len(chunk)
    if os.read(fd, 1):
        raise ConfigError(f"{what}: the file grew while it was being read")
    return b"".join(chunks)


@contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_root(root: Path, what: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{what} {root}: cannot open it as a directory: {exc.strerror}") from exc


def read_beneath(root: Path, rel: str, *, limit: int, what: str) -> bytes:
    """The regular file ``rel`` inside ``root``: no absolute path, no ``..``, no symlink at any level."""
    parts = relative_parts(rel, what)
    with _fd(_open_root(root, what)) as root_fd:
        fd = root_fd
        opened: list[int] = []
        try:
            try:
                for part in parts[:-1]:
                    fd = os.open(part, _DIR, dir_fd=fd)
                    opened.append(fd)
                fd = os.open(parts[-1], _FILE, dir_fd=fd)
                opened.append(fd)
            except OSError as exc:
                raise ConfigError(f"{what}: cannot open {rel!r} inside {root}: {_why(exc)}") from exc
            return read_bounded(fd, limit, f"{what}: {rel!r}")
        finally:
            for f in opened:
                os.close(f)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _sort_key(item: tuple[str, bytes]) -> list[str]:
    return item[0].split("/")  # the order of sorted(Path.rglob(...)), which earlier copies used


def copy_tree(root: Path, *, max_bytes: int, max_files: int, what: str = "--dir") -> dict[str, bytes]:
    """Regular files under ``root`` (relative posix path → bytes), symlinks and special files skipped.

    Walks with one descriptor per level, each opened relative to its parent with
    ``O_NOFOLLOW``: a directory swapped for a symlink during the walk is skipped,
    never followed. Each file's size is checked against what is left of
    ``max_bytes`` before it is read."""
    files: dict[str, bytes] = {}
    total = 0
    entries = 0
    too_much = (f"{what} {root} holds more than {max_bytes} bytes or {max_files} files; "
                "give the agent a smaller directory")
    root_fd = _open_root(root, what)
    stack: list[tuple[int, str, Iterator[str]]] = []

    def push(fd: int, prefix: str) -> None:
        if len(stack) >= MAX_TREE_DEPTH:
            os.close(fd)
            raise ConfigError(f"{what} {root}: directories nested deeper than {MAX_TREE_DEPTH} levels")
        try:
            with os.scandir(fd) as it:
                names = sorted(e.name for e in it)
        except OSError:
            os.close(fd)
            raise
        stack.append((fd, prefix, iter(names)))

    try:
        push(root_fd, "")
        while stack:
            fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            entries += 1
            if entries > 10 * max_files:
                raise ConfigError(too_much)
            try:
                before = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(before.st_mode):
                try:
                    child = os.open(name, _DIR, dir_fd=fd)
                except OSError as exc:  # swapped for a symlink, or gone: not followed
                    log.debug("%s %s: skipping %s%s: %s", what, root, prefix, name, _why(exc))
                    continue
                if not _same(before, os.fstat(child)):
                    os.close(child)
                    continue
                push(child, f"{prefix}{name}/")
            elif stat.S_ISREG(before.st_mode):
                if len(files) >= max_files or before.st_size > max_bytes - total:
                    raise ConfigError(too_much)
                try:
                    child = os.open(name, _FILE, dir_fd=fd)
                except OSError as exc:
                    log.debug("%s %s: skipping %s%s: %s", what, root, prefix, name, _why(exc))
                    continue
                with _fd(child):
                    now = os.fstat(child)
                    if not _same(before, now) or not stat.S_ISREG(now.st_mode):
                        continue  # replaced since the listing (by a FIFO, say): not what was listed
                    if now.st_size > max_bytes - total:
                        raise ConfigError(too_much)
                    data = read_bounded(child, max_bytes - total, f"{what} {root}/{prefix}{name}")
                total += len(data)
                files[prefix + name] = data
    except OSError as exc:
        raise ConfigError(f"{what} {root}: cannot read it: {exc.strerror}") from exc
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    log.debug("copied %s: %d files, %d bytes", root, len(files), total)
    return dict(sorted(files.items(), key=_sort_key))


def write_beneath(root: Path, rel: str, data: bytes, *, what: str = "--out-dir") -> Path:
    """Write ``data`` to ``rel`` inside ``root`` (created if needed); never through a symlink.

    Missing directories are made; a component that is a symlink or not a
    directory refuses the write. The bytes go to a fresh file beside the target
    that is then renamed over it."""
    parts = relative_parts(rel, what)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{what} {root}: cannot create it: {exc.strerror}") from exc
    opened: list[int] = []
    fd = _open_root(root, what)
    opened.append(fd)
    try:
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                fd = os.open(part, _DIR, dir_fd=fd)
                opened.append(fd)
        except OSError as exc:
            raise ConfigError(f"{what}: not writing {rel!r}: {_why(exc)}") from exc
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{what}: not writing {rel!r}: something other than a regular file is there")
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
            try:
                with _fd(out):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view):]
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise ConfigError(f"{what}: not writing {rel!r}: {exc.strerror}") from exc
    finally:
        for f in opened:
            os.close(f)
    return root / "/".join(parts)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600 (a fresh temporary file beside it, renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

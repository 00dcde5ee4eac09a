"""Built-in tools over the agent's files: list, read, search, write, patch.

Each takes its JSON arguments, a :class:`~meshagent.runtime.vfs.FileView`
(the agent's files; writes go to the view's overlay and come back to the
agent as the tool result's writes) and the :class:`~meshagent.runtime.costs.Meter`
its work is charged to, and returns the JSON answer as a dict. Paths are
relative to the agent's directory; one that climbs out of it is refused.

Regex search uses the ``regex`` package under one deadline per call
(:data:`SEARCH_TIMEOUT_S`, whatever the number of lines), so a pathological
pattern ends the call, not the node's worker; the bytes it searches are
charged before it searches them.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping
from typing import Final

import regex  # type: ignore[import-untyped]

from meshagent.errors import JournalError, MeshError
from meshagent.runtime.costs import FUEL_PER_BYTE, FUEL_PER_FILE, FUEL_PER_SEARCHED_BYTE, Meter
from meshagent.runtime.tools.unidiff import PatchError, apply_file_patch, parse_unified_diff
from meshagent.runtime.vfs import FileView

__all__ = ["ToolArgsError", "FILE_TOOLS", "clean_path", "text_of", "SEARCH_TIMEOUT_S"]

MAX_READ: Final = 256 << 10
MAX_MATCHES: Final = 1000
MAX_PATTERN: Final = 1000
SEARCH_TIMEOUT_S: Final = 2.0
"""The longest one ``fs.search`` call may run its pattern, over all its files and lines together."""


class ToolArgsError(MeshError):
    """The agent called a tool with arguments it cannot use (the agent gets an error result)."""


def clean_path(fs: FileView, raw: object, *, allow_root: bool = False) -> str:
    if not isinstance(raw, str):
        raise ToolArgsError("'path' must be a string")
    path = fs.resolve("", raw)
    if path is None:
        raise ToolArgsError(f"path {raw!r} is outside the agent's directory")
    if not path and not allow_root:
        raise ToolArgsError("'path' must name a file")
    return path


def text_of(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "replace")


def _int(args: Mapping[str, object], key: str, default: int, low: int, high: int) -> int:
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ToolArgsError(f"{key!r} must be an integer between {low} and {high}")
    return value


def _selected(fs: FileView, args: Mapping[str, object], meter: Meter) -> list[str]:
    """Files under ``path`` (a directory or a file) whose name matches ``glob``."""
    root = clean_path(fs, args.get("path", ""), allow_root=True)
    glob = args.get("glob")
    if glob is not None and not isinstance(glob, str):
        raise ToolArgsError("'glob' must be a string")
    if fs.is_file(root):
        paths = [root]
    else:
        meter.charge(fs.file_count() * FUEL_PER_FILE, "selecting files")
        prefix = f"{root}/" if root else ""
        paths = [p for p in fs.paths() if p.startswith(prefix)]
    if glob:
        paths = [p for p in paths if fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], glob) or fnmatch.fnmatchcase(p, glob)]
    return paths


def fs_list(args: Mapping[str, object], fs: FileView, meter: Meter) -> dict[str, object]:
    """``{"path": "src", "glob": "*.c"}`` → every file below, with its size."""
    return {"ok": True, "files": [{"path": p, "bytes": fs.size(p) or 0} for p in _selected(fs, args, meter)]}


def fs_read(args: Mapping[str, object], fs: FileView, meter: Meter) -> dict[str, object]:
    """``{"path": "a.c", "start": 10, "end": 20}`` → lines 10..20 (1-based, inclusive) as text."""
    path = clean_path(fs, args.get("path"))
    data = fs.get(path)
    if data is None:
        raise ToolArgsError(f"no file {path!r} in the agent's directory")
    meter.charge(FUEL_PER_FILE + len(data) * FUEL_PER_BYTE, "fs.read")
    lines = text_of(data).splitlines(keepends=True)
    start = _int(args, "start", 1, 1, max(1, len(lines)))
    end = _int(args, "end", len(lines), start - 1, 1 << 31)
    end = min(end, len(lines))
    text = "".join(lines[start - 1 : end])
    truncated = len(text.encode()) > MAX_READ
    if truncated:
        text = text.encode()[:MAX_READ].decode("utf-8", "ignore")
    return {"ok": True, "path": path, "start": start, "end": end, "lines": len(lines), "text": text, "truncated": truncated}


def fs_search(args: Mapping[str, object], fs: FileView, meter: Meter, *,
              clock: Callable[[], float] = time.monotonic) -> dict[str, object]:
    """``{"pattern": "TODO|FIXME", "path": "", "glob": "*.c", "ignore_case": false}`` → matching lines.

    One deadline for the whole call (``clock`` is ``time.monotonic``): each line gets what is left
    of it, so a pattern that is slow on every line ends the call once, not once per line."""
    pattern = args.get("pattern")
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise ToolArgsError(f"'pattern' must be a regular expression of 1..{MAX_PATTERN} characters")
    flags = regex.IGNORECASE if args.get("ignore_case") else 0
    limit = _int(args, "max_results", 200, 1, MAX_MATCHES)
    try:
        compiled = regex.compile(pattern, flags | regex.MULTILINE)
    except regex.error as exc:
        raise ToolArgsError(f"bad regular expression {pattern!r}: {exc}") from exc
    matches: list[dict[str, object]] = []
    truncated = False
    deadline = clock() + SEARCH_TIMEOUT_S
    if meter.deadline is not None:
        deadline = min(deadline, meter.deadline)  # the agent's own wall-clock limit comes first
    for path in _selected(fs, args, meter):
        data = fs.get(path) or b""
        meter.charge(len(data) * (FUEL_PER_BYTE + FUEL_PER_SEARCHED_BYTE), "fs.search")
        for number, line in enumerate(text_of(data).splitlines(), 1):
            left = deadline - clock()
            try:
                if left <= 0:
                    raise TimeoutError
                found = compiled.search(line, timeout=left)
            except TimeoutError as exc:
                raise ToolArgsError(
                    f"the search for {pattern[:100]!r} ran out of its {SEARCH_TIMEOUT_S:g} s (it stopped at {path} "
                    f"line {number}); use a simpler pattern, or narrow 'path' or 'glob'") from exc
            if found:
                if len(matches) >= limit:
                    truncated = True
                    break
                matches.append({"path": path, "line": number, "text": line[:500]})
        if truncated:
            break
    return {"ok": True, "matches": matches, "truncated": truncated}


def fs_write(args: Mapping[str, object], fs: FileView, meter: Meter) -> dict[str, object]:
    """``{"path": "REVIEW.md", "text": "...", "append": false}`` → writes (creates) the file."""
    path = clean_path(fs, args.get("path"))
    text = args.get("text")
    if not isinstance(text, str):
        raise ToolArgsError("'text' must be a string")
    if fs.is_dir(path):
        raise ToolArgsError(f"{path!r} is a directory")
    old = fs.get(path) if args.get("append") else None
    added = text.encode()
    meter.charge(FUEL_PER_FILE + (len(old or b"") + len(added)) * FUEL_PER_BYTE, "fs.write")
    data = bytes(old or b"") + added
    try:
        fs.put(path, data)
    except JournalError as exc:
        raise ToolArgsError(str(exc)) from exc
    return {"ok": True, "path": path, "bytes": len(data)}


def fs_patch(args: Mapping[str, object], fs: FileView, meter: Meter) -> dict[str, object]:
    """``{"diff": "--- a/x.c\\n+++ b/x.c\\n@@ ..."}`` → applies every file patch, or none.

    Linear in the diff and the files it touches: each file is read, patched and written once."""
    diff = args.get("diff")
    if not isinstance(diff, str):
        raise ToolArgsError("'diff' must be a unified diff (a string)")
    meter.charge(len(diff) * FUEL_PER_BYTE, "fs.patch")
    try:
        patches = parse_unified_diff(diff)
        staged: list[tuple[str, str | None]] = []
        for patch in patches:
            source = clean_path(fs, patch.old_path) if patch.old_path is not None else None
            target = clean_path(fs, patch.new_path) if patch.new_path is not None else None
            if source is not None and not fs.is_file(source):
                raise PatchError(f"the diff changes {source!r}, which does not exist")
            raw = fs.get(source) if source is not None else None
            meter.charge(FUEL_PER_FILE + len(raw or b"") * FUEL_PER_BYTE, "fs.patch")
            original = text_of(raw or b"")
            patched = apply_file_patch(original, patch)
            if source is not None and source != target:
                staged.append((source, None))
            if target is not None:
                staged.append((target, patched))
        for path, content in staged:
            if content is None:
                fs.delete(path)
            else:
                fs.put(path, content.encode())
    except (PatchError, JournalError) as exc:
        raise ToolArgsError(f"the diff does not apply: {exc}") from exc
    return {"ok": True, "files": sorted({p for p, _ in staged})}


FILE_TOOLS: Final[dict[str, Callable[[Mapping[str, object], FileView, Meter], dict[str, object]]]] = {
    "fs.list": fs_list,
    "fs.read": fs_read,
    "fs.search": fs_search,
    "fs.write": fs_write,
    "fs.patch": fs_patch,
}

"""Applying a unified diff (``diff -u`` / ``git diff`` output) to the agent's files.

Strict: every hunk must match the file exactly at its stated line (or within
a few lines of it, like ``patch`` with no fuzz); otherwise nothing is written
and the error says which hunk failed. ``/dev/null`` as the old file creates a
file, as the new file deletes one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from meshagent.errors import MeshError

__all__ = ["PatchError", "FilePatch", "parse_unified_diff", "apply_file_patch"]

_HUNK: Final = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_OFFSET_WINDOW: Final = 50


class PatchError(MeshError):
    """The diff is malformed or does not apply to the agent's files."""


@dataclass(frozen=True, slots=True)
class Hunk:
    old_start: int
    lines: tuple[str, ...]
    """Each line with its ``' '``, ``'-'`` or ``'+'`` prefix, without the newline."""


@dataclass(frozen=True, slots=True)
class FilePatch:
    old_path: str | None
    """``None`` when the file is created."""
    new_path: str | None
    """``None`` when the file is deleted."""
    hunks: tuple[Hunk, ...]


def _path(raw: str) -> str | None:
    name = raw.split("\t")[0].strip()
    if name == "/dev/null":
        return None
    if name.startswith(("a/", "b/")):
        name = name[2:]
    return name.lstrip("/")


def parse_unified_diff(text: str) -> list[FilePatch]:
    lines = text.splitlines()
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("--- "):
            i += 1
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
            raise PatchError(f"line {i + 1}: '---' without a following '+++'")
        old, new = _path(lines[i][4:]), _path(lines[i + 1][4:])
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise PatchError(f"line {i + 1}: malformed hunk header {lines[i]!r}")
            old_len = int(m.group(2) or "1")
            new_len = int(m.group(4) or "1")
            i += 1
            body: list[str] = []
            seen_old = seen_new = 0
            while i < len(lines) and (seen_old < old_len or seen_new < new_len):
                line = lines[i]
                if line.startswith("\\"):
                    i += 1
                    continue
                tag = line[:1] or " "
                if tag not in " -+":
                    raise PatchError(f"line {i + 1}: unexpected {line!r} inside a hunk")
                seen_old += tag in " -"
                seen_new += tag in " +"
                body.append(tag + line[1:])
                i += 1
            if seen_old != old_len or seen_new != new_len:
                raise PatchError(f"hunk at old line {m.group(1)} is truncated")
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
            hunks.append(Hunk(int(m.group(1)), tuple(body)))
        if old is None and new is None:
            raise PatchError("a file patch cannot go from /dev/null to /dev/null")
        patches.append(FilePatch(old, new, tuple(hunks)))
    if not patches:
        raise PatchError("no file patches found (expected '--- a/PATH' and '+++ b/PATH' lines)")
    return patches


def apply_file_patch(original: str, patch: FilePatch) -> str:
    """The patched text of one file; raises :class:`PatchError` if a hunk does not match."""
    src = original.splitlines()
    trailing_newline = original.endswith("\n") or not original
    out: list[str] = []
    pos = 0
    for number, hunk in enumerate(patch.hunks, 1):
        old = [ln[1:] for ln in hunk.lines if ln[0] in " -"]
        new = [ln[1:] for ln in hunk.lines if ln[0] in " +"]
        want = max(hunk.old_start - 1, 0) if old else hunk.old_start
        at = None
        for delta in range(_OFFSET_WINDOW + 1):
            for cand in ((want + delta, want - delta) if delta else (want,)):
                if pos <= cand <= len(src) - len(old) and src[cand : cand + len(old)] == old:
                    at = cand
                    break
            if at is not None:
                break
        if at is None:
            raise PatchError(f"hunk {number} (old line {hunk.old_start}) does not match the file")
        out.extend(src[pos:at])
        out.extend(new)
        pos = at + len(old)
    out.extend(src[pos:])
    text = "\n".join(out)
    return text + "\n" if out and trailing_newline else text

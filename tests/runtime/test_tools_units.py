"""Pure parts of the tools: the manifest and its module section, results, unified diffs, file tools."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshagent.errors import ConfigError, JournalError
from meshagent.runtime.costs import Meter
from meshagent.runtime.tools.files import FILE_TOOLS, ToolArgsError
from meshagent.runtime.tools.sections import custom_section, with_custom_section
from meshagent.runtime.tools.spec import ToolManifest, ToolNeeds, ToolResult, ToolSpec
from meshagent.runtime.tools.unidiff import PatchError, apply_file_patch, parse_unified_diff
from meshagent.runtime.vfs import FileView, VirtualFs

EMPTY_MODULE = b"\0asm\x01\0\0\0"


def plenty() -> Meter:
    """A meter that never runs out (these tests are about what the tools answer)."""
    return Meter(10**15, tool_memory_bytes=1 << 30, tool_fuel=10**11)


def test_manifest_round_trips_through_a_module_section_and_sums_up_needs() -> None:
    manifest = ToolManifest((ToolSpec("lines", "a" * 64, 16 << 20, 10**8), ToolSpec("scan", "b" * 64, 64 << 20, 10**6, True)))
    wasm = with_custom_section(EMPTY_MODULE, "meshagent.manifest", manifest.encode())
    assert ToolManifest.decode(custom_section(wasm, "meshagent.manifest") or b"") == manifest
    again = with_custom_section(wasm, "meshagent.manifest", ToolManifest().encode())  # replaces, not appends
    assert ToolManifest.decode(custom_section(again, "meshagent.manifest") or b"") == ToolManifest()
    assert manifest.needs() == ToolNeeds(64 << 20, 10**8, True)
    assert custom_section(EMPTY_MODULE, "meshagent.manifest") is None


@pytest.mark.parametrize("bad", [dict(name="no spaces"), dict(sha256="XYZ"), dict(memory_bytes=1), dict(fuel=0)])
def test_tool_specs_are_checked(bad: dict[str, object]) -> None:
    fields: dict[str, object] = dict(name="ok", sha256="c" * 64, memory_bytes=1 << 20, fuel=10)
    with pytest.raises(ConfigError):
        ToolSpec(**{**fields, **bad})  # type: ignore[arg-type]


def test_hostile_manifest_and_result_bytes_raise_journal_errors() -> None:
    for blob in (b"", b"\xff\xff", b"\xa1av\x01"):
        with pytest.raises(JournalError):
            ToolManifest.decode(blob)
        with pytest.raises(JournalError):
            ToolResult.decode(blob)


@given(st.binary(max_size=64), st.lists(st.tuples(st.sampled_from(["a", "b/c"]), st.none() | st.binary(max_size=8)), max_size=3))
def test_tool_results_round_trip(answer: bytes, writes: list[tuple[str, bytes | None]]) -> None:
    result = ToolResult(answer, tuple(writes))
    assert ToolResult.decode(result.encode()) == result


def test_unified_diff_applies_hunks_creates_and_deletes() -> None:
    diff = (
        "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -5,2 +5,3 @@\n e\n f\n+g\n"
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n"
    )
    patches = parse_unified_diff(diff)
    assert apply_file_patch("a\nb\nc\nd\ne\nf\n", patches[0]) == "a\nB\nc\nd\ne\nf\ng\n"
    assert patches[1].old_path is None and apply_file_patch("", patches[1]) == "hello\n"
    with pytest.raises(PatchError):
        apply_file_patch("completely\ndifferent\n", patches[0])
    with pytest.raises(PatchError):
        parse_unified_diff("not a diff")


def test_patch_tool_applies_all_or_nothing() -> None:
    fs = FileView(VirtualFs({"a.txt": b"1\n2\n", "b.txt": b"x\n"}), {})
    good = "--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n 1\n-2\n+two\n"
    bad = "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-nope\n+y\n"
    with pytest.raises(ToolArgsError):
        FILE_TOOLS["fs.patch"]({"diff": good + bad}, fs, plenty())
    assert fs.overlay == {}
    assert FILE_TOOLS["fs.patch"]({"diff": good}, fs, plenty()) == {"ok": True, "files": ["a.txt"]}
    assert fs.get("a.txt") == b"1\ntwo\n"


def test_read_ranges_search_and_list() -> None:
    fs = FileView(VirtualFs({"src/a.c": b"one\ntwo\nthree\n", "doc/b.md": b"two words\n"}), {})
    assert FILE_TOOLS["fs.read"]({"path": "src/a.c", "start": 2, "end": 3}, fs, plenty())["text"] == "two\nthree\n"
    found = FILE_TOOLS["fs.search"]({"pattern": "^t[wh]", "glob": "*.c"}, fs, plenty())
    assert [(m["path"], m["line"]) for m in found["matches"]] == [("src/a.c", 2), ("src/a.c", 3)]  # type: ignore[index, union-attr]
    listed = FILE_TOOLS["fs.list"]({"path": "doc"}, fs, plenty())
    assert listed["files"] == [{"path": "doc/b.md", "bytes": 10}]
    with pytest.raises(ToolArgsError):
        FILE_TOOLS["fs.search"]({"pattern": "("}, fs, plenty())
    with pytest.raises(ToolArgsError):
        FILE_TOOLS["fs.read"]({"path": "missing"}, fs, plenty())

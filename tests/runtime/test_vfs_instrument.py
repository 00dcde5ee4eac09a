"""The virtual filesystem's path rules and the mutable-global instrumentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import wasmtime

from meshagent.runtime.instrument import GLOBAL_EXPORT_PREFIX, export_mutable_globals
from meshagent.runtime.vfs import VirtualFs


def test_vfs_paths(project_dir: Path) -> None:
    vfs = VirtualFs.from_directory(project_dir)
    assert set(vfs.files) == {"src/main.c", "src/util.h", "README.md", "notes.txt"}
    assert vfs.resolve("", "src/../README.md") == "README.md"
    assert vfs.resolve("src", "main.c") == "src/main.c"
    assert vfs.resolve("", "../etc/passwd") is None
    assert vfs.resolve("src", "/README.md") == "README.md"
    assert vfs.is_dir("src") and not vfs.is_dir("README.md")
    assert vfs.listdir("") == [("README.md", False), ("notes.txt", False), ("src", True)]
    assert VirtualFs.from_wire(vfs.to_wire()) == vfs


def test_instrumentation_exports_the_stack_pointer(wasm: Callable[[str], bytes]) -> None:
    original = wasm("reactor")
    rewritten, names = export_mutable_globals(original)
    assert names and all(n.startswith(GLOBAL_EXPORT_PREFIX) for n in names)
    module = wasmtime.Module(wasmtime.Engine(), rewritten)
    exported = {e.name: e.type for e in module.exports}
    for name in names:
        assert isinstance(exported[name], wasmtime.GlobalType) and exported[name].mutable
    assert export_mutable_globals(b"junk") == (b"junk", None)

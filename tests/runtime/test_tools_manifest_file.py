"""``NAME.tools.toml``: a ``wasm`` path names a WebAssembly module inside the agent's folder, nothing else.

A tool module is stored, carried in snapshots and served by hash to peers, so a
path that reached any other host file would publish it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshagent.errors import BuildError, ConfigError
from meshagent.runtime.build import build_agent
from meshagent.runtime.tools.manifest_file import load_tools_file
from meshagent.runtime.tools.wasi_tool import MAX_TOOL_MODULE

MODULE = b"\0asm\x01\0\0\0"  # the smallest valid core module


def _manifest(folder: Path, wasm: str) -> Path:
    path = folder / "agent.tools.toml"
    path.write_text(f'[tools.t]\nwasm = "{wasm}"\n')
    return path


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agent"
    (folder / "build").mkdir(parents=True)
    (folder / "build" / "tool.wasm").write_bytes(MODULE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.wasm").write_bytes(MODULE + b"\0")
    (folder / "linked.wasm").symlink_to(outside / "x.wasm")
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (folder / "notes.wasm").write_text("not a module at all\n")
    (folder / "component.wasm").write_bytes(b"\0asm\x0d\0\x01\0")  # a component, not a core module
    return folder


def test_a_tool_inside_the_folder_is_loaded(agent_dir: Path, tmp_path: Path) -> None:
    manifest, modules = load_tools_file(_manifest(agent_dir, "build/tool.wasm"), tmp_path / "cache")
    assert list(modules.values()) == [MODULE] and manifest.tools[0].name == "t"
    _, again = load_tools_file(_manifest(agent_dir, "./build/./tool.wasm"), tmp_path / "cache")
    assert list(again.values()) == [MODULE]


@pytest.mark.parametrize(("wasm", "error"), [
    ("/etc/passwd", "must be a relative path inside the folder"),
    ("../outside/x.wasm", r"must stay inside the folder \(no '\.\.'\)"),
    ("build/../../outside/x.wasm", r"must stay inside the folder \(no '\.\.'\)"),
    ("linked.wasm", "it is a symlink"),
    ("linkdir/x.wasm", "symlink"),
    ("notes.wasm", "is not a WebAssembly module"),
    ("component.wasm", "is not a WebAssembly module"),
    ("build", "not a regular file"),
    ("missing.wasm", "No such file"),
])
def test_a_tool_path_out_of_the_folder_or_not_wasm_is_refused(agent_dir: Path, tmp_path: Path, wasm: str,
                                                              error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        load_tools_file(_manifest(agent_dir, wasm), tmp_path / "cache")
    assert "[tools.t]" in str(caught.value)  # the message says which tool


def test_an_oversized_tool_is_refused_before_it_is_read(agent_dir: Path, tmp_path: Path) -> None:
    big = agent_dir / "big.wasm"
    with open(big, "wb") as f:
        f.write(MODULE)
        f.truncate(MAX_TOOL_MODULE + 1)  # sparse: no bytes to read, only the size
    with pytest.raises(ConfigError, match=f"more than the limit of {MAX_TOOL_MODULE}"):
        load_tools_file(_manifest(agent_dir, "big.wasm"), tmp_path / "cache")


def test_meshagent_build_refuses_a_manifest_naming_a_host_file(tmp_path: Path) -> None:
    """The same refusal through the build a user runs (``meshagent build agent.c``)."""
    source = tmp_path / "agent.c"
    source.write_text("int main(void) { return 0; }\n")
    _manifest(tmp_path, "/etc/passwd")
    with pytest.raises(BuildError, match="must be a relative path inside the folder"):
        build_agent(source, tmp_path / "agent.wasm")

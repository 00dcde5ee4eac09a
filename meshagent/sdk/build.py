"""``meshagent build agent.py -o agent.wasm``: a Python agent as a WebAssembly component.

Runs ``componentize-py`` against the ``meshagent:agent`` world with the SDK
module on the path. The agent file must define ``main()``; a generated app
module exports it as the world's ``run``. Output is cached by the sha256 of
the agent, the SDK, the WIT and componentize-py's version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, MeshError
from meshagent.runtime.build import AGENTS_DIR, tools_file_of

__all__ = ["SDK_DIR", "WIT_DIR", "WORLD", "build_python_agent", "build_python_cached"]

log = logging.getLogger(__name__)

SDK_DIR: Final = Path(__file__).resolve().parent / "python"
WIT_DIR: Final = Path(__file__).resolve().parent / "wit"
WORLD: Final = "agent"
_TIMEOUT_S: Final = 900
_APP: Final = '''import wit_world
import meshagent_agent
import {module} as _agent


class WitWorld(wit_world.WitWorld):
    def run(self) -> int:
        return meshagent_agent.run_main(_agent.main)
'''


def _componentize() -> list[str]:
    exe = Path(sys.executable).with_name("componentize-py")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("componentize-py")
    if found is None:
        raise BuildError("cannot run componentize-py: install it (pip install componentize-py)")
    return [found]


def build_python_agent(source: Path, output: Path, *, tools: Path | None = None) -> Path:
    """Package ``source`` (a file with ``main()``) and CPython into a component at ``output``.

    ``tools`` (default: ``NAME.tools.toml`` beside ``NAME.py``) declares the agent's WASI tools."""
    if not source.is_file() or source.suffix != ".py":
        raise BuildError(f"{source}: not a Python file")
    if not source.stem.isidentifier() or source.stem in ("wit_world", "meshagent_agent", "_meshagent_app"):
        raise BuildError(f"{source}: the file name must be a Python module name (not a reserved one)")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshagent-build-") as tmp:
        app = Path(tmp) / "_meshagent_app.py"
        app.write_text(_APP.format(module=source.stem))
        cmd = [*_componentize(), "-d", str(WIT_DIR), "-w", WORLD, "componentize", "_meshagent_app",
               "-p", tmp, "-p", str(source.parent.resolve()), "-p", str(SDK_DIR), "-o", str(output.resolve())]
        log.debug("building python agent: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"componentize-py did not finish within {_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise BuildError(f"building {source} failed:\n{(proc.stderr or proc.stdout).strip()}")
    tools = tools or tools_file_of(source)
    if tools is not None:  # the agent's WASI tools, as for C agents
        from meshagent.runtime.tools.manifest_file import embed_manifest, load_tools_file
        from meshagent.runtime.tools.store import ToolStore, default_build_dir

        try:
            manifest, modules = load_tools_file(tools, default_build_dir())
        except MeshError as exc:
            raise BuildError(f"{tools}: {exc}") from exc
        embed_manifest(output, manifest)
        store = ToolStore(default_build_dir() / "store")
        for wasm in modules.values():
            store.put(wasm)
    return output


def build_python_cached(source: Path, cache_dir: Path) -> Path:
    """Build unless an identical build is in ``cache_dir``."""
    h = hashlib.sha256()
    parts = [source.read_bytes(), (SDK_DIR / "meshagent_agent.py").read_bytes(), (WIT_DIR / "agent.wit").read_bytes(),
             importlib.metadata.version("componentize-py").encode()]
    if (tools := tools_file_of(source)) is not None:
        parts += [tools.read_bytes(), *(p.read_bytes() for p in sorted((AGENTS_DIR / "tools").glob("*.c")))]
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    output = cache_dir / f"{source.stem}-{h.hexdigest()[:16]}.wasm"
    if output.is_file():
        return output
    tmp = output.with_suffix(".tmp.wasm")
    build_python_agent(source, tmp)
    tmp.replace(output)
    return output

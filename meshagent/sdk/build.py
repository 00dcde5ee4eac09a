"""``meshagent build agent.py -o agent.wasm``: a Python agent as a WebAssembly component.

Runs ``componentize-py`` against the ``meshagent:agent`` world. The agent file
must define ``main()``; a generated app module exports it as the world's
``run``. componentize-py executes the agent's top level at build time, so an
agent from anyone is built as untrusted code: from a copy of its one source
file and the SDK in a fresh folder, never its own folder, with a scrubbed
environment, and inside bubblewrap where that works (see
:mod:`meshagent.sdk.sandbox`). Output is cached by the sha256 of the agent,
the SDK, the WIT and componentize-py's version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, ConfigError, MeshError
from meshagent.runtime.build import AGENTS_DIR, tools_file_of
from meshagent.runtime.hostfiles import read_bounded
from meshagent.sdk.sandbox import BuildSandbox, build_sandbox, run_componentize

__all__ = ["SDK_DIR", "WIT_DIR", "WORLD", "MAX_SOURCE", "BuildSandbox", "build_sandbox", "build_python_agent",
           "build_python_cached"]

log = logging.getLogger(__name__)

SDK_DIR: Final = Path(__file__).resolve().parent / "python"
WIT_DIR: Final = Path(__file__).resolve().parent / "wit"
WORLD: Final = "agent"
MAX_SOURCE: Final = 4 << 20
"""A Python agent is one source file of at most this many bytes."""
_TIMEOUT_S: Final = 900
_APP: Final = '''import wit_world
import meshagent_agent
import {module} as _agent


class WitWorld(wit_world.WitWorld):
    def run(self) -> int:
        return meshagent_agent.run_main(_agent.main)
'''


def _read_source(source: Path) -> bytes:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BuildError(f"{source}: cannot read it: {exc.strerror}") from exc
    try:
        return read_bounded(fd, MAX_SOURCE, str(source))
    except ConfigError as exc:
        raise BuildError(str(exc)) from exc
    finally:
        os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _stage(work: Path, module: str, code: bytes) -> Path:
    """The build's inputs in a fresh folder: the app, the agent's source, the SDK, the WIT, an empty venv."""
    inputs = work / "in"
    app = inputs / "app"
    app.mkdir(parents=True)
    (app / "_meshagent_app.py").write_text(_APP.format(module=module))
    (app / f"{module}.py").write_bytes(code)
    shutil.copyfile(SDK_DIR / "meshagent_agent.py", app / "meshagent_agent.py")
    shutil.copytree(WIT_DIR, inputs / "wit")
    (inputs / "venv" / "lib" / "site-packages").mkdir(parents=True)  # componentize-py mounts VIRTUAL_ENV's, empty
    return inputs


def build_python_agent(source: Path, output: Path, *, tools: Path | None = None) -> Path:
    """Package ``source`` (a file with ``main()``) and CPython into a component at ``output``.

    ``tools`` (default: ``NAME.tools.toml`` beside ``NAME.py``) declares the agent's WASI tools."""
    if source.suffix != ".py" or not source.is_file():
        raise BuildError(f"{source}: not a Python file")
    if not source.stem.isidentifier() or source.stem in ("wit_world", "meshagent_agent", "_meshagent_app"):
        raise BuildError(f"{source}: the file name must be a Python module name (not a reserved one)")
    code = _read_source(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshagent-build-") as tmp:
        work = Path(tmp)
        inputs = _stage(work, source.stem, code)
        fd, partial = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # a build artefact, not a secret: the usual mode
            with os.fdopen(fd, "wb") as out:
                sandbox = run_componentize(work, inputs, out.fileno(),
                                           ["-d", "{in}/wit", "-w", WORLD, "componentize", "_meshagent_app",
                                            "-p", "{in}/app", "-o", "{out}"], timeout=_TIMEOUT_S)
            if os.path.getsize(partial) == 0:
                raise BuildError(f"building {source} failed: componentize-py wrote no component")
            os.replace(partial, output)
        except BuildError as exc:
            raise BuildError(f"building {source} failed:\n{exc}") from exc
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    log.info("built %s (%s)", output, sandbox.describe())
    tools = tools or tools_file_of(source)
    if tools is not None:  # the agent's WASI tools, as for C agents
        from meshagent.runtime.tools.manifest_file import embed_manifest, load_tools_file
        from meshagent.runtime.tools.store import ToolStore, default_build_dir

        try:
            manifest, modules = load_tools_file(tools, default_build_dir())
        except MeshError as exc:
            raise BuildError(str(exc)) from exc  # it names the tools file
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

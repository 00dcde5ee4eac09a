"""``meshagent build``: compile C agents against ``meshagent.h`` with ``zig cc``.

Output is a stripped, optimised wasm32-wasi module (command style, or
reactor style with ``reactor=True``). :func:`build_cached` keys the output
by the sha256 of the sources, the header and the flags.

An agent ``NAME.c`` with a ``NAME.tools.toml`` beside it declares WASI tools:
the build embeds that manifest in the module (see
:mod:`meshagent.runtime.tools.manifest_file`), as ``--tools FILE`` does.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError, MeshError

__all__ = ["AGENTS_DIR", "HEADER", "build_agent", "build_cached", "example_source", "tools_file_of"]

log = logging.getLogger(__name__)

AGENTS_DIR: Final = Path(__file__).resolve().parent.parent / "agents"
HEADER: Final = AGENTS_DIR / "meshagent.h"
_TIMEOUT_S: Final = 600


def example_source(name: str) -> Path:
    """Path of an example agent shipped in the package (``code_review``, ``brainstorm``, ``retry``)."""
    path = AGENTS_DIR / f"{name}.c"
    if not path.is_file():
        raise BuildError(f"no example agent named {name!r} in {AGENTS_DIR}")
    return path


def _command(sources: Sequence[Path], output: Path, reactor: bool, flags: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-s", "-I", str(AGENTS_DIR)]
    if reactor:
        cmd.append("-mexec-model=reactor")
    return [*cmd, *flags, *map(str, sources), "-o", str(output)]


def tools_file_of(source: Path) -> Path | None:
    """``NAME.tools.toml`` beside ``NAME.c`` (or ``NAME.py``), if there is one."""
    path = source.with_name(f"{source.stem}.tools.toml")
    return path if path.is_file() else None


def build_agent(sources: Sequence[Path] | Path, output: Path, *, reactor: bool = False, flags: Sequence[str] = (),
                tools: Path | None = None) -> Path:
    """Compile C sources into ``output``; raise :class:`BuildError` with the compiler's message.

    ``tools`` (default: the first source's ``NAME.tools.toml``) declares the agent's WASI tools."""
    srcs = [sources] if isinstance(sources, Path) else list(sources)
    for src in srcs:
        if not src.is_file():
            raise BuildError(f"{src}: no such source file")
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = _command(srcs, output, reactor, flags)
    log.debug("building agent: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise BuildError("cannot run zig: install the 'ziglang' package (pip install ziglang)") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"zig cc did not finish within {_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if "No module named ziglang" in message:
            raise BuildError("cannot run zig: install the 'ziglang' package (pip install ziglang)")
        raise BuildError(f"compiling {', '.join(map(str, srcs))} failed:\n{message}")
    tools = tools or tools_file_of(srcs[0])
    if tools is not None:
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


def build_cached(source: Path, cache_dir: Path, *, reactor: bool = False, flags: Sequence[str] = ()) -> Path:
    """Build ``source`` into ``cache_dir`` unless an identical build is already there."""
    h = hashlib.sha256()
    extra: list[bytes] = []
    if (tools := tools_file_of(source)) is not None:  # the manifest pins the tools' hashes: rebuild when they change
        extra = [tools.read_bytes(), *(p.read_bytes() for p in sorted((AGENTS_DIR / "tools").glob("*.c")))]
    for part in (source.read_bytes(), HEADER.read_bytes(), repr((reactor, tuple(flags))).encode(), *extra):
        h.update(hashlib.sha256(part).digest())
    output = cache_dir / f"{source.stem}-{h.hexdigest()[:16]}.wasm"
    if output.is_file():
        return output
    tmp = output.with_suffix(".tmp.wasm")
    build_agent(source, tmp, reactor=reactor, flags=flags)
    tmp.replace(output)
    return output

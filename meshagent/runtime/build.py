"""``meshagent build``: compile C agents against ``meshagent.h`` with ``zig cc``.

Output is a stripped, optimised wasm32-wasi module (command style, or
reactor style with ``reactor=True``). :func:`build_cached` keys the output
by the sha256 of the sources, the header and the flags.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError

__all__ = ["AGENTS_DIR", "HEADER", "build_agent", "build_cached", "example_source"]

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


def build_agent(sources: Sequence[Path] | Path, output: Path, *, reactor: bool = False, flags: Sequence[str] = ()) -> Path:
    """Compile C sources into ``output``; raise :class:`BuildError` with the compiler's message."""
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
    return output


def build_cached(source: Path, cache_dir: Path, *, reactor: bool = False, flags: Sequence[str] = ()) -> Path:
    """Build ``source`` into ``cache_dir`` unless an identical build is already there."""
    h = hashlib.sha256()
    for part in (source.read_bytes(), HEADER.read_bytes(), repr((reactor, tuple(flags))).encode()):
        h.update(hashlib.sha256(part).digest())
    output = cache_dir / f"{source.stem}-{h.hexdigest()[:16]}.wasm"
    if output.is_file():
        return output
    tmp = output.with_suffix(".tmp.wasm")
    build_agent(source, tmp, reactor=reactor, flags=flags)
    tmp.replace(output)
    return output

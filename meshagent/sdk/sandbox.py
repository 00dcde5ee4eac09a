"""Where ``componentize-py`` runs when it builds a Python agent: a place that trusts nothing.

componentize-py runs the agent's module (its top level, at build time) inside
its own wasm pre-initialiser, with every ``-p`` folder and a ``site-packages``
folder mounted into the guest. So the build is given only a fresh folder
holding copies of the agent's one source file and the SDK, an empty
``site-packages`` (``VIRTUAL_ENV`` points at an empty venv, so the host's is
never mounted) and a scrubbed environment (``python -I``; ``HOME`` and
``TMPDIR`` inside the fresh folder).

Where bubblewrap (``bwrap``, Debian package ``bubblewrap``) works, the build
also runs in its namespaces: a read-only view of ``/usr`` and of the Python
installation and venv (bound alone, also when they live under a home
directory, as with pyenv), nothing else of any home, no source folder, no
network, no capabilities, the inputs read-only, a tmpfs for scratch, and the
only writable host object the output file's descriptor. :func:`build_sandbox` says which
protection applies on this machine.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from meshagent.errors import BuildError

__all__ = ["BuildSandbox", "build_sandbox", "run_componentize"]

log = logging.getLogger(__name__)

_INSIDE: Final = Path("/build")
_TOP_LEVEL: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SCRIPT: Final = """\
import os, sys
fd, built = int(sys.argv[1]), sys.argv[2]
sys.argv = ["componentize-py", *sys.argv[3:]]
from componentize_py import script
code = script()
if code:
    sys.exit(code)
with open(built, "rb") as src, os.fdopen(fd, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
"""
"""Runs componentize-py, then hands the component out through the one descriptor the build may write."""


class BuildSandbox(enum.Enum):
    BUBBLEWRAP = "bubblewrap"
    """Copies, scrubbed environment, and bubblewrap's namespaces (read-only system, no home, no network)."""
    COPY_IN = "copy-in"
    """Copies and a scrubbed environment only (bubblewrap is missing or does not work here)."""

    def describe(self) -> str:
        if self is BuildSandbox.BUBBLEWRAP:
            return "sandboxed with bubblewrap: copies of the source and SDK, no home, no network, read-only system"
        return ("copies of the source and SDK with a scrubbed environment, but no bubblewrap sandbox "
                "(install the 'bubblewrap' package for one)")


def _python_binds() -> list[tuple[Path, Path]]:
    """(host folder, path inside) for what the build's Python needs to run componentize-py, read-only.

    Each folder is bound at its real path and, when Python was started through a
    symlinked path (a venv reached through a symlink), at that path too."""
    given = {Path(os.path.abspath(p)) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                                os.path.dirname(sys.executable))}
    spec = importlib.util.find_spec("componentize_py")
    if spec is not None and spec.submodule_search_locations:
        given.add(Path(os.path.abspath(next(iter(spec.submodule_search_locations)))).parent)
    real = {p.resolve() for p in given}
    keep: list[Path] = []
    for d in sorted(real, key=lambda p: len(p.parts)):
        if d != Path("/") and not d.is_relative_to("/usr") and not any(d.is_relative_to(k) for k in keep):
            keep.append(d)
    binds = [(d, d) for d in keep]
    for p in sorted(given, key=lambda p: len(p.parts)):
        if p.resolve() != p and not any(p.is_relative_to(dest) for _, dest in binds):
            binds.append((p.resolve(), p))
    return binds


def _bwrap_args(bwrap: str, inputs: Path) -> list[str]:
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
             "--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
    for src, dest in _python_binds():
        args += ["--ro-bind", str(src), str(dest)]
    return [*args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--tmpfs", str(_INSIDE), "--ro-bind", str(inputs), str(_INSIDE / "in"),
            "--dir", str(_INSIDE / "out"), "--dir", str(_INSIDE / "home"), "--chdir", str(_INSIDE), "--"]


def _env(home: Path, tmp: Path, venv: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "VIRTUAL_ENV": str(venv), "LANG": "C.UTF-8"}


@functools.cache
def _working_bwrap() -> str | None:
    """The bwrap binary if it runs a Python here (unprivileged user namespaces may be off), else ``None``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    probe = Path(os.path.realpath(sys.executable))
    code = "import componentize_py" if importlib.util.find_spec("componentize_py") is not None else "pass"
    try:
        proc = subprocess.run([*_bwrap_args(bwrap, probe.parent), sys.executable, "-I", "-c", code],
                              capture_output=True, text=True, timeout=60, env=_env(_INSIDE, Path("/tmp"), _INSIDE))
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap is installed but cannot run here (%s): building Python agents without it", exc)
        return None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        log.warning("bubblewrap is installed but cannot run here (%s): building Python agents without it", first)
        return None
    return bwrap


def build_sandbox() -> BuildSandbox:
    """Which protection a Python agent's build gets on this machine."""
    return BuildSandbox.BUBBLEWRAP if _working_bwrap() is not None else BuildSandbox.COPY_IN


def run_componentize(work: Path, inputs: Path, out_fd: int, args: Sequence[str], *, timeout: float) -> BuildSandbox:
    """Run ``componentize-py ARGS`` over ``inputs`` (a fresh folder inside the fresh folder ``work``).

    In ``args``, ``{in}`` stands for the inputs folder as the build sees it and
    ``{out}`` for the file componentize-py writes; that file's bytes go to
    ``out_fd``. Returns the protection that applied."""
    bwrap = _working_bwrap()
    if bwrap is not None:  # inside: the inputs read-only at /build/in, the rest a tmpfs
        prefix, ins, scratch = _bwrap_args(bwrap, inputs), _INSIDE / "in", _INSIDE
        env = _env(scratch / "home", Path("/tmp"), ins / "venv")
    else:
        prefix, ins, scratch = [], inputs, work
        for sub in ("out", "home", "tmp"):
            (work / sub).mkdir(mode=0o700)
        env = _env(scratch / "home", scratch / "tmp", ins / "venv")
    built = scratch / "out" / "component.wasm"
    argv = [arg.replace("{in}", str(ins)).replace("{out}", str(built)) for arg in args]
    cmd = [*prefix, sys.executable, "-I", "-c", _SCRIPT, str(out_fd), str(built), *argv]
    log.debug("building a python agent: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work, env=env, pass_fds=(out_fd,))
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"componentize-py did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise BuildError(f"cannot run componentize-py: {exc.strerror}") from exc
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if "No module named 'componentize_py'" in message:
            raise BuildError("cannot run componentize-py: install it (pip install componentize-py)")
        raise BuildError(message or f"componentize-py exited with status {proc.returncode}")
    return BuildSandbox.BUBBLEWRAP if bwrap is not None else BuildSandbox.COPY_IN

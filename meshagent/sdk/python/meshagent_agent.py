"""Write a meshagent agent in Python.

An agent is a file with a ``main()`` function; ``meshagent build agent.py -o agent.wasm``
packages it with CPython into a WebAssembly component that runs sandboxed on any
meshagent node, and whose every call below (and every clock and random read) is
journaled, so it can be checkpointed, rolled back and moved mid-run::

    import meshagent_agent as mesh

    def main() -> int:
        mesh.options(max_tokens=64, privacy="private")
        answer = mesh.llm("Name three rivers.")
        print(answer)
        return 0

Clocks: ``time.time()`` is the journaled wall clock; ``time.monotonic()``,
``time.perf_counter()`` and their ``_ns`` forms read the journaled monotonic clock, which
never goes back, also after the agent moved to another node (importing this module
points them there). ``time.sleep`` really sleeps.

Print with ``print``: stdout is the agent's output. Files are reached through tools
(``tool("fs.read", path="notes.txt")``); there is no filesystem inside the sandbox.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from wit_world.imports import host

__all__ = ["llm", "options", "checkpoint", "rollback", "fork", "join", "tool", "tool_raw", "embed", "log", "ToolError",
           "monotonic", "monotonic_ns", "run_main"]

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class ToolError(Exception):
    """A tool answered ``{"ok": false, "error": ...}``."""


def llm(prompt: str) -> str:
    """Generate text; the prompt continues this agent's conversation with the model."""
    return host.llm(prompt)


def options(*, model: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
            seed: int | None = None, privacy: str | None = None, deadline: float | None = None,
            reset: bool = False) -> None:
    """Options for the following ``llm`` calls (sticky); ``privacy`` is private, lan or any;
    ``deadline`` is the seconds a step should take at most (a node expecting to miss it auctions the step)."""
    pairs = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "seed": seed, "privacy": privacy,
             "deadline": deadline}
    text = ";".join(f"{k}={v}" for k, v in pairs.items() if v is not None)
    if host.llm_options("" if reset else text) != 0:
        raise ValueError(f"invalid llm options: {text!r}")


def checkpoint(label: str) -> int:
    """Label this point: 0 the first time, k after the k-th rollback to it."""
    return host.checkpoint(label)


def rollback(label: str) -> NoReturn:
    """Continue from ``checkpoint(label)`` (which then returns the rollback count); never returns."""
    host.rollback(label)
    raise RuntimeError("rollback returned")  # pragma: no cover - the host never returns


def fork(n: int) -> int:
    """Create n children: i in child i, -1 in the parent, -2 when refused."""
    return host.fork(n)


def join(i: int) -> str:
    """The stdout of child i of the latest fork, once it ended."""
    return bytes(host.join(i)).decode("utf-8", "replace")


def tool_raw(name: str, args: bytes) -> bytes:
    """Call a tool with raw argument bytes; returns its raw answer."""
    return bytes(host.tool(name, args))


def tool(name: str, **args: object) -> dict[str, object]:
    """Call a tool with JSON arguments; returns its JSON answer, raising :class:`ToolError` if it failed."""
    answer = json.loads(tool_raw(name, json.dumps(args).encode()))
    if isinstance(answer, dict) and answer.get("ok") is False:
        raise ToolError(str(answer.get("error")))
    return answer if isinstance(answer, dict) else {"value": answer}


def embed(text: str) -> list[float]:
    """An L2-normalised embedding of ``text``."""
    return list(host.embed(text))


def log(message: str, level: str = "info") -> None:
    """A line for the agent's owner (``meshagent logs``), on stderr."""
    host.log(_LEVELS.get(level, 1), message)


def monotonic_ns() -> int:
    """The agent's monotonic clock in nanoseconds (journaled; never goes back)."""
    return host.monotonic_now()


def monotonic() -> float:
    """The agent's monotonic clock in seconds (journaled; never goes back)."""
    return host.monotonic_now() / 1e9


class _HostOutput(io.RawIOBase):
    """stdout or stderr through the host: journaled, and held to the agent's output limit as it happens."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        if data and host.write(self._fd, data) != 0:
            raise OSError(f"cannot write to fd {self._fd}")
        return len(data)


def _text_stream(fd: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_HostOutput(fd), buffer_size=8192), encoding="utf-8",
                            errors="backslashreplace", line_buffering=fd == 2)


sys.stdout = sys.__stdout__ = _text_stream(1)
sys.stderr = sys.__stderr__ = _text_stream(2)

# Before the agent's own module is imported (the generated app imports this module first),
# so ``from time import monotonic`` in an agent gets the journaled clock too.
time.monotonic = time.perf_counter = monotonic
time.monotonic_ns = time.perf_counter_ns = monotonic_ns


def run_main(main: Callable[[], int | None]) -> int:
    """Run an agent's ``main`` as its ``run`` export: exit codes, flushed output, errors on stderr."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # the agent's own bug: report it as a failed run, like an uncaught C abort
        import traceback

        traceback.print_exc()
        print(f"agent failed: {exc!r}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code or 0)

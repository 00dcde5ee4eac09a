"""Start real ``meshagent join`` processes on this machine.

Used by ``meshagent demo``, the benchmarks and the end-to-end tests: each node
is a separate process with its own data dir, listening on loopback, exactly
as a person would start it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from meshagent.node.control import call

T = TypeVar("T")

__all__ = ["NodeProcess", "wait_for"]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, be killed when the process that started us dies.

    Nodes started by a test run, a benchmark or the demo must not outlive it, even
    when it is killed itself. (Linux ties this to the *thread* that started the
    child: launch nodes from a thread that lives as long as they should.)
    """
    if sys.platform != "linux":
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class NodeProcess:
    """One ``meshagent join`` process with its own data dir, on loopback."""

    def __init__(
        self, data_dir: Path, *args: str, name: str = "", env: dict[str, str] | None = None,
        entry: tuple[str, ...] = ("-m", "meshagent"),
    ) -> None:
        """``args`` are extra ``meshagent join`` flags (``--profile``, ``--bootstrap``, ...);
        ``entry`` is what the Python interpreter runs (a test's hostile variant of the node)."""
        self.entry = entry
        self.data_dir = data_dir
        self.name = name or data_dir.name
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.peer_id = ""
        self.addrs: list[str] = []
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def start(self, timeout: float = 30.0) -> NodeProcess:
        """Launch the process and wait until it prints its ready line."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> NodeProcess:
        """Launch the process without waiting (see :meth:`wait_ready`)."""
        cmd = [
            sys.executable, *self.entry, "join", "--json", "--data-dir", str(self.data_dir),
            "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--name", self.name, *self.args,
        ]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **(self.env or {}))
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout: float = 30.0) -> NodeProcess:
        assert self.proc is not None and self.proc.stdout is not None
        if self.peer_id:
            return self
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        if not line:
            raise RuntimeError(f"node {self.name} did not start; log:\n{self.log.read_text()[-3000:]}")
        info = json.loads(line)
        self.peer_id, self.addrs = info["peer_id"], info["addrs"]
        return self

    def call(self, op: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return call(self.data_dir, op, params, timeout=timeout)

    def peers(self) -> dict[str, dict[str, Any]]:
        return {p["peer_id"]: p for p in self.call("peers")["peers"]}

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1) -> tuple[T, float]:
    """Poll ``predicate`` until it returns a truthy value; return it and the time taken."""
    start = time.monotonic()
    while True:
        value = predicate()
        elapsed = time.monotonic() - start
        if value or elapsed > timeout:
            return value, elapsed
        time.sleep(interval)

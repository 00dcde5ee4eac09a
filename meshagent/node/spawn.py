"""Run real ``meshagent join`` processes for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meshagent.node.control import call


class NodeProcess:
    """One ``meshagent join`` process with its own data dir, on loopback."""

    def __init__(self, data_dir: Path, *args: str, name: str = "", env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.name = name or data_dir.name
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.peer_id = ""
        self.addrs: list[str] = []
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def start(self, timeout: float = 30.0) -> NodeProcess:
        cmd = [
            sys.executable, "-m", "meshagent", "join", "--json", "--data-dir", str(self.data_dir),
            "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--name", self.name, *self.args,
        ]
        env = dict(os.environ, **(self.env or {}))
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env)
        assert self.proc.stdout is not None
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


def wait_for(predicate, timeout: float, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; return it and the time taken."""
    start = time.monotonic()
    while True:
        value = predicate()
        elapsed = time.monotonic() - start
        if value or elapsed > timeout:
            return value, elapsed
        time.sleep(interval)

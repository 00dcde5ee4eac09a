"""Bring the network lab (``scripts/lab``) up and down from tests.

::

    with Lab(3, profiles=("wifi",)) as lab:      # skips when not root / no netns
        proc = subprocess.Popen(lab.exec_argv(1, sys.executable, "-c", "..."))
        lab.link(2, "down")

Each ``Lab`` uses its own name prefix (``mt<pid>``), so a test run never
touches a lab someone made by hand (``ma-lab-*``) or another test run's.
``__exit__`` always calls ``scripts/lab down``, which also stops any process
still running inside the lab's namespaces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
LAB_SCRIPT: Final = ROOT / "scripts" / "lab"
SUBNET: Final = "10.77.0"

__all__ = ["Lab", "lab_unavailable_reason", "LAB_SCRIPT", "ROOT"]


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def lab_unavailable_reason(prefix: str = "mtprobe") -> str | None:
    """Why the lab cannot run here, or ``None`` when it can."""
    if sys.platform != "linux":
        return "the network lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the network lab needs root (ip netns, veth, bridges)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' is not installed"
    if _run(["ip", "netns", "list"]).returncode != 0:
        return "'ip netns' does not work here"
    probe = f"{prefix}-{os.getpid()}"
    added = _run(["ip", "netns", "add", probe])
    if added.returncode != 0:
        return f"cannot create a network namespace: {added.stderr.strip()}"
    _run(["ip", "netns", "delete", probe])
    return None


class Lab:
    """``n`` namespaces on one bridge, made by ``scripts/lab up`` and always removed."""

    def __init__(self, n: int, *, profiles: Sequence[str] = (), prefix: str | None = None) -> None:
        self.n = n
        self.profiles = tuple(profiles)
        self.prefix = prefix or f"mt{os.getpid() % 100000}"
        self.env = {**os.environ, "MA_LAB_PREFIX": self.prefix, "MA_LAB_SUBNET": SUBNET}

    def _lab(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(LAB_SCRIPT), *args], env=self.env)

    def __enter__(self) -> Lab:
        reason = lab_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        args = ["up", str(self.n)]
        if self.profiles:
            args += ["--profile", ",".join(self.profiles)]
        up = self._lab(*args)
        if up.returncode != 0:
            self.down()
            raise RuntimeError(f"scripts/lab up failed ({up.returncode}): {up.stderr.strip()}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def down(self) -> None:
        result = self._lab("down")
        if result.returncode != 0:
            raise RuntimeError(f"scripts/lab down failed: {result.stderr.strip()}")

    def namespace(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def address(self, i: int) -> str:
        """Namespace ``i``'s IPv4 address on the lab subnet."""
        return f"{SUBNET}.{i}"

    def exec_argv(self, i: int, *argv: str) -> list[str]:
        """The argv that runs ``argv`` inside namespace ``i``."""
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def link(self, i: int, state: Literal["up", "down"]) -> None:
        result = self._lab("link", str(i), state)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/lab link failed: {result.stderr.strip()}")

    def status(self) -> str:
        return self._lab("status").stdout

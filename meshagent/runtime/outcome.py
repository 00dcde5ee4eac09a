"""How an agent run ended, as the CLI and the control API report it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshagent.errors import MeshError

__all__ = ["Outcome", "describe_error"]


def describe_error(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end (or pause) of one agent: ``exited``, ``failed``, ``suspended`` or ``killed``."""

    agent_id: str
    parent_id: str | None
    status: str
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    host_calls: int
    error: MeshError | None = None
    error_text: str | None = None

    @property
    def error_message(self) -> str | None:
        return describe_error(self.error) if self.error is not None else self.error_text

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "parent_id": self.parent_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "host_calls": self.host_calls,
            "error": self.error_message,
            "error_type": type(self.error).__name__ if self.error is not None else None,
        }

"""Guest-visible host state: what the host remembers between an agent's calls.

Everything here is rebuilt by replaying the journal (stdout is the sum of the
agent's writes, open descriptors follow its ``path_open`` calls, ...), so it
is not part of the journal itself; memory images save a copy so that replay
can start from the image instead of from the beginning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshagent.errors import JournalError, OutputLimitExceeded
from meshagent.runtime.services import LlmOptions
from meshagent.runtime.vfs import OpenFiles, Overlay, overlay_from_wire, overlay_to_wire

__all__ = ["HostState"]


@dataclass(slots=True)
class HostState:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    files: OpenFiles = field(default_factory=OpenFiles)
    llm_options: LlmOptions = field(default_factory=LlmOptions)
    fork_children: list[str] = field(default_factory=list)
    """Ids of the children of the agent's latest ``mesh_fork`` (``mesh_join`` indexes them)."""
    pending: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    """Answers too large for the agent's buffer, kept for its next call: name → (args digest, answer)."""
    written: Overlay = field(default_factory=Overlay)
    """The agent's file writes so far (path → bytes, ``None`` = deleted), over the snapshot's base files."""

    def write_output(self, fd: int, data: bytes, limit: int) -> None:
        """Append to stdout (1) or stderr (2), within the agent's ``output_bytes`` limit for both."""
        self.check_output(len(data), limit)
        (self.stdout if fd == 1 else self.stderr).extend(data)

    def check_output(self, size: int, limit: int) -> None:
        """Raise :class:`OutputLimitExceeded` unless ``size`` more bytes of output fit the limit."""
        if len(self.stdout) + len(self.stderr) + size > limit:
            raise OutputLimitExceeded(
                f"the agent wrote more than {limit} bytes to stdout/stderr; "
                "raise sandbox.output_bytes or make the agent print less"
            )

    def to_wire(self) -> list[object]:
        return [bytes(self.stdout), bytes(self.stderr), self.files.to_wire(), self.llm_options.to_wire(), list(self.fork_children),
                [[k, d, a] for k, (d, a) in sorted(self.pending.items())],
                *([overlay_to_wire(self.written)] if self.written else [])]

    @classmethod
    def from_wire(cls, raw: object) -> HostState:
        try:
            stdout, stderr, files, options, children, pending, *rest = raw  # type: ignore[misc]
            if len(rest) > 1:
                raise TypeError("too many fields")
            if not (isinstance(stdout, bytes) and isinstance(stderr, bytes) and isinstance(children, list)
                    and all(isinstance(c, str) for c in children) and isinstance(pending, list)):
                raise TypeError("bad field types")
            answers: dict[str, tuple[bytes, bytes]] = {}
            for name, dig, answer in pending:
                if not (isinstance(name, str) and isinstance(dig, bytes) and isinstance(answer, bytes)):
                    raise TypeError("bad pending answer")
                answers[name] = (dig, answer)
            return cls(bytearray(stdout), bytearray(stderr), OpenFiles.from_wire(files), LlmOptions.from_wire(options),
                       list(children), answers, Overlay(overlay_from_wire(rest[0]) if rest else None))
        except (TypeError, ValueError) as exc:
            raise JournalError(f"memory image holds invalid host state: {exc}") from exc

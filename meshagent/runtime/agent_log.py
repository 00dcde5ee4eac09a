"""What an agent's ``mesh_log`` lines look like in the node's operator log: escaped and bounded.

The text comes from hostile code. Control characters (a newline that forges the
next log record, a terminal escape sequence, a carriage return that hides what
came before, bidirectional overrides) are written as ``\\xNN`` / ``\\uNNNN``
escapes; a line is cut at :data:`MAX_LINE_CHARS`; and each agent may write at
most its ``log_bytes`` to the log, after which one notice says that its further
lines are dropped. The agent's own stderr keeps what it logged, under its
output limit.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

__all__ = ["OperatorLog", "escape_log_text", "MAX_LINE_CHARS"]

MAX_LINE_CHARS: Final = 1000


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_log_text(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` with control and format characters escaped, cut to at most ``limit`` characters (and a note)."""
    out: list[str] = []
    length = 0
    for index, ch in enumerate(text):
        # str.isprintable: false for every control, format, surrogate, private-use, unassigned and
        # separator character (line and paragraph separators included) but the plain space.
        piece = ch if ch.isprintable() and ch != "\\" else _escaped(ch)
        if length + len(piece) > limit:
            out.append(f"… ({len(text) - index} more characters)")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


class OperatorLog:
    """One agent's lines in the operator log, within its byte budget (thread-safe)."""

    __slots__ = ("_logger", "_agent_id", "_budget", "_used", "_dropped", "_lock")

    def __init__(self, logger: logging.Logger, agent_id: str, budget: int) -> None:
        self._logger = logger
        self._agent_id = agent_id
        self._budget = budget
        self._used = 0
        self._dropped = 0
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Lines not written because the agent's budget was spent."""
        return self._dropped

    def write(self, level: str, text: str) -> None:
        line = escape_log_text(text)
        with self._lock:
            if self._used + len(line) > self._budget:
                self._dropped += 1
                first = self._dropped == 1
            else:
                self._used += len(line)
                first = False
                self._logger.info("agent %s: [%s] %s", self._agent_id, level, line)
                return
        if first:
            self._logger.warning("agent %s logged more than its %d bytes; its further log lines are dropped",
                                 self._agent_id, self._budget)

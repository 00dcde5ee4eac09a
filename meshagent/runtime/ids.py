"""Agent identifiers."""

from __future__ import annotations

import re
import secrets
from typing import NewType

__all__ = ["AgentId", "is_agent_id", "new_agent_id"]

AgentId = NewType("AgentId", str)


def new_agent_id() -> AgentId:
    """A fresh random id (12 hex digits); forked children get their own."""
    return AgentId(secrets.token_hex(6))


def is_agent_id(text: str) -> bool:
    """``text`` has the form of an agent id (what a caller may choose for a new agent)."""
    return re.fullmatch(r"[0-9a-f]{12}", text) is not None

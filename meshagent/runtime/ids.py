"""Agent identifiers."""

from __future__ import annotations

import secrets
from typing import NewType

__all__ = ["AgentId", "new_agent_id"]

AgentId = NewType("AgentId", str)


def new_agent_id() -> AgentId:
    """A fresh random id (12 hex digits); forked children get their own."""
    return AgentId(secrets.token_hex(6))

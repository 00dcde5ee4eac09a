"""Issue 11: WASI tools travel in sealed snapshots as one cacheable section each."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from meshagent.errors import SealError
from meshagent.node.snapshots import from_sections, is_cacheable, tool_prefix, tool_section, to_sections
from tests.node.test_handoff_double import make_agent
from tests.node.test_handoff_snapshots import opened

TOOL_A = b"\0asm\x01\0\0\0tool-a"
TOOL_B = b"\0asm\x01\0\0\0tool-b"


def with_tools(*tools: bytes):  # type: ignore[no-untyped-def]
    agent = make_agent()
    carried = {hashlib.sha256(t).hexdigest(): t for t in tools}
    return replace(agent, snapshot=replace(agent.snapshot, tools=carried)), carried


def test_each_tool_is_a_section_named_by_its_hash_and_comes_back(tmp_path) -> None:
    agent, carried = with_tools(TOOL_A, TOOL_B)
    names = [n for n, _ in to_sections(agent, include_kv=False)]
    tool_names = sorted(tool_section(sha) for sha in carried)
    assert sorted(n for n in names if n.startswith("tool.")) == tool_names
    assert all(is_cacheable(n) and len(n) <= 64 for n in tool_names)
    sealed, sections = opened(agent, False, tmp_path=tmp_path)
    assert from_sections(sections, sealed.header).snapshot.tools == carried


def test_a_receiver_holding_a_tool_skips_its_section(tmp_path) -> None:
    agent, carried = with_tools(TOOL_A, TOOL_B)
    held = tool_section(hashlib.sha256(TOOL_A).hexdigest())
    sealed, sections = opened(agent, False, skip=frozenset({held}), tmp_path=tmp_path)
    back = from_sections(sections, sealed.header)
    assert back.snapshot.tools == {hashlib.sha256(TOOL_B).hexdigest(): TOOL_B}  # TOOL_A comes from the receiver's store


def test_a_tool_section_must_hold_the_tool_its_name_promises(tmp_path) -> None:
    agent, carried = with_tools(TOOL_A)
    sealed, sections = opened(agent, False, tmp_path=tmp_path)
    (name,) = [n for n in sections if n.startswith("tool.")]
    sections[name] = TOOL_B
    with pytest.raises(SealError):
        from_sections(sections, sealed.header)
    assert tool_prefix("tool.xyz") is None and tool_prefix("module") is None

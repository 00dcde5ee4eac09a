"""Journal and snapshot encoding: round trips, and strict refusal of corrupt, forged or truncated bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshagent.errors import JournalError, JournalLimitExceeded
from meshagent.protocol import codec
from meshagent.runtime.bundle import decode_family, encode_family
from meshagent.runtime.host_state import HostState
from meshagent.runtime.journal import Entry, Journal, digest
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.snapshot import AgentSnapshot, MemoryImage
from tests.runtime.helpers import run_alone

entries = st.builds(
    Entry,
    name=st.sampled_from(["llm", "fd_write", "clock_time_get", "checkpoint", "fork"]),
    digest=st.binary(min_size=32, max_size=32),
    ret=st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1)),
    data=st.one_of(st.none(), st.binary(max_size=64)),
)


@given(st.lists(entries, max_size=30))
def test_journal_round_trip(items: list[Entry]) -> None:
    journal = Journal(items)
    decoded = Journal.decode(journal.encode())
    assert list(decoded) == items
    assert decoded.bytes == journal.bytes


@settings(max_examples=200)
@given(st.lists(entries, min_size=1, max_size=10), st.data())
def test_corrupt_or_truncated_journal_never_escapes_the_error_tree(items: list[Entry], data: st.DataObject) -> None:
    raw = bytearray(Journal(items).encode())
    cut = data.draw(st.integers(0, len(raw) - 1))
    for candidate in (bytes(raw[:cut]), _flip(raw, data.draw(st.integers(0, len(raw) - 1)))):
        try:
            Journal.decode(candidate)
        except JournalError:
            pass


def _flip(raw: bytearray, at: int) -> bytes:
    out = bytearray(raw)
    out[at] ^= 0xFF
    return bytes(out)


def test_journal_limit() -> None:
    journal = Journal(limit=200)
    journal.append(Entry("llm", digest("llm", b"x"), 3, b"abc"))
    with pytest.raises(JournalLimitExceeded, match="journal_bytes"):
        journal.append(Entry("llm", digest("llm", b"y"), 200, b"z" * 200))
    with pytest.raises(JournalError, match="larger than the limit"):
        Journal.decode(Journal([Entry("llm", b"\0" * 32, 1, b"q" * 500)]).encode(), limit=300)


@pytest.mark.parametrize("bad", [
    [["", b"\0" * 32, 0, None]],
    [["llm", b"\0" * 31, 0, None]],
    [["llm", b"\0" * 32, True, None]],
    [["llm", b"\0" * 32, 0, "text"]],
    [["llm", b"\0" * 32, 0]],
    {"not": "a list"},
])
def test_forged_journal_entries_are_refused(bad: object) -> None:
    with pytest.raises(JournalError):
        Journal.decode(codec.encode(bad))


def test_agent_snapshot_round_trip_and_refusals(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    _, agent = run_alone(modules, wasm("retry"))
    snap = agent.snapshot()
    data = snap.to_bytes()
    again = AgentSnapshot.from_bytes(data)
    assert again == snap
    for cut in (1, len(data) // 3, len(data) - 1):
        with pytest.raises(JournalError):
            AgentSnapshot.from_bytes(data[:cut])
    with pytest.raises(JournalError, match="do not match module_sha256"):
        AgentSnapshot.from_bytes(replace(snap, module=snap.module[:-1] + b"\0").to_bytes())  # type: ignore[index]
    with pytest.raises(JournalError):
        AgentSnapshot.from_bytes(data, max_size=len(data) - 1)
    wire = snap.to_wire()
    wire["labels"] = {"x": 10**6}
    with pytest.raises(JournalError, match="beyond the end"):
        AgentSnapshot.from_bytes(codec.encode(wire))
    wire = snap.to_wire()
    wire["status"] = "teleported"
    with pytest.raises(JournalError, match="unknown status"):
        AgentSnapshot.from_bytes(codec.encode(wire))


def test_memory_image_keeps_only_nonzero_pages_and_validates() -> None:
    memory = bytearray(4 << 16)
    memory[70000] = 7
    image = MemoryImage.capture(3, bytes(memory), (("__mesh_global_0", 1234),), HostState())
    assert [i for i, _ in image.pages] == [1]
    assert image.memory() == memory
    assert MemoryImage.from_wire(image.to_wire()) == image
    bad = image.to_wire()
    bad[2] = [[9, bytes(1 << 16)]]  # page beyond the memory size
    with pytest.raises(JournalError):
        MemoryImage.from_wire(bad)


def test_family_bundle_round_trip_and_forgery(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    _, agent = run_alone(modules, wasm("retry"))
    snap = agent.snapshot()
    data = encode_family([snap])
    assert decode_family(data) == [snap]
    with pytest.raises(JournalError):
        decode_family(data[:-10])
    raw = codec.decode_map(data, max_size=1 << 30)
    raw["modules"] = {snap.module_sha256: b"\0asm\x01\0\0\0"}
    with pytest.raises(JournalError, match="does not match"):
        decode_family(codec.encode(raw))

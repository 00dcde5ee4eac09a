"""Agents' monotonic clocks are journaled and never go back, also after a move to a node
whose clock started later (C agents through WASI, Python agents through ``monotonic-now``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.runtime.bundle import decode_family
from meshagent.runtime.journal import Entry, Journal, digest, last_clock_reading
from meshagent.runtime.local import resume_local, run_local
from meshagent.runtime.local_component import resume_component, run_component
from meshagent.sdk.build import build_python_cached
from tests.conftest import ROOT
from tests.runtime.conftest import BUILD_CACHE
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import component_journal

COMPILED = ROOT / ".cache" / "components"
CLOCKS_PY = Path(__file__).parent / "programs" / "clocks.py"


class LaterBootWorld(ScriptedLlm):
    """A node whose monotonic clock started long after the first node's (its readings are smaller)."""

    def now_ns(self, clock_id: int, position: int) -> int:
        return super().now_ns(clock_id, position) - (0 if clock_id == 0 else 4_900_000_000)


def _clock_entry(clock: int, ns: int) -> Entry:
    return Entry("clock_time_get", digest("clock_time_get", clock), 0, ns.to_bytes(8, "little"))


def test_last_clock_reading_finds_the_latest_answer_of_that_clock() -> None:
    journal = Journal([_clock_entry(1, 10), _clock_entry(0, 99), _clock_entry(1, 20), Entry("llm", b"\0" * 32, 0, b"x")])
    assert last_clock_reading(journal, 1) == 20
    assert last_clock_reading(journal, 0) == 99
    assert last_clock_reading(journal, 2) == 0


def _c_monotonic(stdout: bytes) -> list[float]:
    return [float(m) for m in re.findall(rb"monotonic=(\d+\.\d+)", stdout)]


def test_a_c_agents_monotonic_clock_never_goes_back_after_a_move(build: Callable[[str], Path], tmp_path: Path) -> None:
    wasm = build("clockrand").read_bytes()
    plain = run_local(wasm, args=["clockrand"], services=ScriptedLlm()).outcomes[0]
    assert len(_c_monotonic(plain.stdout)) == 4
    snap = tmp_path / "clock.snapshot"
    run_local(wasm, args=["clockrand"], services=ScriptedLlm(), snapshot_at=6, snapshot_path=snap)
    moved = resume_local(snap.read_bytes(), services=LaterBootWorld()).outcomes[0]
    assert moved.status == "exited", moved.error_message
    readings = _c_monotonic(moved.stdout)
    assert len(readings) == 4 and readings == sorted(readings), readings  # on the later-booted node too
    assert readings[0] == _c_monotonic(plain.stdout)[0]  # journaled before the move: replayed as it was


@pytest.mark.timeout(900)
def test_a_python_agents_monotonic_clock_is_journaled_and_never_goes_back(tmp_path: Path) -> None:
    wasm = build_python_cached(CLOCKS_PY, BUILD_CACHE).read_bytes()
    plain = run_component(wasm, args=["clocks"], services=ScriptedLlm(), cache_dir=COMPILED).outcomes[0]
    assert plain.status == "exited", plain.error_message
    rows = [list(map(int, line.split())) for line in plain.stdout.decode().splitlines()]
    assert [r[0] for r in rows] == [0, 1, 2]
    values = [v for r in rows for v in r[1:]]
    # time.monotonic_ns, time.perf_counter_ns and `from time import monotonic` all read the world's journaled clock
    assert values == sorted(values) and all(5_000_000_000 <= v < 6_000_000_000 for v in values), values

    verified = run_component(wasm, args=["clocks"], services=ScriptedLlm(), verify_replay=True, cache_dir=COMPILED).outcomes[0]
    assert verified.stdout == plain.stdout

    # Move it after the first row's readings: the entry after the first log call is its perf_counter read.
    journal = component_journal(wasm, COMPILED, "clocks")
    cut = next(i for i, e in enumerate(journal) if e.name == "log") + 2
    assert [e.name for e in journal][cut - 3:cut] == ["clock_time_get", "log", "clock_time_get"]
    snap = tmp_path / "clocks.snapshot"
    run_component(wasm, args=["clocks"], services=ScriptedLlm(), snapshot_at=cut, snapshot_path=snap, cache_dir=COMPILED)
    (saved,) = decode_family(snap.read_bytes())
    moved = resume_component(saved, services=LaterBootWorld(), cache_dir=COMPILED).outcomes[0]
    assert moved.status == "exited", moved.error_message
    moved_rows = [list(map(int, line.split())) for line in moved.stdout.decode().splitlines()]
    moved_values = [v for r in moved_rows for v in r[1:]]
    assert moved_values == sorted(moved_values), moved_values
    assert moved_values[:2] == values[:2]  # journaled before the move: replayed as it was
    assert moved_values[2:] != values[2:]  # ...and read live on the later-booted node after it

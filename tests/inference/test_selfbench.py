"""Rates of a model on this machine: the cache, the self-benchmark under load, learning from steps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.inference.engine import GenerateOptions, SessionId
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.inference.selfbench import (
    MIN_DECODE_TOKENS,
    SEED_STEPS,
    WINDOW,
    Contention,
    LearnedRates,
    Throughput,
    ThroughputCache,
)

SHA = "ab" * 32


def _tp(prefill: float, decode: float, *, provisional: bool = False, steps: int = 0, at: float = 1.0) -> Throughput:
    return Throughput(prefill, decode, 128, 16, at, provisional=provisional, steps=steps)


def _step(rates: LearnedRates, prefill_tps: float, decode_tps: float) -> None:
    assert rates.observe(prefill_tokens=100, prefill_s=100 / prefill_tps, decode_tokens=50, decode_s=50 / decode_tps)


# --- learning from steps ------------------------------------------------------------------


def test_a_seed_a_hundred_times_too_slow_is_outvoted_within_two_steps() -> None:
    rates = LearnedRates(seed=_tp(10.0, 2.0))
    assert rates.current() == _tp(10.0, 2.0)  # the starting point, until a step says otherwise
    _step(rates, 1000.0, 200.0)
    first = rates.current()
    assert first is not None and 2.0 < first.decode_tps < 200.0  # one sample against one: in between
    _step(rates, 1000.0, 200.0)
    learned = rates.current()
    assert learned is not None and learned.decode_tps == pytest.approx(200.0) and learned.prefill_tps == pytest.approx(1000.0)
    assert learned.steps == 2 and not learned.provisional


def test_a_seed_a_hundred_times_too_fast_is_outvoted_too() -> None:
    rates = LearnedRates(seed=_tp(100_000.0, 20_000.0))
    for _ in range(2):
        _step(rates, 1000.0, 200.0)
    learned = rates.current()
    assert learned is not None and learned.decode_tps == pytest.approx(200.0)


def test_a_provisional_seed_gives_way_to_the_first_faster_step_but_not_to_one_slow_step() -> None:
    rates = LearnedRates(seed=_tp(10.0, 2.0, provisional=True))
    assert rates.current() is not None and rates.current().provisional  # type: ignore[union-attr]
    _step(rates, 1000.0, 200.0)
    learned = rates.current()
    assert learned is not None and learned.decode_tps == pytest.approx(200.0) and not learned.provisional
    # Measured under load, a seed reads slow if anything: a step slower than it is outvoted by it
    # together with the next step, not taken alone.
    rates = LearnedRates(seed=_tp(1000.0, 200.0, provisional=True))
    _step(rates, 1000.0, 50.0)
    assert rates.current().decode_tps == pytest.approx(100.0)  # type: ignore[union-attr]  # between the two
    _step(rates, 1000.0, 200.0)
    assert rates.current().decode_tps == pytest.approx(200.0)  # type: ignore[union-attr]


def test_the_median_ignores_an_outlier_step_and_follows_a_lasting_change() -> None:
    rates = LearnedRates(seed=_tp(1000.0, 200.0))
    for _ in range(SEED_STEPS):
        _step(rates, 1000.0, 200.0)
    _step(rates, 1000.0, 2.0)  # one step stalled behind other work
    assert rates.current().decode_tps == pytest.approx(200.0)  # type: ignore[union-attr]
    for _ in range(WINDOW // 2 + 1):
        _step(rates, 1000.0, 50.0)  # the machine really got slower
    assert rates.current().decode_tps == pytest.approx(50.0)  # type: ignore[union-attr]


def test_steps_too_small_to_measure_a_rate_are_not_taken() -> None:
    rates = LearnedRates(seed=_tp(1000.0, 200.0))
    assert not rates.observe(prefill_tokens=3, prefill_s=1.0, decode_tokens=MIN_DECODE_TOKENS - 1, decode_s=1.0)
    assert not rates.observe(prefill_tokens=100, prefill_s=0.0, decode_tokens=50, decode_s=0.0)
    assert rates.current() == _tp(1000.0, 200.0) and rates.steps == 0
    # A step with a short prompt still teaches the decode rate; the prefill rate stays the seed's.
    for _ in range(SEED_STEPS):
        assert rates.observe(prefill_tokens=5, prefill_s=1.0, decode_tokens=50, decode_s=1.0)
    now = rates.current()
    assert now is not None and now.decode_tps == pytest.approx(50.0) and now.prefill_tps == pytest.approx(1000.0)


def test_nothing_known_means_no_rates() -> None:
    assert LearnedRates().current() is None


# --- the cache ----------------------------------------------------------------------------


def test_learned_rates_are_written_back_and_start_the_next_process(tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    cache.put(SHA, _tp(10.0, 2.0))
    rates = LearnedRates(cache, SHA)
    assert rates.seed == _tp(10.0, 2.0)
    for _ in range(3):
        _step(rates, 1000.0, 200.0)
    stored = cache.get(SHA)
    assert stored is not None and stored.decode_tps == pytest.approx(200.0) and stored.steps == 3
    again = LearnedRates(cache, SHA)
    assert again.from_steps and again.current() == stored


def test_cache_files_of_older_nodes_and_bad_files(tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    old = {"prefill_tps": 300.0, "decode_tps": 3.0, "prefill_tokens": 256, "decode_tokens": 32, "measured_at": 5.0}
    (tmp_path / f"{SHA}.json").write_text(json.dumps(old))
    assert cache.get(SHA) == Throughput(300.0, 3.0, 256, 32, 5.0)  # no load check, no steps: measured again at start
    for bad in ({**old, "decode_tps": 0.0}, {**old, "prefill_tps": float("nan")}, {**old, "steps": "many"}, [1, 2]):
        (tmp_path / f"{SHA}.json").write_text(json.dumps(bad))
        assert cache.get(SHA) is None
    assert cache.get("../etc/passwd") is None
    with pytest.raises(ValueError):
        cache.put("../etc/passwd", Throughput(1.0, 1.0, 1, 1, 1.0))


def test_measuring_is_serialised_per_model_and_a_peer_process_measurement_is_taken(tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    first, second = LearnedRates(cache, SHA), LearnedRates(cache, SHA)
    inside = threading.Event()
    release = threading.Event()
    measured: list[str] = []

    def slow() -> Throughput:
        measured.append("first")
        inside.set()
        release.wait(10)
        return _tp(1000.0, 200.0, at=time.time())

    def other() -> Throughput:
        measured.append("second")
        return _tp(1.0, 1.0)

    t = threading.Thread(target=first.benchmark, args=(slow,))
    t.start()
    assert inside.wait(10)
    done = threading.Event()
    u = threading.Thread(target=lambda: (second.benchmark(other), done.set()))
    u.start()
    time.sleep(0.2)
    assert not done.is_set()  # waits for the first measurement instead of competing with it
    release.set()
    t.join(10)
    u.join(10)
    assert measured == ["first"] and second.seed == first.seed and second.seed.decode_tps == 200.0  # type: ignore[union-attr]


def _bench(prefill: float, decode: float, *, provisional: bool) -> Callable[[], Throughput]:
    return lambda: _tp(prefill, decode, provisional=provisional, at=time.time())


def test_checking_a_start_keeps_the_faster_rate_unless_measured_on_a_quiet_machine(tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    cache.put(SHA, _tp(10.0, 2.0))  # cached a hundred times too slow
    rates = LearnedRates(cache, SHA)
    rates.benchmark(_bench(500.0, 100.0, provisional=True), again=True)
    assert (rates.seed.prefill_tps, rates.seed.decode_tps) == (500.0, 100.0)  # type: ignore[union-attr]
    rates.benchmark(_bench(100.0, 20.0, provisional=True), again=True)  # under more load: slower, not truer
    assert (rates.seed.prefill_tps, rates.seed.decode_tps) == (500.0, 100.0)  # type: ignore[union-attr]
    rates.benchmark(_bench(300.0, 60.0, provisional=False), again=True)  # quiet: the truth about now
    assert (rates.seed.prefill_tps, rates.seed.decode_tps) == (300.0, 60.0)  # type: ignore[union-attr]
    assert cache.get(SHA) == rates.seed
    rates.benchmark(_bench(1.0, 1.0, provisional=False))  # a known start is not measured again unasked
    assert rates.seed.decode_tps == 60.0  # type: ignore[union-attr]


def test_contention_counts_other_processes_cpu_and_not_this_ones() -> None:
    import os
    import subprocess
    import sys

    import psutil

    capacity = os.cpu_count() or 1
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass\ntime.sleep(5)"
    burn = subprocess.Popen([sys.executable, "-c", spin])
    try:
        probe = Contention()
        t0 = time.perf_counter()
        time.sleep(1.5)
        burned = sum(psutil.Process(burn.pid).cpu_times()[:2])
        share, wall = probe.share(), time.perf_counter() - t0
    finally:
        burn.kill()
        burn.wait(10)
    assert share * wall * capacity >= 0.8 * burned - 0.05  # the other process's CPU is in the share
    probe.start()
    t0, own0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < 1.0:
        pass
    share, wall, own = probe.share(), time.perf_counter() - t0, time.process_time() - own0
    assert share <= 1.0 - own / (wall * capacity) + 0.05  # this process's own CPU is not


# --- the engine ---------------------------------------------------------------------------


def test_every_generation_teaches_the_engine_its_rates(tiny_model: Path, tiny_sha: str, tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    cache.put(tiny_sha, _tp(1.0, 0.01, steps=50))  # learned, it claims, and absurdly slow
    engine = LlamaEngine(tiny_model, sha256=tiny_sha, n_ctx=2048, max_sessions=4, throughput_cache=cache)
    try:
        assert engine.info.decode_tps == 0.01
        timings = []
        for i in range(SEED_STEPS):
            g = engine.generate(SessionId(f"s{i}"), "a prompt long enough to measure prefill " * 2, GenerateOptions(max_tokens=40))
            timings.append(g)
        assert engine.rates.steps == SEED_STEPS
        info = engine.info
        measured = sorted(g.completion_tokens / g.decode_s for g in timings)
        assert info.decode_tps == pytest.approx(measured[len(measured) // 2])
        stored = cache.get(tiny_sha)
        assert stored is not None and stored.decode_tps == info.decode_tps and stored.steps == 50 + SEED_STEPS
    finally:
        engine.close()


def test_rates_this_node_wrote_back_are_not_taken_for_another_nodes_news(tmp_path: Path) -> None:
    cache = ThroughputCache(tmp_path)
    cache.put(SHA, _tp(1000.0, 200.0))
    rates = LearnedRates(cache, SHA)
    _step(rates, 1000.0, 200.0)  # written back: one step
    calls: list[int] = []
    rates.benchmark(lambda: calls.append(1) or _tp(900.0, 150.0, at=time.time()), again=True)  # type: ignore[func-returns-value]
    assert calls == [1]  # measured: the cached rates were this node's own
    assert rates.current().steps == 1  # type: ignore[union-attr]

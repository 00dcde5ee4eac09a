"""Prefill and decode tokens/s of a model on this node: measured once, then learned from every step.

Bidders quote prefill and decode times from these rates, so a wrong rate means
wrong bids. Three sources, in the order they take over:

* the **cache** (``<dir>/<model sha256>.json``, one file per model, shared by
  every node of this user on this machine): where the last node left the rates.
  It is a starting point, never the truth;
* a **self-benchmark** (:func:`measure_throughput`) when nothing is cached. It
  also measures how much of the machine other processes took meanwhile, and a
  measurement taken under load is marked *provisional*: a machine busy with
  other work can read a hundred times slower than it really runs;
* every **real step** (:class:`LearnedRates`): each generation's measured
  prefill and decode rates, per token, join a window of recent samples whose
  median is the rate. A seed (cached or benchmarked) counts as one sample until
  a few real steps outvote it; a provisional seed gives way to the first step
  that runs faster than it. The learned rates are written back to the cache.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import psutil

if TYPE_CHECKING:
    from meshagent.inference.llama_api import LlamaContext

__all__ = [
    "Throughput",
    "ThroughputCache",
    "Contention",
    "LearnedRates",
    "measure_throughput",
    "PROVISIONAL_CONTENTION",
]

log = logging.getLogger(__name__)

PROVISIONAL_CONTENTION: Final = 0.2
"""A measurement during which other processes (or the hypervisor) took more than this share of
the machine's CPU is provisional: under load a benchmark reads far slower than the machine runs."""
WINDOW: Final = 9
"""Real-step samples the median is taken over (the most recent ones)."""
SEED_STEPS: Final = 3
"""A trusted seed counts as one sample until this many real steps exist."""
MIN_PREFILL_TOKENS: Final = 32
"""A step prefilling fewer tokens says more about per-call overhead than about the prefill rate."""
MIN_DECODE_TOKENS: Final = 4


@dataclass(frozen=True, slots=True)
class Throughput:
    prefill_tps: float
    decode_tps: float
    prefill_tokens: int
    decode_tokens: int
    measured_at: float
    """Unix time of the measurement (or of the last step the rates were learned from)."""
    provisional: bool = False
    """Measured while the machine was busy with other work: a starting point only."""
    steps: int = 0
    """Real steps the rates were learned from (0: a self-benchmark alone)."""
    contention: float = 0.0
    """Share of the machine's CPU that other work took during the self-benchmark."""


class ThroughputCache:
    """``<dir>/<model sha256>.json`` files holding a :class:`Throughput` each."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, sha256: str, suffix: str = ".json") -> Path:
        if not sha256 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.directory / f"{sha256}{suffix}"

    def get(self, sha256: str) -> Throughput | None:
        try:
            raw = json.loads(self._path(sha256).read_text(encoding="utf-8"))
            value = Throughput(
                prefill_tps=float(raw["prefill_tps"]),
                decode_tps=float(raw["decode_tps"]),
                prefill_tokens=int(raw["prefill_tokens"]),
                decode_tokens=int(raw["decode_tokens"]),
                measured_at=float(raw["measured_at"]),
                provisional=bool(raw.get("provisional", False)),
                steps=int(raw.get("steps", 0)),
                contention=float(raw.get("contention", 0.0)),
            )
            if not (value.prefill_tps > 0 and value.decode_tps > 0):  # also refuses NaN
                raise ValueError(f"rates must be positive: {value.prefill_tps}, {value.decode_tps}")
            return value
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable throughput cache for %s: %s", sha256[:12], exc)
            return None

    def put(self, sha256: str, value: Throughput) -> None:
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(asdict(value)), encoding="utf-8")
        os.replace(tmp, path)

    @contextmanager
    def measuring(self, sha256: str) -> Iterator[None]:
        """Held while one process measures a model: nodes starting together on one machine
        measure one at a time (and the later ones find the rate cached) instead of all at
        once, each slowing the others' benchmark down."""
        path = self._path(sha256, ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no advisory locks here: measure unserialised
            yield
            return
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _busy_s() -> float:
    """CPU seconds the machine has spent busy since boot, all CPUs together (guest time is
    already counted in user time; steal is counted: the hypervisor gave the CPU to others)."""
    skip = {"idle", "iowait", "guest", "guest_nice"}
    return float(sum(v for k, v in psutil.cpu_times()._asdict().items() if k not in skip))


class Contention:
    """The share of the machine's CPU that other processes and the hypervisor (steal) took
    between :meth:`start` and :meth:`share`: this process's own CPU time is left out."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._cpus = psutil.cpu_count() or 1
        self.start()

    def _own_s(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._busy = _busy_s()
        self._own = self._own_s()

    def share(self) -> float:
        """Fraction (0..1) of the machine's CPU capacity used by others since :meth:`start`."""
        wall = time.perf_counter() - self._wall
        if wall <= 0:
            return 0.0
        others = (_busy_s() - self._busy) - (self._own_s() - self._own)
        return min(1.0, max(0.0, others / (wall * self._cpus)))


def measure_throughput(
    ctx: LlamaContext,
    seq: int,
    *,
    prefill_tokens: int = 128,
    decode_tokens: int = 16,
    rounds: int = 7,
    budget_s: float = 1.5,
) -> Throughput:
    """Prefill ``prefill_tokens`` then greedily decode ``decode_tokens`` on scratch sequence ``seq``.

    Repeated up to ``rounds`` times while the whole stays within ``budget_s`` (a
    large model is measured once); each rate is that of its fastest round: other
    work on the machine only ever slows a round down, and a start that is too
    slow is the one error that steps never correct (:meth:`LearnedRates.benchmark`).
    The scratch sequence is removed afterwards. Prompt tokens are a fixed pseudo-random pattern so that
    every node measures the same work. The result is provisional when other work
    took more than :data:`PROVISIONAL_CONTENTION` of the machine meanwhile.
    """
    n_vocab = ctx.model.n_vocab
    n = max(8, min(prefill_tokens, ctx.n_ctx // 2))
    m = max(1, min(decode_tokens, ctx.n_ctx - n - 1))
    prompt = [ctx.model.bos] + [(i * 7919 + 13) % n_vocab for i in range(n - 1)]
    prefill: list[float] = []
    decode: list[float] = []
    contention = Contention()
    try:
        # Warm up first (graph allocation, caches): the first call of a fresh context is not its speed.
        ctx.decode(prompt[:8], seq, 0, logits=True)
        ctx.seq_rm(seq)
        contention.start()
        start = time.perf_counter()
        while len(decode) < max(1, rounds):
            t0 = time.perf_counter()
            logits = ctx.decode(prompt, seq, 0, logits=True)
            t1 = time.perf_counter()
            pos = n
            for _ in range(m):
                assert logits is not None
                tok = int(logits.argmax())
                logits = ctx.decode([tok], seq, pos, logits=True)
                pos += 1
            t2 = time.perf_counter()
            ctx.seq_rm(seq)
            prefill.append(n / max(t1 - t0, 1e-9))
            decode.append(m / max(t2 - t1, 1e-9))
            if (t2 - start) * (len(decode) + 1) / len(decode) > budget_s:
                break
    finally:
        ctx.seq_rm(seq)
    share = contention.share()
    result = Throughput(
        prefill_tps=max(prefill),
        decode_tps=max(decode),
        prefill_tokens=n,
        decode_tokens=m,
        measured_at=time.time(),
        provisional=share > PROVISIONAL_CONTENTION,
        contention=round(share, 3),
    )
    log.info("self-benchmark (%d rounds): prefill %.0f tok/s, decode %.0f tok/s (others took %.0f%% of the CPU%s)",
             len(decode), result.prefill_tps, result.decode_tps, 100 * share,
             ": provisional" if result.provisional else "")
    return result


def _median(values: list[float]) -> float:
    """The median; for an even count, the geometric mean of the middle two (rates are ratios:
    halfway between 2 and 200 tokens/s is 20, not 101)."""
    ordered = sorted(values)
    k = len(ordered)
    if k % 2:
        return ordered[k // 2]
    return float(statistics.geometric_mean(ordered[k // 2 - 1 : k // 2 + 1]))


class LearnedRates:
    """One model's prefill and decode rates on this machine, learned from the steps it runs.

    Seeded from the cache (or a self-benchmark, :meth:`benchmark`); :meth:`observe`
    folds each real generation in and writes the learned rates back to the cache.
    Thread-safe: steps report from the engine's worker threads while adverts read.
    """

    def __init__(self, cache: ThroughputCache | None = None, sha256: str = "", *, seed: Throughput | None = None) -> None:
        self._lock = threading.Lock()
        self._cache = cache
        self._sha256 = sha256
        self._seed = seed if seed is not None or cache is None else cache.get(sha256)
        self._prefill: deque[float] = deque(maxlen=WINDOW)
        self._decode: deque[float] = deque(maxlen=WINDOW)
        self._steps = 0
        self._last_step_at = 0.0
        self._created_at = time.time()
        self._written: Throughput | None = None
        """What this object last wrote to the cache (not another node's news when read back)."""

    @property
    def seed(self) -> Throughput | None:
        """The starting point: cached or self-benchmarked rates."""
        return self._seed

    @property
    def steps(self) -> int:
        """Real steps observed since this object was made."""
        return self._steps

    @property
    def from_steps(self) -> bool:
        """Whether the rates rest on real steps (here or, through the cache, on another node)."""
        return self._steps > 0 or (self._seed is not None and self._seed.steps > 0)

    def benchmark(self, measure: Callable[[], Throughput], *, again: bool = False) -> None:
        """Measure the starting point with ``measure`` when none is known, or ``again`` to check one.

        A measurement taken on a quiet machine replaces a starting point that was only
        measured too. Otherwise each rate keeps the faster of the two: a measurement under
        load can only read slower than the machine runs, and a start that is too slow is
        never corrected by steps, because a node that bids too slow wins nothing to learn
        from, while one that bids too fast wins, runs and learns (and the auctioneer judges
        it on that promise meanwhile).

        Serialised per model across this machine's processes; rates that another node
        cached meanwhile (measured since this object was made, or learned from steps)
        are taken instead of measuring.
        """
        cache = self._cache
        with cache.measuring(self._sha256) if cache is not None else nullcontext():
            seed = self._seed
            cached = cache.get(self._sha256) if cache is not None else None
            theirs = cached is not None and cached != seed and cached != self._written
            if cached is not None and theirs and (cached.steps > 0 or cached.measured_at >= self._created_at):
                with self._lock:
                    self._seed = cached
                return
            if seed is not None and not again:
                return
            measured = measure()
            if seed is not None and (measured.provisional or seed.steps > 0):
                measured = replace(measured, prefill_tps=max(seed.prefill_tps, measured.prefill_tps),
                                   decode_tps=max(seed.decode_tps, measured.decode_tps))
            with self._lock:
                self._seed = measured
            self._write_back()

    def observe(self, *, prefill_tokens: int, prefill_s: float, decode_tokens: int, decode_s: float) -> bool:
        """Fold one real generation in; False when it was too small to say anything about either rate."""
        took = False
        with self._lock:
            if prefill_tokens >= MIN_PREFILL_TOKENS and prefill_s > 0:
                self._prefill.append(prefill_tokens / prefill_s)
                took = True
            if decode_tokens >= MIN_DECODE_TOKENS and decode_s > 0:
                self._decode.append(decode_tokens / decode_s)
                took = True
            if took:
                self._steps += 1
                self._last_step_at = time.time()
        if took:
            self._write_back()
        return took

    def _write_back(self) -> None:
        current = self.current()
        if self._cache is None or current is None:
            return
        try:
            self._cache.put(self._sha256, current)
            self._written = current
        except OSError as exc:
            log.warning("could not write the rates of %s to the cache: %s", self._sha256[:12], exc)

    def _rate(self, samples: deque[float], seeded: float | None) -> float | None:
        """The median of the samples, with the seed's vote while fewer than :data:`SEED_STEPS` exist.

        A provisional seed (measured under load, so if anything too slow) loses its vote as
        soon as the steps run faster than it; while they run slower, it still shows what the
        machine can do, and one slow step does not set the rate alone.
        """
        seed = self._seed
        values = list(samples)
        if seeded is not None and seed is not None:
            if not values or (len(values) < SEED_STEPS and (not seed.provisional or seeded > _median(values))):
                values.append(seeded)
        return _median(values) if values else None

    def current(self) -> Throughput | None:
        """The rates to advertise now, or None before anything was measured."""
        with self._lock:
            seed = self._seed
            if seed is not None and not self._steps:
                return seed
            prefill = self._rate(self._prefill, seed.prefill_tps if seed else None)
            decode = self._rate(self._decode, seed.decode_tps if seed else None)
            if prefill is None or decode is None:
                return None
            return Throughput(
                prefill_tps=prefill,
                decode_tps=decode,
                prefill_tokens=seed.prefill_tokens if seed else 0,
                decode_tokens=seed.decode_tokens if seed else 0,
                measured_at=self._last_step_at,
                provisional=bool(seed and seed.provisional) and not (self._prefill and self._decode),
                steps=(seed.steps if seed else 0) + self._steps,
                contention=seed.contention if seed else 0.0,
            )

"""What one run of one policy on one workload measured, and its summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean

__all__ = ["Recorder", "Summary", "percentile", "summarise"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list; 0.0 for an empty one."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


@dataclass(slots=True)
class Recorder:
    """Mutable tallies filled in while a simulation runs."""

    latencies: list[float] = field(default_factory=list)
    task_latency: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    useful_tokens: int = 0
    privacy_violations: int = 0
    battery_wh: float = 0.0
    migrations: int = 0
    handoff_frames: int = 0
    messages: list[int] = field(default_factory=list)
    faults: int = 0
    degraded: int = 0
    steps: int = 0
    liar_wins: list[tuple[float, bool]] = field(default_factory=list)
    """(time, whether a lying peer won) for every auction with a remote liar invited or winning."""


@dataclass(frozen=True, slots=True)
class Summary:
    latency_p50_s: float
    latency_p95_s: float
    latency_mean_s: float
    cost: float
    cost_efficiency: float
    """Useful (generated) tokens per USD."""
    privacy_violations: int
    battery_wh: float
    migrations: int
    handoff_messages: int
    """Handoff protocol messages (offer, accept, body, stored, commit, resumed; abort)."""
    messages_per_decision: float
    decisions: int
    faults: int
    degraded_steps: int
    steps: int
    tasks: int

    def as_json(self) -> dict[str, float | int]:
        return {
            "latency_p50_s": round(self.latency_p50_s, 3),
            "latency_p95_s": round(self.latency_p95_s, 3),
            "latency_mean_s": round(self.latency_mean_s, 3),
            "cost": round(self.cost, 6),
            "cost_efficiency": round(self.cost_efficiency, 1) if math.isfinite(self.cost_efficiency) else None,
            "privacy_violations": self.privacy_violations,
            "battery_wh": round(self.battery_wh, 3),
            "migrations": self.migrations,
            "handoff_messages": self.handoff_messages,
            "messages_per_decision": round(self.messages_per_decision, 2),
            "decisions": self.decisions,
            "faults": self.faults,
            "degraded_steps": self.degraded_steps,
            "steps": self.steps,
            "tasks": self.tasks,
        }


def summarise(r: Recorder) -> Summary:
    return Summary(
        latency_p50_s=percentile(r.latencies, 50),
        latency_p95_s=percentile(r.latencies, 95),
        latency_mean_s=fmean(r.latencies) if r.latencies else 0.0,
        cost=r.cost,
        cost_efficiency=r.useful_tokens / r.cost if r.cost > 0 else float("inf"),
        privacy_violations=r.privacy_violations,
        battery_wh=r.battery_wh,
        migrations=r.migrations,
        handoff_messages=r.handoff_frames,
        messages_per_decision=fmean(r.messages) if r.messages else 0.0,
        decisions=len(r.messages),
        faults=r.faults,
        degraded_steps=r.degraded,
        steps=r.steps,
        tasks=len(r.latencies),
    )

"""The seed's three workloads as agent programs: chains of LLM steps, tool calls and forks.

Each step names the model size it needs, how many tokens it adds to the agent's
context (prompt, tool output, a paper), how many it generates, and its privacy
class — the *privacy profile* of the workload:

software-dev
    an agent over a private code base: many tool calls (grep, read, build) and
    short LLM steps. Reading the code base is ``private``; looking up public
    documentation (about one step in five) is ``any``.
podcast
    the owner's private notes become an outline (``private``), then long
    public generations per segment (``any``), then one heavy final pass over the
    whole script that needs the largest model (``size>=xl``, ``any``).
survey
    a plan, then a fork per paper (context parallelism: each child reads one
    public paper, ``any``, and summarises it with a small model), then a
    long-context reduce that mixes the summaries with the owner's unpublished
    draft (``lan``: it may use devices on the owner's network, not the cloud).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

__all__ = ["Step", "Fork", "Phase", "Task", "WORKLOADS", "HELD_DEVICE", "make_tasks"]


@dataclass(frozen=True, slots=True)
class Step:
    requirement: str
    new_tokens: int
    """Tokens appended to the context before this step (prompt, tool output, a paper)."""
    output_tokens: int
    privacy: str
    tool_s: float = 0.0
    """Time spent in a tool call before the step (the same under every policy)."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Children that start from the parent's context (sharing its KV prefix) and run in parallel."""

    children: tuple[tuple[Step, ...], ...]


Phase = Step | Fork


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    workload: str
    owner: int
    """Index of the owner (a site) whose held device starts the agent."""
    start_s: float
    base_tokens: int
    phases: tuple[Phase, ...]

    def useful_tokens(self) -> int:
        total = 0
        for ph in self.phases:
            if isinstance(ph, Step):
                total += ph.output_tokens
            else:
                total += sum(s.output_tokens for child in ph.children for s in child)
        return total


WORKLOADS: Final = ("software-dev", "podcast", "survey")
HELD_DEVICE: Final[dict[str, str]] = {"software-dev": "laptop", "podcast": "phone", "survey": "laptop"}
"""The device the owner holds when starting each workload (local-only runs everything there)."""


def _software_dev(rng: random.Random) -> tuple[int, tuple[Phase, ...]]:
    steps: list[Phase] = []
    for _ in range(rng.randint(12, 24)):
        public = rng.random() < 0.2
        steps.append(
            Step(
                requirement="size>=medium",
                new_tokens=rng.randint(150, 500) if public else rng.randint(300, 1500),
                output_tokens=rng.randint(60, 250),
                privacy="any" if public else "private",
                tool_s=rng.uniform(0.2, 2.0),
            )
        )
    return rng.randint(1500, 3000), tuple(steps)


def _podcast(rng: random.Random) -> tuple[int, tuple[Phase, ...]]:
    phases: list[Phase] = [Step("size>=medium", rng.randint(1500, 3000), rng.randint(300, 500), "private")]
    for _ in range(rng.randint(5, 8)):
        phases.append(Step("size>=large", rng.randint(100, 300), rng.randint(800, 1500), "any"))
    phases.append(Step("size>=xl", rng.randint(200, 400), rng.randint(2000, 3000), "any"))
    return rng.randint(500, 1000), tuple(phases)


def _survey(rng: random.Random) -> tuple[int, tuple[Phase, ...]]:
    papers = rng.randint(8, 16)
    children = tuple(
        (Step("size>=small", rng.randint(5000, 9000), rng.randint(200, 400), "any", tool_s=rng.uniform(0.5, 2.0)),)
        for _ in range(papers)
    )
    return rng.randint(800, 1500), (
        Step("size>=medium", rng.randint(300, 600), rng.randint(300, 600), "any"),
        Fork(children),
        Step("size>=large", rng.randint(3000, 6000), rng.randint(1500, 2500), "lan"),
    )


_MAKERS: Final = {"software-dev": _software_dev, "podcast": _podcast, "survey": _survey}


def make_tasks(workload: str, *, count: int, owners: int, mean_gap_s: float, seed: int) -> tuple[Task, ...]:
    """``count`` tasks arriving as a Poisson process, spread over the owners round-robin."""
    rng = random.Random(f"{workload}/{seed}")
    t = 0.0
    tasks = []
    for i in range(count):
        t += rng.expovariate(1.0 / mean_gap_s)
        base, phases = _MAKERS[workload](rng)
        tasks.append(Task(f"{workload}-{i}", workload, i % owners, t, base, phases))
    return tuple(tasks)

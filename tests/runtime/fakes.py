"""Deterministic test doubles for the runtime's host services. Not for production use.

:class:`ScriptedLlm` answers from rules (substring → reply) or, failing those, with a
reply derived from the sha256 of the prompt; :class:`FixedWorld` is a clock and a
randomness source that are pure functions of the agent's journal position. Both
count their live calls, so tests can check that replays asked the journal, not them.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Sequence

from meshagent.runtime.services import LlmOptions

__all__ = ["ScriptedLlm", "FixedWorld", "scripted_services", "DEFAULT_RULES"]

DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("(attempt 0)", "forty-two"),
    ("(attempt 1)", "41"),
    ("(attempt 2)", "42"),
    ("Rate this idea", ""),
)


class ScriptedLlm:
    """HostServices + World test double: scripted LLM, echo tool, hash embeddings, fixed clock."""

    def __init__(self, rules: Sequence[tuple[str, str]] = DEFAULT_RULES, *, long_answers: bool = False) -> None:
        self.rules = tuple(rules)
        self.long_answers = long_answers
        self.calls: list[tuple[str, str, LlmOptions]] = []
        self.world_calls = 0
        self.forks: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    # HostServices
    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        with self._lock:
            self.calls.append((agent_id, prompt, options))
        digest = hashlib.sha256(f"{prompt}|{options.seed}|{options.temperature}".encode()).hexdigest()
        for needle, reply in self.rules:
            if needle in prompt:
                if needle == "Rate this idea":
                    return f"{int(digest[:2], 16) % 10} out of 9"
                return reply
        text = f"reply-{digest[:12]}"
        return text * 300 if self.long_answers else text

    def embed(self, agent_id: str, text: str) -> list[float]:
        raw = hashlib.sha256(text.encode()).digest()
        return [b / 255.0 for b in raw[:8]]

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        return name.encode() + b":" + args

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        with self._lock:
            self.forks.append((parent_id, tuple(child_ids)))

    # World
    def now_ns(self, clock_id: int, position: int) -> int:
        with self._lock:
            self.world_calls += 1
        base = 1_700_000_000_000_000_000 if clock_id == 0 else 5_000_000_000
        return base + position * 1_000_003

    def random_bytes(self, n: int, position: int) -> bytes:
        with self._lock:
            self.world_calls += 1
        out = b""
        counter = 0
        while len(out) < n:
            out += hashlib.sha256(struct.pack("<QQ", position, counter)).digest()
            counter += 1
        return out[:n]

    def sleep(self, seconds: float) -> None:
        return None


FixedWorld = ScriptedLlm


def scripted_services() -> ScriptedLlm:
    """Factory for ``meshagent run --services tests.runtime.fakes:scripted_services``."""
    return ScriptedLlm()


class FakeEngine:
    """An LlmEngine test double (for the EngineServices adapter): echoes prompts per session."""

    def __init__(self, name: str = "tiny") -> None:
        from meshagent.inference.engine import ModelInfo

        self._info = ModelInfo(name=name, sha256="0" * 64, size_bytes=1, tags=("small",))
        self.sessions: dict[str, list[str]] = {}

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self._info

    def generate(self, session, prompt, options):  # type: ignore[no-untyped-def]
        from meshagent.inference.engine import Generation

        history = self.sessions.setdefault(session, [])
        history.append(prompt)
        return Generation(text=f"{self._info.name}#{len(history)}:{prompt[:10]}", prompt_tokens=len(prompt),
                          completion_tokens=3, prefill_s=0.0, decode_s=0.0)

    def fork(self, parent, child):  # type: ignore[no-untyped-def]
        self.sessions[child] = list(self.sessions.get(parent, []))

    def drop(self, session):  # type: ignore[no-untyped-def]
        self.sessions.pop(session, None)

    def tokens(self, session):  # type: ignore[no-untyped-def]
        return []

    def export_kv(self, session):  # type: ignore[no-untyped-def]
        return b""

    def import_kv(self, session, tokens, blob):  # type: ignore[no-untyped-def]
        return False

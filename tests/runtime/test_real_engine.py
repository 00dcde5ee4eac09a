"""Agents on the real llama.cpp engine (the project's tiny seeded model) through EngineServices."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.runtime.local import run_local
from meshagent.runtime.services import EngineServices
from tests.runtime.helpers import family_view

pytest.importorskip("llama_cpp")


@pytest.mark.parametrize("name", ["retry", "forking"])
def test_plain_equals_verify_replay_on_llama(tiny_model: Path, wasm: Callable[[str], bytes], name: str) -> None:
    from meshagent.inference.llama_engine import LlamaEngine

    engine = LlamaEngine(tiny_model, sha256=hashlib.sha256(tiny_model.read_bytes()).hexdigest())
    services = EngineServices(engine)
    plain = run_local(wasm(name), args=[name], services=services)
    verified = run_local(wasm(name), args=[name], services=services, verify_replay=True)
    assert all(o.status == "exited" for o in plain.outcomes), [o.error_message for o in plain.outcomes]
    assert family_view(verified.outcomes) == family_view(plain.outcomes)

"""Capacity plan and the tiny model generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshagent.errors import ModelError
from meshagent.inference.capacity import recommended_capacity
from meshagent.inference.gguf_info import read_gguf_info
from meshagent.inference.hashing import sha256_file
from meshagent.inference.tiny import TinyModelSpec, ensure_tiny_model, make_tiny_model


@pytest.mark.parametrize(("cores", "embed"), [(1, 1), (2, 1), (4, 2), (16, 8)])
def test_one_llm_call_per_context_and_embed_by_cores(cores: int, embed: int) -> None:
    plan = recommended_capacity(cpu_count=cores, gpu=False, memory_bytes=4 << 30)
    assert plan.llm_per_model == 1
    assert plan.embed == embed
    assert plan.llm_models_loaded == 1


def test_capacity_probes_the_real_machine() -> None:
    plan = recommended_capacity()
    assert plan.cpu_count >= 1 and plan.llm_per_model == 1


def test_tiny_model_is_reproducible_and_seeded(tmp_path: Path) -> None:
    spec = TinyModelSpec(layers=1, dim=32)
    a = make_tiny_model(tmp_path / "a.gguf", spec)
    b = make_tiny_model(tmp_path / "b.gguf", spec)
    c = make_tiny_model(tmp_path / "c.gguf", TinyModelSpec(layers=1, dim=32, seed=5))
    assert sha256_file(a) == sha256_file(b) != sha256_file(c)
    info = read_gguf_info(a)
    assert info.architecture == "llama" and info.n_ctx_train >= 4096
    assert ensure_tiny_model(tmp_path, spec) == ensure_tiny_model(tmp_path, spec)


def test_default_tiny_model_shape(tiny_model: Path) -> None:
    info = read_gguf_info(tiny_model)
    assert info.n_ctx_train >= 4096 and info.parameters > 1_000_000


@pytest.mark.parametrize("spec", [TinyModelSpec(layers=0), TinyModelSpec(dim=30), TinyModelSpec(n_ctx=8)])
def test_invalid_tiny_specs_are_refused(spec: TinyModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        make_tiny_model(tmp_path / "x.gguf", spec)
    assert not list(tmp_path.iterdir())

"""ModelRegistry: config → engines and adverts, with cached digests and rates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshagent.config import ModelConfig
from meshagent.errors import ConfigError, ModelError
from meshagent.inference import hashing
from meshagent.inference.onnx_embedder import BUILTIN_EMBED_NAME
from meshagent.inference.registry import ModelRegistry


def test_models_from_config_plus_builtin_embedder(tiny_model: Path, tiny_sha: str, tmp_path: Path) -> None:
    cfg = ModelConfig(name="tiny", path=str(tiny_model), tags=("size=small",), price_per_1k_tokens=0.25, n_ctx=1024)
    reg = ModelRegistry([cfg], cache_dir=tmp_path)
    assert reg.names() == ["tiny", BUILTIN_EMBED_NAME]
    infos = {i.name: i for i in reg.infos()}
    tiny = infos["tiny"]
    assert (tiny.kind, tiny.sha256, tiny.n_ctx, tiny.tags, tiny.price_per_1k_tokens) == (
        "llm",
        tiny_sha,
        1024,
        ("size=small",),
        0.25,
    )
    assert infos[BUILTIN_EMBED_NAME].kind == "embed"
    assert reg.llm("tiny") is reg.llm("tiny")
    assert reg.by_sha256(tiny_sha) == "tiny"
    assert reg.by_sha256("00" * 32) is None
    reg.close()


def test_sha256_is_computed_once_and_recomputed_when_the_file_changes(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(tiny_model.read_bytes())
    cfg = [ModelConfig(name="m", path=str(model))]
    first = ModelRegistry(cfg, cache_dir=tmp_path / "cache").sha256("m")
    calls: list[Path] = []
    real = hashing.sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    assert ModelRegistry(cfg, cache_dir=tmp_path / "cache").sha256("m") == first
    assert calls == []
    with model.open("ab") as f:
        f.write(b"\0")
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert ModelRegistry(cfg, cache_dir=tmp_path / "cache").sha256("m") != first
    assert len(calls) == 1


def test_throughput_is_measured_on_first_load_and_reused(tiny_model: Path, tmp_path: Path) -> None:
    cfg = [ModelConfig(name="tiny", path=str(tiny_model))]
    reg = ModelRegistry(cfg, cache_dir=tmp_path)
    assert reg.info("tiny").prefill_tps is None
    reg.llm("tiny").load()
    measured = reg.info("tiny")
    assert measured.prefill_tps and measured.decode_tps
    reg.close()
    fresh = ModelRegistry(cfg, cache_dir=tmp_path)
    assert fresh.info("tiny").decode_tps == measured.decode_tps
    assert not fresh.llm("tiny").loaded


def test_bad_configs_and_names(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind"):
        ModelRegistry([ModelConfig(name="x", path=str(tiny_model), kind="vision")], cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="twice"):
        ModelRegistry([ModelConfig(name="x", path=str(tiny_model))] * 2, cache_dir=tmp_path)
    reg = ModelRegistry([ModelConfig(name="x", path=str(tiny_model))], cache_dir=tmp_path)
    with pytest.raises(ModelError, match="no model named"):
        reg.entry("nope")
    with pytest.raises(ModelError, match="not an LLM"):
        reg.llm(BUILTIN_EMBED_NAME)
    with pytest.raises(ModelError, match="not an embedding"):
        reg.embedder("x")


def test_a_broken_model_is_left_out_of_adverts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("<html>")
    reg = ModelRegistry([ModelConfig(name="bad", path=str(bad))], cache_dir=tmp_path)
    assert [i.name for i in reg.infos()] == [BUILTIN_EMBED_NAME]
    with pytest.raises(ModelError, match="not a GGUF"):
        reg.llm("bad")

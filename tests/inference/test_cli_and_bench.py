"""``meshagent models`` and the kv/fork benchmarks, run through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshagent.cli import main
from meshagent.inference.gguf_info import read_gguf_info


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_make_tiny_writes_a_loadable_gguf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = run_json(capsys, "models", "make-tiny", "--layers", "2", "--dim", "64", "--json", str(tmp_path / "t.gguf"))
    info = read_gguf_info(tmp_path / "t.gguf")
    assert out["layers"] == 2 and out["dim"] == 64 and len(str(out["sha256"])) == 64
    assert info.architecture == "llama"


def test_make_tiny_refuses_a_bad_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["models", "make-tiny", "--dim", "30", str(tmp_path / "t.gguf")]) == 1
    assert "dim" in capsys.readouterr().err


def test_models_lists_config_and_builtin(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[[models]]\nname = "tiny"\npath = "{tiny_model}"\ntags = ["size=small"]\n')
    out = run_json(capsys, "models", "--json", "--data-dir", str(tmp_path), "--config", str(config))
    models = {m["name"]: m for m in out["models"]}  # type: ignore[attr-defined, index]
    assert models["tiny"]["kind"] == "llm" and models["tiny"]["tags"] == ["size=small"]
    assert models["all-minilm-l6-v2-int8"]["providers"] == ["CPUExecutionProvider"]


def test_bench_kv_reports_every_figure(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    out = run_json(
        capsys, "bench", "kv", "--json", "--model", str(tiny_model), "--ctx", "64", "--ctx", "256", "--repeat", "1"
    )
    results = out["results"]
    assert [r["ctx_tokens"] for r in results] == [64, 256]  # type: ignore[union-attr]
    for r in results:  # type: ignore[union-attr]
        assert set(r) >= {"ctx_tokens", "reprefill_s", "kv_export_s", "kv_import_s", "kv_bytes", "ratio", "identical"}
        assert r["identical"] is True and r["kv_bytes"] > 0


def test_bench_fork_reports_every_figure(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    out = run_json(
        capsys, "bench", "fork", "--json", "--model", str(tiny_model), "--forks", "3", "--prefix-tokens", "256"
    )
    assert out["forks"] == 3 and out["prefix_tokens"] == 256
    assert out["children_independent"] is True
    # Shared cells: a fork adds far less state than the prefix holds (not a timing).
    assert out["kv_bytes_growth_per_fork"] < 0.1 * out["kv_bytes_prefix"]  # type: ignore[operator]

"""OnnxEmbedder: the real all-MiniLM-L6-v2 int8 model on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meshagent.errors import InferenceError, ModelError
from meshagent.inference.engine import Embedder
from meshagent.inference.onnx_embedder import EmbeddingTooLarge, OnnxEmbedder


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def test_embedder_implements_the_protocol(embedder: OnnxEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384


def test_related_sentences_are_closer_than_unrelated(embedder: OnnxEmbedder) -> None:
    cat, kitten, revenue, weather, rain = embedder.embed(
        [
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly revenue grew by ten percent.",
            "Tomorrow will be rainy and cold.",
            "Expect showers and low temperatures tomorrow.",
        ]
    )
    assert cos(cat, kitten) > cos(cat, revenue) + 0.3
    assert cos(weather, rain) > cos(weather, revenue) + 0.3
    assert cos(weather, rain) > cos(weather, kitten)


def test_vectors_are_unit_length_and_deterministic(embedder: OnnxEmbedder) -> None:
    a = embedder.embed_array(["hello world", "hello world", "x"])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a[0], a[1])
    # Batching (and so padding) does not change a text's vector.
    alone = embedder.embed_array(["hello world"])[0]
    assert np.allclose(alone, a[0], atol=1e-5)


def test_long_text_is_truncated_not_refused(embedder: OnnxEmbedder) -> None:
    long = "word " * 5000
    (v,) = embedder.embed([long])
    assert len(v) == 384


def test_info_reports_providers_and_pinned_digest(embedder: OnnxEmbedder) -> None:
    info = embedder.info
    assert info.kind == "embed"
    assert "CPUExecutionProvider" in info.providers
    assert len(info.sha256) == 64 and info.size_bytes > 1_000_000


def test_requests_over_the_limits_are_refused(embedder: OnnxEmbedder) -> None:
    with pytest.raises(EmbeddingTooLarge, match="texts"):
        embedder.embed(["a"] * (embedder.max_texts + 1))
    with pytest.raises(EmbeddingTooLarge, match="characters"):
        embedder.embed(["a" * (embedder.max_chars + 1)])
    with pytest.raises(InferenceError, match="list of texts"):
        embedder.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InferenceError, match="str"):
        embedder.embed([b"bytes"])  # type: ignore[list-item]
    assert embedder.embed([]) == []


def test_not_an_onnx_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError):
        OnnxEmbedder(bad).embed(["x"])

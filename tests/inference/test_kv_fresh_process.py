"""A session's KV moved into a *fresh process* continues exactly as if it had stayed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_EXPORTER = """
import json, sys
from pathlib import Path
from meshagent.inference.engine import GenerateOptions, SessionId
from meshagent.inference.llama_engine import LlamaEngine
model, sha, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
e = LlamaEngine(model, sha256=sha, n_ctx=2048)
s = SessionId("agent-1")
e.generate(s, "an agent thinks about where to run next", GenerateOptions(max_tokens=40))
(out / "kv.blob").write_bytes(e.export_kv(s))
(out / "tokens.json").write_text(json.dumps(e.tokens(s)))
stayed = e.generate(s, " then it moves", GenerateOptions(max_tokens=40))
print(json.dumps({"text": stayed.text, "tokens": e.tokens(s)}))
"""

_IMPORTER = """
import json, sys
from pathlib import Path
from meshagent.inference.engine import GenerateOptions, SessionId
from meshagent.inference.llama_engine import LlamaEngine
model, sha, blob_file, tokens_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
e = LlamaEngine(model, sha256=sha, n_ctx=2048)
s = SessionId("agent-1")
used = e.import_kv(s, json.loads(tokens_file.read_text()), blob_file.read_bytes())
moved = e.generate(s, " then it moves", GenerateOptions(max_tokens=40))
print(json.dumps({"used": used, "text": moved.text, "tokens": e.tokens(s)}))
"""


def _run(script: str, *args: object) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def exported(
    tiny_model: Path, tiny_sha: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("kv")
    return out, _run(_EXPORTER, tiny_model, tiny_sha, out)


def test_greedy_continuation_after_move_to_a_fresh_process_is_identical(
    tiny_model: Path, tiny_sha: str, exported: tuple[Path, dict[str, object]]
) -> None:
    out, stayed = exported
    moved = _run(_IMPORTER, tiny_model, tiny_sha, out / "kv.blob", out / "tokens.json")
    assert moved["used"] is True
    assert moved["text"] == stayed["text"]
    assert moved["tokens"] == stayed["tokens"]


def test_tampered_blob_in_a_fresh_process_is_rebuilt_from_tokens(
    tiny_model: Path, tiny_sha: str, exported: tuple[Path, dict[str, object]]
) -> None:
    out, stayed = exported
    blob = bytearray((out / "kv.blob").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    tampered = out / "tampered.blob"
    tampered.write_bytes(bytes(blob))
    moved = _run(_IMPORTER, tiny_model, tiny_sha, tampered, out / "tokens.json")
    assert moved["used"] is False
    assert moved["text"] == stayed["text"]
    assert moved["tokens"] == stayed["tokens"]

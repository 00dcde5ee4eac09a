"""``meshagent run --local`` and ``meshagent resume``: a step that cannot run never ends silently.

The README's agents, run as it runs them: a step's ``model=`` is matched
against the model given (a size from its parameter count, or ``--model-tag``),
a failed agent prints why and exits 1, a resume without a model names
``resume``, and ``--snapshot-at`` past the agent's last host call says so.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from meshagent.inference.gguf_info import SIZE_CLASSES, read_gguf_info, size_class, with_size_tag
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import SIZE_ORDER
from meshagent.runtime.local import model_fits
from tests.cli_support import NAMED_C, README, agent, cli, readme_c_example

pytestmark = pytest.mark.timeout(900)

AGENT_LINE = re.compile(r"^meshagent: agent [0-9a-f]{12} failed: (.*)$")


@pytest.fixture(scope="module")
def hamlet() -> Path:
    return agent("hamlet", readme_c_example())


def _too_small(model: Path | str) -> str:
    return (f"InferenceError: this step needs a model of size>=large; {model} is size=tiny, 2.8M parameters: give a "
            "model that fits with --model, or --model-tag size=large to use this one anyway")


def _why(line: str) -> str:
    match = AGENT_LINE.match(line)
    assert match, line
    return match.group(1)


def test_size_classes_follow_the_parameter_count() -> None:
    assert [name for name, _ in SIZE_CLASSES] == list(SIZE_ORDER)  # the auction's names, in its order
    assert [size_class(n) for n in (0, 2_756_864, 494_000_000, 7_600_000_000, 13_000_000_000, 70_000_000_000)] == [
        None, "tiny", "small", "medium", "large", "xl"]
    assert size_class(249_999_999) == "tiny" and size_class(250_000_000) == "small"
    assert with_size_tag(("fast",), 494_000_000) == ("fast", "size=small")
    assert with_size_tag(("size=large",), 2_000_000) == ("size=large",)  # a configured size wins


def test_a_node_and_local_runs_see_the_same_derived_size(tiny_model: Path) -> None:
    parameters = read_gguf_info(tiny_model).parameters
    assert LlamaEngine(tiny_model).info.tags == (f"size={size_class(parameters)}",)
    assert LlamaEngine(tiny_model, tags=("size=large",)).info.tags == ("size=large",)
    tiny = ModelAd(name="m", sha256="ab" * 32, size_bytes=1, tags=("size=tiny", "chat"))
    assert model_fits(tiny, "") and model_fits(tiny, "size>=tiny") and model_fits(tiny, "chat") and model_fits(tiny, "m")
    assert not model_fits(tiny, "size>=small") and not model_fits(tiny, "other")


def test_the_readme_hamlet_on_a_tiny_model_fails_and_says_why(tmp_path: Path, hamlet: Path, tiny_model: Path) -> None:
    done = cli("run", str(hamlet), "--local", "--model", str(tiny_model), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.lines
    assert _why(line) == _too_small(tiny_model)
    as_json = cli("run", str(hamlet), "--local", "--model", str(tiny_model), "--json", cwd=tmp_path)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["status"] == "failed"
    (line,) = as_json.lines
    assert _why(line) == _too_small(tiny_model)


def test_a_model_tag_lets_the_step_run(tmp_path: Path, hamlet: Path, tiny_model: Path) -> None:
    done = cli("run", str(hamlet), "--local", "--model", str(tiny_model), "--model-tag", "size=large", cwd=tmp_path)
    assert done.returncode == 0 and done.lines == []
    assert done.stdout.strip()


def test_a_named_requirement_is_matched_too(tmp_path: Path, tiny_model: Path) -> None:
    named = agent("named", NAMED_C)
    done = cli("run", str(named), "--local", "--model", str(tiny_model), cwd=tmp_path)
    assert done.returncode == 1 and len(done.lines) == 1
    assert _why(done.lines[0]) == (f"InferenceError: this step needs model 'tiny-chat'; {tiny_model} is size=tiny, 2.8M "
                                   "parameters: give a model that fits with --model, or --model-tag tiny-chat to use "
                                   "this one anyway")
    tagged = cli("run", str(named), "--local", "--model", str(tiny_model), "--model-tag", "tiny-chat", cwd=tmp_path)
    assert tagged.returncode == 0 and tagged.stdout.strip()


def test_model_tag_needs_a_model_and_local(tmp_path: Path, hamlet: Path) -> None:
    done = cli("run", str(hamlet), "--local", "--model-tag", "size=large", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, ["meshagent: --model-tag describes --model: give the model too"])
    remote = cli("run", str(hamlet), "--model-tag", "size=large", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert (remote.returncode, remote.lines) == (1, [
        "meshagent: --snapshot-at, --verify-replay, --services, --model, --model-tag and --out-dir need --local "
        "(a node uses the models of its config)"])


def test_snapshot_resume_and_their_hints(tmp_path: Path, hamlet: Path, tiny_model: Path) -> None:
    model = ["--model", str(tiny_model), "--model-tag", "size=large"]
    plain = cli("run", str(hamlet), "--local", *model, cwd=tmp_path)
    assert plain.returncode == 0

    # Past the last host call: said, and a failure.
    past = cli("run", str(hamlet), "--local", *model, "--snapshot-at", "20", "notes.snap", cwd=tmp_path)
    assert past.returncode == 1 and not (tmp_path / "notes.snap").exists()
    assert past.stdout == plain.stdout  # the agent ran to its end
    assert past.lines == ["meshagent: no snapshot written: the agent ended after 4 host calls, so --snapshot-at "
                          "takes N from 0 to 3"]
    negative = cli("run", str(hamlet), "--local", *model, "--snapshot-at", "-1", "notes.snap", cwd=tmp_path)
    assert (negative.returncode, negative.lines) == (1, ["meshagent: --snapshot-at N FILE: N counts host calls from 0"])

    # Before the LLM step: written; resumed without a model the hint names resume; with one it ends as a plain run.
    cut = cli("run", str(hamlet), "--local", *model, "--snapshot-at", "1", "notes.snap", cwd=tmp_path)
    assert (cut.returncode, cut.lines, cut.stdout) == (0, ["meshagent: wrote a snapshot of 1 agent(s) to notes.snap"], "")
    bare = cli("resume", "notes.snap", cwd=tmp_path)
    assert bare.returncode == 1 and len(bare.lines) == 1
    assert _why(bare.lines[0]) == ("InferenceError: no LLM engine is loaded: give it a model with "
                                   "`meshagent resume notes.snap --model MODEL.gguf`")
    resumed = cli("resume", "notes.snap", *model, cwd=tmp_path)
    assert (resumed.returncode, resumed.stdout) == (0, plain.stdout)


def _readme_notes_agent() -> str:
    text = README.read_text()
    section = text[text.index("### A Python agent"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match
    return textwrap.dedent(match.group(1))


def test_the_readme_python_agent_says_why_too(tmp_path: Path, tiny_model: Path) -> None:
    """The README's notes_agent.py, built and run as its steps 2 and 3 say."""
    (tmp_path / "notes_agent.py").write_text(_readme_notes_agent())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("Buy milk. Call Ada about the mesh.\n")
    built = cli("build", "notes_agent.py", "-o", "notes_agent.wasm", cwd=tmp_path, timeout=600)
    assert built.returncode == 0, built.stderr
    bare = cli("run", "notes_agent.wasm", "--local", "--dir", "./notes", "--model", str(tiny_model), cwd=tmp_path)
    assert bare.returncode == 1
    (line,) = bare.lines
    assert _why(line) == _too_small(tiny_model)
    tagged = cli("run", "notes_agent.wasm", "--local", "--dir", "./notes", "--model", str(tiny_model),
                 "--model-tag", "size=large", cwd=tmp_path)
    assert tagged.returncode == 0 and tagged.lines == [] and tagged.stdout.strip()

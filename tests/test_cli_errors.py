"""Every documented error path of the command line: one clear line on stderr, a non-zero exit, no traceback.

Each case runs the real ``meshagent`` command in a fresh process and asserts
the exact line. ``-v`` may add the traceback, and the line still ends it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshagent.cli import _report
from meshagent.errors import LinkError, ModuleError
from tests.cli_support import agent, cli, readme_c_example
from tests.conftest import ROOT

MISSING_IMPORT = ROOT / "tests" / "runtime" / "programs" / "missing_import.c"
LINK_LINE = ("meshagent: the module imports mesh.teleport, which meshagent does not provide; agents may only import "
             "WASI preview 1 and the functions declared in meshagent.h")


@pytest.fixture(scope="module")
def hamlet() -> Path:
    return agent("hamlet", readme_c_example())


def test_an_unknown_log_level_is_one_line() -> None:
    done = cli("status", "--data-dir", "/nonexistent", env={"MESHAGENT_LOG": "foo"})
    assert done.returncode == 1
    assert done.lines == ["meshagent: MESHAGENT_LOG=foo: unknown level; use one of debug, info, warning, error"]


def test_a_known_log_level_in_any_case_is_accepted(tmp_path: Path) -> None:
    done = cli("status", "--data-dir", str(tmp_path), env={"MESHAGENT_LOG": "DEBUG"})
    assert done.returncode == 1
    assert done.lines[-1] == f"meshagent: no node is running for {tmp_path} (start one with: meshagent join --data-dir {tmp_path})"


def test_a_module_with_an_unknown_import_is_one_line(tmp_path: Path) -> None:
    module = agent("missing_import", MISSING_IMPORT.read_text())
    done = cli("run", str(module), "--local")
    assert done.returncode == 1
    assert done.lines == [LINK_LINE]


def test_verbose_adds_the_traceback_and_still_ends_with_the_line() -> None:
    module = agent("missing_import", MISSING_IMPORT.read_text())
    done = cli("-v", "run", str(module), "--local")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ExceptionGroup" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == LINK_LINE


@pytest.mark.parametrize("local", [True, False], ids=["local", "node"])
def test_a_file_that_is_not_webassembly_is_one_line(tmp_path: Path, local: bool) -> None:
    (tmp_path / "notes.wasm").write_text("not a module\n")
    done = cli("run", "notes.wasm", *(["--local"] if local else ["--data-dir", str(tmp_path / "none")]), cwd=tmp_path)
    assert done.returncode == 1
    assert done.lines == ["meshagent: notes.wasm is not a WebAssembly module; build one with `meshagent build`"]


def test_a_missing_agent_file_is_one_line(tmp_path: Path) -> None:
    done = cli("run", "nosuch.wasm", "--local", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, ["meshagent: cannot read nosuch.wasm: No such file or directory"])


def test_no_model_names_the_command_to_repeat(tmp_path: Path, hamlet: Path) -> None:
    done = cli("run", str(hamlet), "--local", cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.lines
    assert line.startswith("meshagent: agent ") and line.endswith(
        f" failed: InferenceError: no LLM engine is loaded: give it a model with `meshagent run {hamlet} --local "
        "--model MODEL.gguf`, or run it on a node that holds one (without --local)")


@pytest.mark.parametrize(("content", "line"), [
    (b"garbage", "meshagent: model.gguf is not a GGUF model file (magic b'garb')"),
    (None, "meshagent: cannot read model file model.gguf: No such file or directory"),
], ids=["garbage", "missing"])
def test_a_bad_model_file_is_one_line(tmp_path: Path, hamlet: Path, content: bytes | None, line: str) -> None:
    if content is not None:
        (tmp_path / "model.gguf").write_bytes(content)
    done = cli("run", str(hamlet), "--local", "--model", "model.gguf", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, [line])


@pytest.mark.parametrize("argv", [["status"], ["peers"], ["agents"], ["run", "AGENT"], ["migrate", "abc", "--to", "x"]],
                         ids=["status", "peers", "agents", "run", "migrate"])
def test_an_unreachable_node_is_one_line(tmp_path: Path, hamlet: Path, argv: list[str]) -> None:
    argv = [str(hamlet) if a == "AGENT" else a for a in argv]
    done = cli(*argv, "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.lines == [f"meshagent: no node is running for {tmp_path} (start one with: meshagent join --data-dir {tmp_path})"]


@pytest.mark.parametrize(("config", "line"), [
    ("[node\n", "meshagent: c.toml: Expected ']' at the end of a table declaration (at line 1, column 6)"),
    ("[api]\nport = \"x\"\n", "meshagent: c.toml [api] port must be an integer, not 'x'"),
    ("[net]\nmdns = 1\n", "meshagent: c.toml [net] mdns must be true or false, not 1"),
    ("[node]\nnmae = \"x\"\n", "meshagent: c.toml [node]: unknown key 'nmae' (known: advert_interval_s, advert_ttl_s, "
                               "name, price_per_1k_tokens, profile, report_grace_s, reputation_half_life_s, tags)"),
    ("[[models]]\nname = \"m\"\npath = 3\n", "meshagent: c.toml [[models]] path must be a string, not 3"),
], ids=["syntax", "port", "mdns", "unknown-key", "model-path"])
def test_a_bad_config_is_one_line(tmp_path: Path, config: str, line: str) -> None:
    (tmp_path / "c.toml").write_text(config)
    done = cli("join", "--config", "c.toml", "--data-dir", str(tmp_path / "node"), "--no-mdns", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, [line])


def test_an_address_this_machine_lacks_is_one_line(tmp_path: Path) -> None:
    done = cli("join", "--data-dir", str(tmp_path / "node"), "--no-mdns", "--listen", "/ip4/203.0.113.7/tcp/0")
    assert done.returncode == 1
    assert done.lines == ["meshagent: the node could not start: Cannot assign requested address (listening on "
                          "/ip4/203.0.113.7/tcp/0; check --listen and [net] listen)"]


def test_build_refuses_what_is_not_a_source(tmp_path: Path) -> None:
    (tmp_path / "x.wasm").write_bytes(b"\0asm")
    done = cli("build", "x.wasm", "-o", "y.wasm", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, ["meshagent: meshagent build takes C sources (.c) or one Python file "
                                                 "(.py), not x.wasm"])


def test_a_garbage_snapshot_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.snap").write_bytes(b"\x00\x01garbage")
    done = cli("resume", "notes.snap", cwd=tmp_path)
    assert (done.returncode, done.lines) == (1, ["meshagent: snapshot file is corrupt or truncated: expected a map, got int"])


def test_errors_inside_exception_groups_and_bugs(capsys: pytest.CaptureFixture[str]) -> None:
    """What :func:`_report` makes of what a trio nursery raises, and of a bug."""
    group = BaseExceptionGroup("nursery", [ExceptionGroup("inner", [LinkError("no such import")])])
    assert _report(group, verbose=0) == 1
    assert capsys.readouterr().err == "meshagent: no such import\n"
    assert _report(ExceptionGroup("two", [ModuleError("first"), LinkError("second")]), verbose=0) == 1
    assert capsys.readouterr().err == "meshagent: first\n"
    assert _report(FileNotFoundError(2, "No such file or directory", "x.toml"), verbose=0) == 1
    assert capsys.readouterr().err == "meshagent: x.toml: No such file or directory\n"
    assert _report(ExceptionGroup("mixed", [ModuleError("known"), ValueError("boom")]), verbose=0) == 70
    assert capsys.readouterr().err == "meshagent: internal error: ValueError: boom; run again with -v for the traceback\n"
    assert _report(BaseExceptionGroup("interrupted", [KeyboardInterrupt()]), verbose=0) == 130

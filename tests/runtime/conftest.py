"""Fixtures for the runtime tests: agents built once per session into .cache/agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.config import SandboxLimits
from meshagent.runtime.build import AGENTS_DIR, build_cached
from meshagent.runtime.modules import ModuleCache, engine_for
from tests.conftest import ROOT

PROGRAMS = Path(__file__).resolve().parent / "programs"
BUILD_CACHE = ROOT / ".cache" / "agents"
EXAMPLES = ("code_review", "brainstorm", "retry")
REACTORS = ("reactor", "heap_bench")


def source_of(name: str) -> Path:
    for folder in (AGENTS_DIR, PROGRAMS):
        if (folder / f"{name}.c").is_file():
            return folder / f"{name}.c"
    raise FileNotFoundError(name)


@pytest.fixture(scope="session")
def build() -> Callable[[str], Path]:
    """``build(name)`` → path of the compiled agent (example or test program), cached on disk."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_cached(source_of(name), BUILD_CACHE, reactor=name in REACTORS)
        return built[name]

    return get


@pytest.fixture(scope="session")
def wasm(build: Callable[[str], Path]) -> Callable[[str], bytes]:
    return lambda name: build(name).read_bytes()


@pytest.fixture
def limits() -> SandboxLimits:
    return SandboxLimits(fuel=2_000_000_000, memory_bytes=64 << 20, output_bytes=256 << 10)


@pytest.fixture
def modules(limits: SandboxLimits) -> ModuleCache:
    return ModuleCache(engine_for(limits.stack_bytes))


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A small code base for the code-review and file-reading agents."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "src" / "util.h").write_text("#define MAX(a, b) ((a) > (b) ? (a) : (b))\n")
    (root / "README.md").write_text("# demo\nA tiny project.\n")
    (root / "notes.txt").write_bytes(bytes(range(256)) * 40)
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A runtime test that hangs (a join that never returns, a stuck agent) fails instead."""
    for item in items:
        if "tests/runtime/" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))

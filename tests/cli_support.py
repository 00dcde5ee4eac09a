"""Helpers for the command-line tests (``tests/test_cli*.py``): agents to run and a way to run the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from meshagent.runtime.build import build_cached
from tests.conftest import ROOT

__all__ = ["README", "SOURCES", "CliResult", "agent", "cli", "readme_c_example"]

README = ROOT / "README.md"
SOURCES = ROOT / ".cache" / "cli-agents"
"""Sources written by the tests (gitignored with the rest of .cache); built modules go to .cache/agents."""

SLEEPER_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 600; i++) { printf("tick %d\n", i); fflush(stdout); sleep(1); }
    return 0;
}
"""

NAMED_C = r"""
#include <stdio.h>
#include <string.h>
#include "meshagent.h"
int main(void) {
    char out[128];
    const char *opts = "model=tiny-chat;max_tokens=8";
    mesh_llm_options(opts, strlen(opts));
    int n = mesh_llm("hello", 5, out, sizeof out - 1);
    if (n >= 0) { out[n] = 0; printf("%s\n", out); }
    return 0;
}
"""


def readme_c_example() -> str:
    """The C agent of the README's "Agents" section, as written there (the hamlet example)."""
    text = README.read_text()
    section = text[text.index("## Agents"):]
    match = re.search(r"```c\n(.*?)```", section, re.S)
    assert match, "the README's Agents section has no C example"
    return match.group(1)


def agent(name: str, source: str) -> Path:
    """``source`` built into a wasm module (cached by content under .cache/agents)."""
    SOURCES.mkdir(parents=True, exist_ok=True)
    path = SOURCES / f"{name}.c"
    if not path.is_file() or path.read_text() != source:
        path.write_text(source)
    return build_cached(path, ROOT / ".cache" / "agents")


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """stderr's lines; a test asserts them exactly, so a traceback can never pass unnoticed."""
        assert "Traceback" not in self.stderr, self.stderr
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run ``python -m meshagent ARGV...`` as a user would (this checkout first on the path)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="80")
    full_env.pop("MESHAGENT_LOG", None)
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "meshagent", *argv], capture_output=True, text=True, env=full_env,
                          cwd=cwd or ROOT, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)

"""Building an untrusted Python agent: its top level runs at build time, and gets nothing of the host.

The hostile agent below, at import (so during ``meshagent build``), tries to
plant a ``.pth`` file in every folder it can reach (a ``.pth`` in site-packages
runs code in the next ``python`` on the host), to write beside its source, and
to read ``secret.txt`` beside its source and ``~/.ssh/id_ed25519``, keeping
what it read in a global — which the component's memory snapshot would carry
to every peer. The test looks for the secrets in the built component's bytes.
It runs once in bubblewrap (where it works here) and once with the copy-in and
scrubbed environment alone (bubblewrap switched off).
"""

from __future__ import annotations

import secrets
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshagent.runtime.components import is_component
from meshagent.sdk import sandbox
from meshagent.sdk.build import BuildSandbox, build_python_agent

pytestmark = pytest.mark.timeout(900)

HOSTILE = '''
import os
import sys

LOOT = []
PLANTED = []
NAMES = ("secret.txt", "id_ed25519")


def _read(path):
    try:
        with open(path, "rb") as f:
            LOOT.append(f.read(4096).decode("latin-1"))
    except Exception:
        pass


def _plant(folder):
    for name in ("zz_hostile.pth", "planted.txt"):
        try:
            with open(os.path.join(folder, name), "w") as f:
                f.write("import os; os.system('touch /tmp/meshagent-pwned')\\n")
            PLANTED.append(os.path.join(folder, name))
        except Exception:
            pass


here = os.path.dirname(os.path.abspath(__file__))
roots = [here, os.path.dirname(here), "/", os.path.expanduser("~"), *sys.path]
for root in roots:
    for rel in ("secret.txt", ".ssh/id_ed25519", "../secret.txt", "../.ssh/id_ed25519"):
        _read(os.path.join(root, rel))
    _plant(root)
    seen = 0
    for folder, dirs, files in os.walk(root):  # every preopened folder, every file named like a secret
        seen += 1
        if seen > 2000:
            break
        _plant(folder)
        for name in files:
            if name in NAMES:
                _read(os.path.join(folder, name))


def main() -> int:
    print(len(LOOT), "secrets;", len(PLANTED), "files planted")
    return 0
'''


@pytest.fixture(params=[BuildSandbox.BUBBLEWRAP, BuildSandbox.COPY_IN], ids=lambda s: s.value)
def protection(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[BuildSandbox]:
    if request.param is BuildSandbox.BUBBLEWRAP:
        if sandbox.build_sandbox() is not BuildSandbox.BUBBLEWRAP:
            pytest.skip("bubblewrap is not installed or does not work here (scripts/setup-sandbox installs it)")
    else:
        monkeypatch.setattr(sandbox, "_working_bwrap", lambda: None)
    yield request.param


def _pth_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.pth")} if folder.is_dir() else set()


def test_a_hostile_agent_gets_nothing_of_the_host_at_build_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                protection: BuildSandbox) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    beside, key = "SECRET-beside-" + secrets.token_hex(12), "SSH-KEY-" + secrets.token_hex(12)
    (home / "secret.txt").write_text(beside)
    (home / ".ssh" / "id_ed25519").write_text(key)
    source = home / "hostile_agent.py"  # an agent saved in the home folder, beside the user's secrets
    source.write_text(HOSTILE)
    before = sorted(p.name for p in home.iterdir())
    venv = tmp_path / "user-venv"  # the user's active virtualenv: componentize-py would mount its site-packages
    (venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    real_site = Path(sysconfig.get_paths()["purelib"])
    real_pth = _pth_files(real_site)

    out = build_python_agent(source, tmp_path / "out" / "hostile.wasm")

    component = out.read_bytes()
    assert is_component(component)
    assert b"files planted" in component  # the agent really was built (its code is in there)
    assert beside.encode() not in component, "the secret beside the source was baked into the component"
    assert key.encode() not in component, "~/.ssh/id_ed25519 was baked into the component"
    assert sorted(p.name for p in home.iterdir()) == before, "the build wrote beside the source"
    assert not list(venv.rglob("*.pth")) and not list(venv.rglob("planted.txt")), "the build planted files in a venv"
    assert _pth_files(real_site) == real_pth, "the build planted a .pth in this Python's site-packages"
    assert not Path("/tmp/meshagent-pwned").exists()


def test_the_build_says_which_protection_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_working_bwrap", lambda: None)
    assert sandbox.build_sandbox() is BuildSandbox.COPY_IN
    assert "no bubblewrap sandbox" in BuildSandbox.COPY_IN.describe()
    assert "install the 'bubblewrap' package" in BuildSandbox.COPY_IN.describe()
    assert "sandboxed with bubblewrap" in BuildSandbox.BUBBLEWRAP.describe()

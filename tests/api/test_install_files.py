"""The device install files in scripts/: the systemd unit parses, the installer stages its files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (SCRIPTS / "meshagent.service").read_text()
    assert "ExecStart=/opt/meshagent/venv/bin/meshagent join --data-dir /var/lib/meshagent" in unit
    # systemd-analyze also checks that ExecStart exists: point it at a binary this machine has.
    staged = tmp_path / "meshagent.service"
    staged.write_text(unit.replace("/opt/meshagent/venv/bin/meshagent", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "verify", str(staged)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "meshagent.service" not in proc.stderr, proc.stderr


def test_install_scripts_parse_and_refuse_unknown_options() -> None:
    for name in ("install-systemd", "setup-browser"):
        subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True, timeout=30)
    proc = subprocess.run([str(SCRIPTS / "install-systemd"), "--bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr

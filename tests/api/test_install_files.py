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


HARDENING = {
    "UMask": "0077",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictNamespaces": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "SystemCallArchitectures": "native",
    "StateDirectory": "meshagent",
    "StateDirectoryMode": "0700",
}


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (SCRIPTS / "meshagent.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_systemd_unit_is_hardened() -> None:
    keys = _unit_keys()
    for key, value in HARDENING.items():
        assert keys.get(key) == [value], (key, keys.get(key))
    assert "@system-service" in keys["SystemCallFilter"] and "~@privileged" in keys["SystemCallFilter"]
    assert keys["MemoryMax"][0].endswith("%") and int(keys["TasksMax"][0]) > 0  # sensible defaults, changeable
    assert "ReadWritePaths" not in keys  # writable: only its StateDirectory and CacheDirectory


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_exposure_is_low(tmp_path: Path) -> None:
    staged = tmp_path / "meshagent.service"
    staged.write_text((SCRIPTS / "meshagent.service").read_text().replace("/opt/meshagent/venv/bin/meshagent", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(staged)],
                          capture_output=True, text=True, timeout=60)
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("this systemd-analyze has no offline security check")
    line = next(l for l in proc.stdout.splitlines() if "Overall exposure level" in l)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.5, proc.stdout  # 7.3 MEDIUM before the hardening


def _stub_venv(root: Path) -> None:
    """A stand-in for the venv and pip (a real install needs PyPI and minutes): the installer skips creating one."""
    bin_dir = root / "opt" / "meshagent" / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "pip"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)


def test_staged_install_writes_config_private_and_tightens_an_existing_one(tmp_path: Path) -> None:
    _stub_venv(tmp_path)
    subprocess.run([str(SCRIPTS / "install-systemd"), "--root", str(tmp_path)], check=True, capture_output=True, timeout=60)
    config = tmp_path / "etc" / "meshagent" / "config.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc" / "meshagent").stat().st_mode & 0o077 == 0
    assert (tmp_path / "etc" / "systemd" / "system" / "meshagent.service").read_text() == \
        (SCRIPTS / "meshagent.service").read_text()
    config.write_text("# the owner's edits\n")
    config.chmod(0o644)  # as earlier installers left it
    subprocess.run([str(SCRIPTS / "install-systemd"), "--root", str(tmp_path)], check=True, capture_output=True, timeout=60)
    assert config.read_text() == "# the owner's edits\n" and config.stat().st_mode & 0o777 == 0o600

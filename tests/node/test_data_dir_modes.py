"""The data dir and its databases are the owner's alone: modes checked on every start."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshagent.errors import IdentityError
from meshagent.node.handoff import HandoffStore
from meshagent.node.identity import load_or_create_identity
from meshagent.node.store import NodeStore, connect_private
from tests.conftest import ROOT


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """Umask 022, under which files are created world-readable unless created otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_data_dir_open_to_others_that_holds_keys_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "node"
    load_or_create_identity(d)
    os.chmod(d, 0o755)
    with pytest.raises(IdentityError, match=r"open to group or others \(mode 755\).*run: chmod 700 "):
        load_or_create_identity(d)
    assert _mode(d) == 0o755  # left for the owner to judge


def test_a_data_dir_writable_by_others_is_refused_even_when_empty(tmp_path: Path) -> None:
    d = tmp_path / "node"
    d.mkdir()
    os.chmod(d, 0o775)
    with pytest.raises(IdentityError, match="writable by others"):
        load_or_create_identity(d)
    assert not (d / "identity.key").exists()


def test_a_new_data_dir_made_0755_is_tightened_before_the_keys_are_written(tmp_path: Path, usual_umask: None) -> None:
    d = tmp_path / "node"
    (d / "cache" / "models").mkdir(parents=True)  # e.g. made by the demo's model cache before any node ran
    os.chmod(d, 0o755)
    load_or_create_identity(d)
    assert _mode(d) == 0o700
    assert (d / "identity.key").is_file()


def test_join_refuses_a_loose_data_dir_with_one_line(tmp_path: Path) -> None:
    d = tmp_path / "node"
    load_or_create_identity(d)
    os.chmod(d, 0o750)
    proc = subprocess.run([sys.executable, "-m", "meshagent", "join", "--data-dir", str(d), "--no-mdns",
                           "--listen", "/ip4/127.0.0.1/tcp/0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"run: chmod 700 {d}" in lines[0], proc.stderr


def _db_files(d: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in d.iterdir() if ".sqlite" in p.name}


def test_node_and_handoff_databases_and_their_side_files_are_created_0600(tmp_path: Path, usual_umask: None) -> None:
    d = tmp_path / "node"
    store = NodeStore.open(d)
    handoff = HandoffStore(d / "handoff.sqlite")
    handoff.see("agent-1", 3)
    with store.transaction() as db:
        db.execute("INSERT INTO modules VALUES ('x', x'00', 0)")
    files = _db_files(d)
    assert {"node.sqlite", "node.sqlite-wal", "node.sqlite-shm", "handoff.sqlite", "handoff.sqlite-wal",
            "handoff.sqlite-shm"} <= set(files), files
    assert set(files.values()) == {0o600}, files
    assert _mode(d) == 0o700
    store.close()
    handoff.close()


def test_a_rollback_journal_is_created_0600_too(tmp_path: Path, usual_umask: None) -> None:
    db = connect_private(tmp_path / "plain.sqlite")
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("CREATE TABLE t (x)")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (1)")
    assert _mode(tmp_path / "plain.sqlite-journal") == 0o600  # exists while the transaction is open
    db.execute("COMMIT")
    db.close()


def test_databases_left_world_readable_by_an_older_version_are_tightened(tmp_path: Path, usual_umask: None) -> None:
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    old = sqlite3.connect(d / "node.sqlite")  # as earlier versions did: 0644 under umask 022
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE leftover (x)")
    old.close()
    (d / "node.sqlite-wal").write_bytes(b"")
    os.chmod(d / "node.sqlite-wal", 0o644)
    assert _mode(d / "node.sqlite") == 0o644
    NodeStore.open(d).close()
    assert set(_db_files(d).values()) == {0o600}, _db_files(d)

"""Host files someone else arranged: ``run --dir`` copy-in, ``--out-dir`` writes, ``--snapshot-at`` files.

The symlink races are made deterministic by swapping a directory for a symlink
from inside ``os.scandir`` (the walk's listing step), not by timing luck.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshagent.errors import ConfigError
from meshagent.runtime.hostfiles import copy_tree, read_beneath, write_beneath, write_private
from meshagent.runtime.vfs import VirtualFs
from tests.conftest import ROOT

SECRET = b"the secret outside the agent's directory\n"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root/a/b/file.txt`` (the agent's) and ``outside/file.txt`` (a secret with the same name)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "file.txt").write_bytes(b"mine\n")
    (root / "top.txt").write_bytes(b"top\n")
    outside.mkdir()
    (outside / "file.txt").write_bytes(SECRET)
    (outside / "more.txt").write_bytes(SECRET)
    return root, outside


def _swap_on_listing(monkeypatch: pytest.MonkeyPatch, listed: Path, victim: Path, target: Path) -> list[str]:
    """Make ``os.scandir`` of ``listed`` (by path or descriptor) swap ``victim`` for a symlink to ``target``."""
    real_scandir = os.scandir
    swapped: list[str] = []

    def scandir(arg: Any = ".") -> Any:
        where = os.readlink(f"/proc/self/fd/{arg}") if isinstance(arg, int) else os.path.abspath(arg)
        it = real_scandir(arg)
        if where == str(listed) and not swapped:
            entries = list(it)  # the listing is taken; now the tree changes under the walk
            it.close()
            victim.rename(victim.with_name(victim.name + ".moved"))
            victim.symlink_to(target, target_is_directory=True)
            swapped.append(str(victim))
            return _Listing(entries)
        return it

    monkeypatch.setattr(os, "scandir", scandir)
    return swapped


class _Listing:
    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self._entries = entries

    def __iter__(self) -> Any:
        return iter(self._entries)

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("when", ["listing a", "listing a/b"])
def test_a_directory_swapped_for_a_symlink_during_the_copy_is_never_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    root, outside = _tree(tmp_path)
    listed = root / "a" if when == "listing a" else root / "a" / "b"
    swapped = _swap_on_listing(monkeypatch, listed, root / "a" / "b", outside)
    vfs = VirtualFs.from_directory(root)
    assert swapped, "the walk never listed the directory the test swaps"
    assert (root / "a" / "b").is_symlink()
    assert SECRET not in vfs.files.values(), f"the copy followed the swapped-in symlink: {sorted(vfs.files)}"
    assert vfs.files["top.txt"] == b"top\n"
    if when == "listing a/b":  # the walk already held b open: it read the real directory, now renamed
        assert vfs.files["a/b/file.txt"] == b"mine\n"


def test_symlinks_fifos_and_sockets_in_the_tree_are_skipped_without_blocking(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-file").symlink_to(outside / "file.txt")
    os.mkfifo(root / "a" / "pipe")  # opening a FIFO for reading would block the copy forever
    files = copy_tree(root, max_bytes=1 << 20, max_files=100)
    assert sorted(files) == ["a/b/file.txt", "top.txt"]


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(b"x" * 100)
    with open(root / "huge.bin", "wb") as f:
        f.write(os.urandom(4 << 20))  # real bytes: reading them would show in rchar
    before = _bytes_read()
    with pytest.raises(ConfigError, match="more than 1048576 bytes"):
        VirtualFs.from_directory(root, max_bytes=1 << 20)
    assert _bytes_read() - before < 1 << 20, "the copy read the oversized file before refusing it"


def test_the_file_count_is_refused_before_the_files_are_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_bytes(b"y")
    with pytest.raises(ConfigError, match="or 3 files"):
        copy_tree(root, max_bytes=1 << 20, max_files=3)


def test_the_copy_keeps_the_order_and_content_of_a_plain_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("a/x", "a-b/y", "a/c/z", "b"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    files = copy_tree(root, max_bytes=1 << 20, max_files=10)
    assert list(files) == [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]
    assert all(files[rel] == rel.encode() for rel in files)


def test_read_beneath_refuses_escapes_and_symlinks(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    (root / "a" / "link").symlink_to(outside / "file.txt")
    (root / "jump").symlink_to(outside, target_is_directory=True)
    assert read_beneath(root, "a/b/file.txt", limit=100, what="t") == b"mine\n"
    for rel, why in (("/etc/passwd", "relative path"), ("../outside/file.txt", r"no '\.\.'"),
                     ("a/../../outside/file.txt", r"no '\.\.'"), ("a/link", "symlink"), ("jump/file.txt", "symlink"),
                     ("a/b", "not a regular file")):
        with pytest.raises(ConfigError, match=why):
            read_beneath(root, rel, limit=100, what="t")
    with pytest.raises(ConfigError, match="more than the limit of 3"):
        read_beneath(root, "a/b/file.txt", limit=3, what="t")


def test_write_beneath_never_writes_through_a_symlink(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "config").write_text("theirs")
    (out / "docs").symlink_to(outside, target_is_directory=True)
    (out / "REVIEW.md").symlink_to(outside / "config")
    with pytest.raises(ConfigError, match="symlink"):
        write_beneath(out, "docs/config", b"agent's")
    with pytest.raises(ConfigError, match="other than a regular file"):
        write_beneath(out, "REVIEW.md", b"agent's")
    with pytest.raises(ConfigError, match=r"no '\.\.'"):
        write_beneath(out, "../outside/config", b"agent's")
    assert (outside / "config").read_text() == "theirs"
    assert write_beneath(out, "sub/dir/NOTES.md", b"ok") == out / "sub" / "dir" / "NOTES.md"
    assert (out / "sub" / "dir" / "NOTES.md").read_bytes() == b"ok"
    assert sorted(p.name for p in (out / "sub" / "dir").iterdir()) == ["NOTES.md"]  # no temporary file left


def test_write_private_writes_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "family.snap"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old = os.umask(0o022)
    try:
        write_private(path, b"unsealed agent state")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"unsealed agent state"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["family.snap"]


def test_copy_in_never_reads_from_a_fifo_swapped_in_for_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file replaced by a FIFO between its stat and its open: opened non-blocking, refused by fstat."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.txt").write_text("x")
    real_stat = os.stat

    def stat_then_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)
        if path == "data.txt" and kwargs.get("dir_fd") is not None:
            (root / "data.txt").unlink()
            os.mkfifo(root / "data.txt")
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    done: list[dict[str, bytes]] = []
    worker = threading.Thread(target=lambda: done.append(copy_tree(root, max_bytes=100, max_files=10)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done == [{}], "the copy blocked on (or read) a FIFO"



def test_run_snapshot_at_writes_the_unsealed_snapshot_0600(wasm: Callable[[str], bytes], tmp_path: Path) -> None:
    from meshagent.runtime.local import run_local
    from tests.runtime.fakes import ScriptedLlm

    snap = tmp_path / "family.snap"
    old = os.umask(0o022)  # the usual umask: files would come out 0644
    try:
        result = run_local(wasm("clockrand"), args=["clockrand"], services=ScriptedLlm(), snapshot_at=6, snapshot_path=snap)
    finally:
        os.umask(old)
    assert result.snapshot_written
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["family.snap"]


def _run_out_dir(module: Path, project: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshagent", "run", str(module), "--local", "--dir", str(project),
                           "--out-dir", str(out), *extra, "--", "REVIEW.md", ".git/config", ".bashrc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_run_out_dir_refuses_dot_files_unless_asked_and_never_writes_through_a_symlink(
        build: Callable[[str], Path], tmp_path: Path) -> None:
    project, out, outside = tmp_path / "project", tmp_path / "out", tmp_path / "outside"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    out.mkdir()
    outside.mkdir()
    (outside / "theirs.md").write_text("not the agent's\n")
    (out / "REVIEW.md").symlink_to(outside / "theirs.md")  # planted in the target: the write must not follow it

    plain = _run_out_dir(build("dotwriter"), project, out)
    assert plain.returncode == 0, plain.stderr
    assert "not writing .git/config: a dot-file (pass --out-dotfiles" in plain.stderr
    assert "not writing .bashrc: a dot-file" in plain.stderr
    assert "not writing 'REVIEW.md': something other than a regular file is there" in plain.stderr
    assert not (out / ".git").exists() and not (out / ".bashrc").exists()
    assert (outside / "theirs.md").read_text() == "not the agent's\n"

    (out / "REVIEW.md").unlink()
    asked = _run_out_dir(build("dotwriter"), project, out, "--out-dotfiles")
    assert asked.returncode == 0, asked.stderr
    assert (out / ".git" / "config").read_text() == "written by the agent: .git/config\n"
    assert (out / ".bashrc").read_text() == "written by the agent: .bashrc\n"
    assert (out / "REVIEW.md").read_text() == "written by the agent: REVIEW.md\n"
    assert not (project / "REVIEW.md").exists()  # the agent's --dir is never written

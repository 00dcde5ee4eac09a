"""The node's sqlite store: agents, their journals, memory images and modules.

One file (``<data dir>/node.sqlite``), WAL mode, one connection shared by
threads behind a lock (agents append journal entries from worker threads).
Each component owns its tables and registers them with
:meth:`NodeStore.ensure_schema` — a versioned list of statements run once —
so other parts of the node (handoff, reputation, ...) add tables without
touching this file.

Journal entries are appended one by one as host calls happen, so after a
crash or restart every running agent resumes from its last host call.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshagent.errors import JournalError, NodeError
from meshagent.protocol import codec
from meshagent.runtime.journal import Entry, Journal
from meshagent.runtime.snapshot import AgentSnapshot, MemoryImage
from meshagent.runtime.vfs import VirtualFs

__all__ = ["NodeStore", "AgentRow", "STORE_NAME", "connect_private"]

log = logging.getLogger(__name__)

STORE_NAME: Final = "node.sqlite"

_AGENT_SCHEMA: Final = (
    """CREATE TABLE modules (
        sha256 TEXT PRIMARY KEY,
        wasm BLOB NOT NULL,
        added REAL NOT NULL)""",
    """CREATE TABLE agents (
        agent_id TEXT PRIMARY KEY,
        parent_id TEXT,
        module_sha256 TEXT NOT NULL REFERENCES modules(sha256),
        status TEXT NOT NULL,
        exit_code INTEGER,
        error TEXT,
        meta BLOB NOT NULL,
        stdout BLOB NOT NULL DEFAULT x'',
        stderr BLOB NOT NULL DEFAULT x'',
        created REAL NOT NULL,
        updated REAL NOT NULL)""",
    """CREATE TABLE journal (
        agent_id TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        entry BLOB NOT NULL,
        PRIMARY KEY (agent_id, idx)) WITHOUT ROWID""",
    """CREATE TABLE images (
        agent_id TEXT PRIMARY KEY REFERENCES agents(agent_id) ON DELETE CASCADE,
        image BLOB NOT NULL)""",
)


_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def connect_private(path: Path) -> sqlite3.Connection:
    """Open the sqlite database at ``path``, its file and side files readable by the owner only.

    The file is created 0600 before sqlite opens it, and sqlite gives its
    ``-wal``, ``-shm`` and ``-journal`` files the database file's mode; files
    left more open by an older version are tightened to 0600 first."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NodeError(f"{path} is not a regular file")
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        for suffix in _SIDE_FILES:
            side = path.with_name(path.name + suffix)
            try:
                st = side.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(side, 0o600, follow_symlinks=False)
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except OSError as exc:
        raise NodeError(f"cannot open the database {path}: {exc.strerror}") from exc
    except sqlite3.Error as exc:
        raise NodeError(f"cannot open the database {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent_id: str
    parent_id: str | None
    module_sha256: str
    status: str
    exit_code: int | None
    error: str | None
    host_calls: int
    created: float
    updated: float


class NodeStore:
    """Thread-safe access to the node's sqlite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect_private(path)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten, not left in free pages: a deleted agent's files and journal are gone.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        self.ensure_schema("agents", 1, _AGENT_SCHEMA)

    @classmethod
    def open(cls, data_dir: Path) -> NodeStore:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(data_dir / STORE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (others' components use this too)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ensure_schema(self, component: str, version: int, statements: Sequence[str]) -> None:
        """Run ``statements`` once for ``component`` at ``version`` (a fresh component only).

        Components that change their tables later bump ``version`` and pass the
        statements that migrate from the previous one.
        """
        with self.transaction() as db:
            row = db.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
            if row is not None and row[0] >= version:
                return
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)", (component, version))

    # --- modules -------------------------------------------------------------

    def put_module(self, sha256: str, wasm: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO modules VALUES (?, ?, ?)", (sha256, wasm, time.time()))

    def get_module(self, sha256: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT wasm FROM modules WHERE sha256 = ?", (sha256,)).fetchone()
        return bytes(row[0]) if row else None

    # --- agents ---------------------------------------------------------------

    def save_agent(self, snap: AgentSnapshot, *, stdout: bytes = b"", stderr: bytes = b"") -> None:
        """Write a whole agent (metadata, journal, image), replacing what was stored."""
        now = time.time()
        if snap.module is not None:
            self.put_module(snap.module_sha256, snap.module)
        with self.transaction() as db:
            db.execute(
                """INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(agent_id) DO UPDATE SET status=excluded.status, exit_code=excluded.exit_code,
                   error=excluded.error, meta=excluded.meta, stdout=excluded.stdout, stderr=excluded.stderr,
                   updated=excluded.updated""",
                (snap.agent_id, snap.parent_id, snap.module_sha256, snap.status, snap.exit_code, snap.error,
                 _meta(snap), stdout, stderr, now, now),
            )
            db.execute("DELETE FROM journal WHERE agent_id = ?", (snap.agent_id,))
            db.executemany(
                "INSERT INTO journal VALUES (?, ?, ?)",
                ((snap.agent_id, i, codec.encode(e.to_wire())) for i, e in enumerate(snap.journal)),
            )
            db.execute("DELETE FROM images WHERE agent_id = ?", (snap.agent_id,))
            if snap.image is not None:
                db.execute("INSERT INTO images VALUES (?, ?)", (snap.agent_id, codec.encode(snap.image.to_wire())))

    def append_entry(self, agent_id: str, index: int, entry: Entry) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO journal VALUES (?, ?, ?)", (agent_id, index, codec.encode(entry.to_wire())))

    def truncate(self, agent_id: str, length: int, *, rollbacks: dict[str, int], labels: dict[str, int]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM journal WHERE agent_id = ? AND idx >= ?", (agent_id, length))
            row = db.execute("SELECT meta FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
            if row is not None:
                meta = codec.decode_map(bytes(row[0]), max_size=1 << 30)
                meta["rollbacks"], meta["labels"] = dict(rollbacks), dict(labels)  # type: ignore[assignment]
                db.execute("UPDATE agents SET meta = ?, updated = ? WHERE agent_id = ?", (codec.encode(meta), time.time(), agent_id))
            db.execute("DELETE FROM images WHERE agent_id = ?", (agent_id,))  # a cache: rebuilt from the journal

    def put_image(self, agent_id: str, image: MemoryImage) -> None:
        """Store a newer memory image (a cache that bounds the replay after a restart)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO images VALUES (?, ?)", (agent_id, codec.encode(image.to_wire())))

    def set_status(self, agent_id: str, status: str, *, exit_code: int | None = None, error: str | None = None,
                   stdout: bytes | None = None, stderr: bytes | None = None) -> None:
        with self._lock:
            self._db.execute(
                """UPDATE agents SET status = ?, exit_code = ?, error = ?, stdout = COALESCE(?, stdout),
                   stderr = COALESCE(?, stderr), updated = ? WHERE agent_id = ?""",
                (status, exit_code, error, stdout, stderr, time.time(), agent_id),
            )

    def set_labels(self, agent_id: str, labels: dict[str, int]) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT meta FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
            if row is None:
                return
            meta = codec.decode_map(bytes(row[0]), max_size=1 << 30)
            meta["labels"] = dict(labels)  # type: ignore[assignment]
            db.execute("UPDATE agents SET meta = ? WHERE agent_id = ?", (codec.encode(meta), agent_id))

    def status_of(self, agent_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else str(row[0])

    def load_agent(self, agent_id: str, *, journal_limit: int = 64 << 20) -> AgentSnapshot:
        with self._lock:
            row = self._db.execute(
                "SELECT parent_id, module_sha256, status, exit_code, error, meta FROM agents WHERE agent_id = ?",
                (agent_id,),
            ).fetchone()
            if row is None:
                from meshagent.errors import AgentNotFound

                raise AgentNotFound(f"no agent {agent_id} in the node store")
            entries = self._db.execute("SELECT idx, entry FROM journal WHERE agent_id = ? ORDER BY idx", (agent_id,)).fetchall()
            image_row = self._db.execute("SELECT image FROM images WHERE agent_id = ?", (agent_id,)).fetchone()
        parent_id, sha, status, exit_code, error, meta_raw = row
        journal = Journal(limit=journal_limit)
        for expected, (idx, raw) in enumerate(entries):
            if idx != expected:
                raise JournalError(f"the stored journal of agent {agent_id} has a gap at entry {expected}")
            journal.append(Entry.from_wire(codec.decode(bytes(raw), max_size=journal_limit, max_depth=3), idx))
        meta = codec.decode_map(bytes(meta_raw), max_size=1 << 30)
        image = MemoryImage.from_wire(codec.decode(bytes(image_row[0]), max_size=1 << 30, max_depth=8)) if image_row else None
        if image is not None and image.position > len(journal):
            image = None
        args = meta.get("args") or []
        env = meta.get("env") or []
        return AgentSnapshot(
            agent_id=agent_id,
            parent_id=parent_id,
            module_sha256=sha,
            module=self.get_module(sha),
            journal=journal,
            args=tuple(str(a) for a in args),  # type: ignore[union-attr]
            env=tuple((str(k), str(v)) for k, v in env),  # type: ignore[union-attr, misc]
            vfs=VirtualFs.from_wire(meta.get("vfs") or {}),
            image=image,
            rollbacks={str(k): int(v) for k, v in (meta.get("rollbacks") or {}).items()},  # type: ignore[union-attr, arg-type]
            labels={str(k): int(v) for k, v in (meta.get("labels") or {}).items()},  # type: ignore[union-attr, arg-type]
            status=status,
            exit_code=exit_code,
            error=error,
        )

    def outputs(self, agent_id: str) -> tuple[bytes, bytes]:
        with self._lock:
            row = self._db.execute("SELECT stdout, stderr FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else (b"", b"")

    def agents(self, statuses: Sequence[str] | None = None) -> list[AgentRow]:
        query = """SELECT a.agent_id, a.parent_id, a.module_sha256, a.status, a.exit_code, a.error,
                   (SELECT COUNT(*) FROM journal j WHERE j.agent_id = a.agent_id), a.created, a.updated
                   FROM agents a"""
        params: tuple[str, ...] = ()
        if statuses:
            query += f" WHERE a.status IN ({','.join('?' for _ in statuses)})"
            params = tuple(statuses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY a.created", params).fetchall()
        return [AgentRow(*row) for row in rows]

    def delete_agent(self, agent_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))

    def scrub(self) -> None:
        """Copy the write-ahead log into the database and truncate it, so that the old versions of
        deleted rows it still holds are gone from the disk files too (with ``secure_delete``)."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("the node store's write-ahead log could not be truncated (busy); deleted rows stay in it until the next checkpoint")


def _meta(snap: AgentSnapshot) -> bytes:
    return codec.encode({
        "args": list(snap.args),
        "env": [[k, v] for k, v in snap.env],
        "vfs": snap.vfs.to_wire(),
        "rollbacks": dict(snap.rollbacks),
        "labels": dict(snap.labels),
    })

"""The node's identity: an Ed25519 key (who it is) and the sealing keys (what it unseals).

The sealing keys are an X25519 key (``sealing.key``) and an ML-KEM-768 key
(``sealing-pq.key``, its 64-byte seed) that together with the X25519 key form
the hybrid ML-KEM768-X25519 HPKE key (``[net] sealing_suite = "hybrid"``).
All are generated on first start (the ML-KEM key also on the first start of
an older data dir) and stored as raw files in the data dir with mode 0600; a key file that group or others can read is refused rather
than used, and so is a data dir open to group or others once it holds keys (see :func:`ensure_private_dir`). The libp2p peer id derives from the Ed25519 key, so Noise
authenticates it on every connection. A second process on the same data dir
is refused by an exclusive lock (see :class:`DataDirLock`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from meshagent.errors import DuplicateIdentityError, IdentityError
from meshagent.protocol.advert import bind_pq_sealing_key, bind_sealing_key
from meshagent.protocol.signed import PeerId, peer_id_from_public_key
from meshagent.protocol.snapshot import SUITE_HYBRID, SUITE_X25519, SealingKey, hybrid_private_key, hybrid_public_bytes

__all__ = ["IDENTITY_FILE", "SEALING_FILE", "SEALING_PQ_FILE", "Identity", "load_or_create_identity", "ensure_private_dir", "DataDirLock"]

log = logging.getLogger(__name__)

IDENTITY_FILE: Final = "identity.key"
SEALING_FILE: Final = "sealing.key"
SEALING_PQ_FILE: Final = "sealing-pq.key"
_MLKEM_SEED: Final = 64
LOCK_FILE: Final = "node.lock"


@dataclass(frozen=True, slots=True)
class Identity:
    signing_key: Ed25519PrivateKey
    sealing_key: X25519PrivateKey
    sealing_pq: MLKEM768PrivateKey
    """The ML-KEM-768 half of the hybrid sealing key (the X25519 half is ``sealing_key``)."""

    @property
    def public_key(self) -> bytes:
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def peer_id(self) -> PeerId:
        return peer_id_from_public_key(self.public_key)

    @property
    def sealing_public(self) -> bytes:
        return self.sealing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def sealing_binding(self) -> bytes:
        """Signature binding the sealing key to this identity (goes in adverts)."""
        return bind_sealing_key(self.sealing_public, self.signing_key)

    @property
    def hybrid_sealing_key(self) -> hpke.MLKEM768X25519PrivateKey:
        """The private key of the hybrid ML-KEM768-X25519 suite."""
        return hybrid_private_key(self.sealing_pq, self.sealing_key)

    @property
    def hybrid_public(self) -> bytes:
        """The advertised hybrid sealing key: ML-KEM-768 public key (1184 bytes) | X25519 public key (32)."""
        return hybrid_public_bytes(self.sealing_pq, self.sealing_key)

    @property
    def hybrid_binding(self) -> bytes:
        """Signature binding the hybrid sealing key to this identity (``sealing_key_pq_sig`` in adverts)."""
        return bind_pq_sealing_key(self.hybrid_public, self.signing_key)

    def sealing_for(self, suite: str) -> tuple[SealingKey, bytes]:
        """Our (private key, advertised public key) for an HPKE suite named in a snapshot header."""
        if suite == SUITE_HYBRID:
            return self.hybrid_sealing_key, self.hybrid_public
        if suite == SUITE_X25519:
            return self.sealing_key, self.sealing_public
        raise IdentityError(f"no sealing key for the HPKE suite {suite!r}")

    def seed(self) -> bytes:
        return self.signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) if needed; refuse or tighten one that group or others can reach.

    One that group or others can write to is refused. One they can only read or
    enter is tightened to 0700 while it holds no identity key yet (this node is
    setting it up now: nothing of it can have leaked), and refused once it holds
    one (its keys and databases may have been read: the owner decides)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise IdentityError(f"data dir {path} is writable by others (mode {mode:o}); run: chmod 700 {path}")
    if mode & 0o077:
        if (path / IDENTITY_FILE).exists():
            raise IdentityError(f"data dir {path} is open to group or others (mode {mode:o}) and holds this node's "
                                f"keys; check who could read them, then run: chmod 700 {path}")
        os.chmod(path, mode & 0o700)
        log.info("data dir %s had mode %o; set to %o before creating the node's keys", path, mode, mode & 0o700)


def _read_key(path: Path, size: int = 32) -> bytes | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise IdentityError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):o}; it must be readable by its owner only (run: chmod 600 {path})"
        )
    data = path.read_bytes()
    if len(data) != size:
        raise IdentityError(f"key file {path} is corrupt ({len(data)} bytes, expected {size})")
    return data


def _write_key(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_identity(data_dir: Path) -> Identity:
    """Load the node's keys from ``data_dir``, generating them on first start."""
    ensure_private_dir(data_dir)
    id_path, seal_path = data_dir / IDENTITY_FILE, data_dir / SEALING_FILE
    seed = _read_key(id_path)
    if seed is None:
        seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        _write_key(id_path, seed)
    sealing = _read_key(seal_path)
    if sealing is None:
        sealing = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        _write_key(seal_path, sealing)
    pq_path = data_dir / SEALING_PQ_FILE
    pq_seed = _read_key(pq_path, _MLKEM_SEED)
    if pq_seed is None:
        pq_seed = MLKEM768PrivateKey.generate().private_bytes_raw()
        _write_key(pq_path, pq_seed)
    return Identity(
        signing_key=Ed25519PrivateKey.from_private_bytes(seed),
        sealing_key=X25519PrivateKey.from_private_bytes(sealing),
        sealing_pq=MLKEM768PrivateKey.from_seed_bytes(pq_seed),
    )


class DataDirLock:
    """An exclusive lock on the data dir: one running node per identity per machine."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DuplicateIdentityError(
                f"another meshagent node is already running with data dir {self._path.parent}"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

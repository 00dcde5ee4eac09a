"""The trust store: peer ids of the owner's other devices, added by pairing.

A JSON file ``trust.json`` in the data dir, mode 0600, rewritten atomically.
A ``private`` step may run only on this node or on a device listed here
(and listing this node in turn).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from meshagent.errors import DecodeError, IdentityError
from meshagent.protocol.signed import PeerId, public_key_from_peer_id

__all__ = ["TRUST_FILE", "TrustedDevice", "TrustStore"]

TRUST_FILE: Final = "trust.json"


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    peer_id: PeerId
    name: str
    paired_at: float


class TrustStore:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / TRUST_FILE
        self._devices: dict[PeerId, TrustedDevice] = {}
        self._load()

    def _load(self) -> None:
        if not self._path.exists():
            return
        if self._path.stat().st_mode & 0o077:
            raise IdentityError(f"{self._path} is readable by others; run: chmod 600 {self._path}")
        try:
            raw = json.loads(self._path.read_text())
            for item in raw["devices"]:
                public_key_from_peer_id(item["peer_id"])  # validates the id
                self._devices[PeerId(item["peer_id"])] = TrustedDevice(PeerId(item["peer_id"]), str(item["name"]), float(item["paired_at"]))
        except (ValueError, KeyError, TypeError, DecodeError) as exc:
            raise IdentityError(f"trust store {self._path} is corrupt: {exc}") from exc

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # a leftover .tmp keeps its old mode through O_CREAT
            json.dump({"devices": [asdict(d) for d in self._devices.values()]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def add(self, peer_id: PeerId, name: str) -> None:
        self._devices[peer_id] = TrustedDevice(peer_id, name, time.time())
        self._save()

    def remove(self, peer_id: PeerId) -> bool:
        if self._devices.pop(peer_id, None) is None:
            return False
        self._save()
        return True

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._devices

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self._devices)

    def devices(self) -> list[TrustedDevice]:
        return list(self._devices.values())

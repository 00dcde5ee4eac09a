"""sha256 of model files, computed once and cached by (path, size, mtime).

A model's sha256 is its identity on the mesh (adverts, bids, KV blob binding),
but hashing a multi-gigabyte GGUF takes seconds, so the digest is cached in a
small JSON file and recomputed only when the file's size or mtime changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Final

from meshagent.errors import ModelError

__all__ = ["sha256_file", "Sha256Cache"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()


class Sha256Cache:
    """A JSON file mapping absolute paths to ``{size, mtime_ns, sha256}``."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable sha256 cache %s: %s", self.file, exc)
            return {}
        return raw if isinstance(raw, dict) else {}

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache when its size and mtime are unchanged."""
        path = Path(path).resolve()
        try:
            st = path.stat()
        except OSError as exc:
            raise ModelError(f"model file {path} is missing: {exc.strerror or exc}") from exc
        key = str(path)
        with self._lock:
            entries = self._load()
            hit = entries.get(key)
            if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
                digest = hit.get("sha256")
                if isinstance(digest, str) and len(digest) == 64:
                    return digest
            log.info("hashing model file %s (%d bytes)", path, st.st_size)
            digest = sha256_file(path)
            entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.file)
            except OSError as exc:
                log.warning("cannot write sha256 cache %s: %s", self.file, exc)
            return digest

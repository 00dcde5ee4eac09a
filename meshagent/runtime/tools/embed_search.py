"""The ``embed.search`` tool: top-k chunks of the agent's files by embedding similarity.

Files are cut into chunks of ``chunk_lines`` lines; each chunk and the query
are embedded (the node's ONNX embedder, through the host services) and ranked
by cosine similarity. Chunk embeddings are cached in memory by content hash,
so repeated searches over the same files embed only what changed. Every chunk
and the query are charged to the agent as embedded text (cached or not: what
an agent pays does not depend on what other agents searched before).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from meshagent.runtime.costs import FUEL_PER_BYTE, FUEL_PER_EMBED, FUEL_PER_EMBEDDED_BYTE, Meter
from meshagent.runtime.tools.files import ToolArgsError, _int, _selected, text_of
from meshagent.runtime.vfs import FileView

__all__ = ["EmbedFn", "embed_search", "MAX_CHUNKS"]

MAX_CHUNKS: Final = 512
MAX_QUERY: Final = 4096
_CACHE_SIZE: Final = 20_000

EmbedFn = Callable[[str], Sequence[float]]
"""Embed one text (the host services' ``embed``)."""

_cache: OrderedDict[bytes, tuple[float, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def _embedded(embed: EmbedFn, text: str) -> tuple[float, ...]:
    key = hashlib.sha256(text.encode()).digest()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    vector = tuple(float(x) for x in embed(text))
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    vector = tuple(x / norm for x in vector)
    with _cache_lock:
        _cache[key] = vector
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return vector


def _charge_embedding(meter: Meter, text: str) -> None:
    meter.charge(FUEL_PER_EMBED + len(text.encode()) * FUEL_PER_EMBEDDED_BYTE, "embed.search")


def embed_search(args: Mapping[str, object], fs: FileView, embed: EmbedFn, meter: Meter) -> dict[str, object]:
    """``{"query": "...", "k": 3, "path": "", "glob": "*.c", "chunk_lines": 20}`` → the k closest chunks."""
    query = args.get("query")
    if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY:
        raise ToolArgsError(f"'query' must be a non-empty string of at most {MAX_QUERY} characters")
    k = _int(args, "k", 3, 1, 50)
    size = _int(args, "chunk_lines", 20, 1, 400)
    chunks: list[tuple[str, int, int, str]] = []
    for path in _selected(fs, args, meter):
        data = fs.get(path) or b""
        meter.charge(len(data) * FUEL_PER_BYTE, "embed.search")
        if b"\0" in data[:4096]:
            continue  # binary
        lines = text_of(data).splitlines()
        for start in range(0, len(lines), size):
            text = "\n".join(lines[start : start + size])
            if text.strip():
                chunks.append((path, start + 1, min(start + size, len(lines)), text))
        if len(chunks) > MAX_CHUNKS:
            raise ToolArgsError(f"more than {MAX_CHUNKS} chunks to embed: narrow 'path' or 'glob', or raise 'chunk_lines'")
    _charge_embedding(meter, query)
    q = _embedded(embed, query)
    scored = []
    for path, start, end, text in chunks:
        _charge_embedding(meter, text)
        v = _embedded(embed, text)
        if len(v) != len(q):
            raise ToolArgsError("the embedder returned vectors of different sizes")
        scored.append((-sum(a * b for a, b in zip(q, v)), path, start, end, text))
    scored.sort(key=lambda s: (s[0], s[1], s[2]))
    results = [{"path": p, "start": s, "end": e, "score": round(-neg, 6), "text": t[:2000]} for neg, p, s, e, t in scored[:k]]
    return {"ok": True, "results": results, "chunks": len(chunks)}

"""Make an agent's mutable globals reachable so memory images can hold them.

C compilers keep the shadow-stack pointer and similar state in *internal*
mutable globals that the host cannot read. :func:`export_mutable_globals`
rewrites a module's export section to also export every defined mutable
numeric global as ``__mesh_global_<index>``. The rewrite is deterministic and
derived from the module bytes, so the module's identity stays the sha256 of
what the author built. If the binary uses a construct this small parser does
not know, the module is left as it is and memory images are simply disabled
for it (replay from the start still works).
"""

from __future__ import annotations

from typing import Final

__all__ = ["export_mutable_globals", "GLOBAL_EXPORT_PREFIX"]

GLOBAL_EXPORT_PREFIX: Final = "__mesh_global_"

_NUMERIC: Final = {0x7F, 0x7E, 0x7D, 0x7C}  # i32 i64 f32 f64


class _Unsupported(Exception):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Unsupported("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result
            if shift > 63:
                raise _Unsupported("leb too long")

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise _Unsupported("truncated")
        self.pos += n

    def name(self) -> None:
        self.skip(self.uleb())

    def limits(self) -> None:
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()
        if flags & 8:
            self.uleb()

    def init_expr(self) -> None:
        while True:
            op = self.byte()
            match op:
                case 0x0B:
                    return
                case 0x41 | 0x42 | 0x23 | 0xD2:
                    self.uleb()
                case 0x43:
                    self.skip(4)
                case 0x44:
                    self.skip(8)
                case 0xD0:
                    self.byte()
                case 0x6A | 0x6B | 0x6C | 0x7C | 0x7D | 0x7E:
                    pass
                case _:
                    raise _Unsupported(f"init opcode {op:#x}")


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def export_mutable_globals(wasm: bytes) -> tuple[bytes, tuple[str, ...] | None]:
    """Return (module bytes exporting every mutable global, the export names added).

    The names are ``None`` when the module could not be rewritten (images are then off).
    """
    try:
        return _rewrite(wasm)
    except _Unsupported:
        return wasm, None


def _rewrite(wasm: bytes) -> tuple[bytes, tuple[str, ...]]:
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise _Unsupported("not a core module")
    r = _Reader(wasm, 8)
    sections: list[tuple[int, int, int]] = []  # id, start of content, end
    while r.pos < len(wasm):
        sid = r.byte()
        size = r.uleb()
        start = r.pos
        r.skip(size)
        sections.append((sid, start, start + size))
    imported_globals = 0
    mutable: list[int] = []
    for sid, start, end in sections:
        s = _Reader(wasm[:end], start)
        if sid == 2:
            for _ in range(s.uleb()):
                s.name()
                s.name()
                kind = s.byte()
                match kind:
                    case 0x00:
                        s.uleb()
                    case 0x01:
                        s.byte()
                        s.limits()
                    case 0x02:
                        s.limits()
                    case 0x03:
                        s.byte()
                        s.byte()
                        imported_globals += 1
                    case 0x04:
                        s.byte()
                        s.uleb()
                    case _:
                        raise _Unsupported("import kind")
        elif sid == 6:
            for i in range(s.uleb()):
                valtype = s.byte()
                if valtype not in _NUMERIC and valtype not in (0x70, 0x6F, 0x7B):
                    raise _Unsupported("global type")
                mut = s.byte()
                s.init_expr()
                if mut == 1 and valtype in _NUMERIC:
                    mutable.append(imported_globals + i)
    if not mutable:
        return wasm, ()
    export = next(((start, end) for sid, start, end in sections if sid == 7), None)
    if export is None:
        raise _Unsupported("no export section")
    start, end = export
    s = _Reader(wasm[:end], start)
    count = s.uleb()
    body_start = s.pos
    names = tuple(f"{GLOBAL_EXPORT_PREFIX}{index}" for index in mutable)
    extra = b"".join(_uleb(len(n)) + n.encode() + b"\x03" + _uleb(index) for n, index in zip(names, mutable))
    content = _uleb(count + len(mutable)) + wasm[body_start:end] + extra
    header_start = _section_header_start(wasm, sections, start)
    out = wasm[:header_start] + b"\x07" + _uleb(len(content)) + content + wasm[end:]
    return out, names


def _section_header_start(wasm: bytes, sections: list[tuple[int, int, int]], content_start: int) -> int:
    previous_end = 8
    for _sid, start, end in sections:
        if start == content_start:
            return previous_end
        previous_end = end
    raise _Unsupported("section not found")

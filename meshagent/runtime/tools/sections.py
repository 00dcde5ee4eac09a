"""Custom sections of a WebAssembly module or component: read one, or append one.

An agent's tool manifest lives in its module as the custom section
``meshagent.manifest``; custom sections do not change what the module does,
and the module's sha256 then covers the manifest too.
"""

from __future__ import annotations

from typing import Final

from meshagent.errors import ModuleError

__all__ = ["custom_section", "with_custom_section"]

_MAGICS: Final = (b"\0asm\x01\0\0\0", b"\0asm\x0d\0\x01\0")
"""Core modules and components: custom sections (id 0) look alike in both."""
_HEADER: Final = 8


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ModuleError("truncated or invalid LEB128 in the module")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def custom_section(wasm: bytes, name: str) -> bytes | None:
    """The payload of the last custom section called ``name``, or ``None``."""
    if not wasm.startswith(_MAGICS):
        raise ModuleError("not a WebAssembly module (bad magic)")
    pos, found = _HEADER, None
    while pos < len(wasm):
        section_id = wasm[pos]
        size, body = _leb(wasm, pos + 1)
        end = body + size
        if end > len(wasm):
            raise ModuleError("a section runs past the end of the module")
        if section_id == 0:
            name_len, at = _leb(wasm, body)
            if wasm[at : at + name_len] == name.encode():
                found = wasm[at + name_len : end]
        pos = end
    return found


def with_custom_section(wasm: bytes, name: str, payload: bytes) -> bytes:
    """The module with a custom section appended (an earlier one of that name is dropped)."""
    if not wasm.startswith(_MAGICS):
        raise ModuleError("not a WebAssembly module (bad magic)")
    kept = bytearray(wasm[:_HEADER])
    pos = _HEADER
    while pos < len(wasm):
        section_id = wasm[pos]
        size, body = _leb(wasm, pos + 1)
        end = body + size
        if section_id == 0:
            name_len, at = _leb(wasm, body)
            if wasm[at : at + name_len] == name.encode():
                pos = end
                continue
        kept += wasm[pos:end]
        pos = end
    raw_name = name.encode()
    content = _uleb(len(raw_name)) + raw_name + payload
    return bytes(kept) + b"\0" + _uleb(len(content)) + content

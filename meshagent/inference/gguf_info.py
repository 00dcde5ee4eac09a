"""What a GGUF file says about itself, read without loading it into llama.cpp.

Used to refuse a file that is not GGUF with a clear :class:`ModelError` before
llama.cpp sees it, and to fill adverts (parameters, quantization, context).
A model with no ``size=`` tag in its config is given one from its parameter
count (:func:`size_class`), so that ``size>=small``-style steps find it on a
node and in ``meshagent run --local`` alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshagent.errors import ModelError

__all__ = ["GGUF_MAGIC", "SIZE_CLASSES", "GgufInfo", "check_gguf", "read_gguf_info", "size_class", "with_size_tag"]

log = logging.getLogger(__name__)

GGUF_MAGIC: Final = b"GGUF"

SIZE_CLASSES: Final = (("tiny", 250_000_000), ("small", 3_000_000_000), ("medium", 10_000_000_000),
                       ("large", 50_000_000_000), ("xl", None))
"""Size classes by parameter count (each below its bound): tiny < 250M (test models), small < 3B
(0.5B-1.5B chat models), medium < 10B (7B-8B), large < 50B (13B-34B), xl above."""


def size_class(parameters: int) -> str | None:
    """The size class of a model with this many parameters (``None`` when the count is unknown)."""
    if parameters <= 0:
        return None
    for name, bound in SIZE_CLASSES:
        if bound is None or parameters < bound:
            return name
    return None


def with_size_tag(tags: tuple[str, ...], parameters: int) -> tuple[str, ...]:
    """``tags`` plus ``size=<class>`` from the parameter count, unless a ``size=`` tag is given."""
    if any(t.startswith("size=") for t in tags):
        return tags
    derived = size_class(parameters)
    return tags if derived is None else (*tags, f"size={derived}")


@dataclass(frozen=True, slots=True)
class GgufInfo:
    architecture: str
    name: str
    parameters: int
    quantization: str
    n_ctx_train: int


def check_gguf(path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` is a readable file starting with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (magic {magic!r})")


def _scalar(reader: object, key: str) -> object:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    return field.contents()


def read_gguf_info(path: Path) -> GgufInfo:
    """Metadata of a GGUF file; :class:`ModelError` if it is not one or is corrupt."""
    check_gguf(path)
    try:
        import gguf

        reader = gguf.GGUFReader(str(path), "r")
        arch = str(_scalar(reader, "general.architecture") or "")
        name = str(_scalar(reader, "general.name") or path.stem)
        ftype = _scalar(reader, "general.file_type")
        try:
            quant = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_") if isinstance(ftype, int) else ""
        except ValueError:
            quant = str(ftype)
        n_ctx = _scalar(reader, f"{arch}.context_length")
        params = sum(int(t.n_elements) for t in reader.tensors)
    except (ValueError, KeyError, IndexError, OSError, TypeError) as exc:
        raise ModelError(f"{path} is not a valid GGUF file: {exc}") from exc
    return GgufInfo(
        architecture=arch,
        name=name,
        parameters=params,
        quantization=quant,
        n_ctx_train=int(n_ctx) if isinstance(n_ctx, int) else 0,
    )

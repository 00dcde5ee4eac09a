"""Model requirements: which models can serve an LLM step.

A requirement is text written by an agent (``mesh_llm_options``), by the owner
(``meshagent auction --requirement``) or by a peer (in a call for bids): a model
name or sha256, a size bound (``size>=medium``, ``size=large``, ``size<=small``),
or empty for any LLM. It is parsed once, when the :class:`ModelRequirement` is
made: an unknown size is refused then, never later while bidding. Text from a
peer goes through :func:`parse_requirement`, which makes the refusal a
:class:`~meshagent.errors.DecodeError` (the peer's fault).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from meshagent.errors import DecodeError, LocalProtocolError
from meshagent.protocol.advert import ModelAd

__all__ = [
    "SIZE_ORDER",
    "MAX_REQUIREMENT_CHARS",
    "ModelRequirement",
    "parse_requirement",
    "model_size",
    "best_model",
]

SIZE_ORDER: Final = ("tiny", "small", "medium", "large", "xl")
MAX_REQUIREMENT_CHARS: Final = 256
_REQ: Final = re.compile(r"^\s*size\s*(>=|=|<=)\s*(\w+)\s*$")
_OPS: Final = {">=": lambda have, want: have >= want, "=": lambda have, want: have == want,
               "<=": lambda have, want: have <= want}


@dataclass(frozen=True, slots=True)
class ModelRequirement:
    """Which models can serve a step: a model name, a size bound (``size>=medium``), or any LLM.

    Raises :class:`~meshagent.errors.LocalProtocolError` when made from text
    naming an unknown size or longer than :data:`MAX_REQUIREMENT_CHARS`.
    """

    text: str = ""
    _bound: tuple[str, int] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if len(self.text) > MAX_REQUIREMENT_CHARS:
            raise LocalProtocolError(f"a model requirement is at most {MAX_REQUIREMENT_CHARS} characters")
        m = _REQ.match(self.text)
        if m is None:
            return
        if m.group(2) not in SIZE_ORDER:
            raise LocalProtocolError(f"unknown model size {m.group(2)!r}; sizes are {', '.join(SIZE_ORDER)}")
        object.__setattr__(self, "_bound", (m.group(1), SIZE_ORDER.index(m.group(2))))

    def satisfied_by(self, model: ModelAd) -> bool:
        if model.kind != "llm":
            return False
        if not self.text.strip():
            return True
        if self._bound is None:
            return model.name == self.text.strip() or model.sha256 == self.text.strip()
        size = model_size(model)
        if size is None:
            return False
        op, want = self._bound
        return _OPS[op](size, want)


def parse_requirement(text: str) -> ModelRequirement:
    """A requirement written by a peer: :class:`DecodeError` (the peer's fault) when it is not one."""
    try:
        return ModelRequirement(text)
    except LocalProtocolError as exc:
        raise DecodeError(f"bad model requirement {text[:40]!r}: {exc}") from exc


def model_size(model: ModelAd) -> int | None:
    for tag in model.tags:
        if tag.startswith("size=") and tag[5:] in SIZE_ORDER:
            return SIZE_ORDER.index(tag[5:])
    return None


def best_model(models: Iterable[ModelAd], req: ModelRequirement) -> ModelAd | None:
    """The model a node would use for ``req``: the fastest decoder among those that qualify."""
    fitting = [m for m in models if req.satisfied_by(m)]
    if not fitting:
        return None
    return max(fitting, key=lambda m: (m.decode_tps or 0.0, m.name))

"""Adapter: an agent frozen by the runtime ⇄ the sections of a sealed snapshot.

Sections (see :mod:`meshagent.protocol.snapshot` for sealing):

``meta``     CBOR: ids, args, env, labels, rollbacks, status, plus the agent
             metadata that placement needs (owner, privacy class, policy)
``module``   the WebAssembly bytes — cacheable: omitted from the body when the
             receiver already holds its sha256 (it says so in ``Accept``)
``journal``  the journal (CBOR, the truth)
``image``    the memory image (CBOR), a cache; absent when there is none
``vfs``      the virtual files (CBOR)
``tool.<h>`` one per WASI tool the agent carries, ``<h>`` = the first 58 hex digits of
             its sha256 — cacheable like ``module``: omitted when the receiver
             already holds that tool (it then comes from the receiver's tool store)
``kv``       KV-cache blobs (CBOR map session → blob) — only sealed for a
             receiver that advertises the same model hash

Decoding happens only after the sealed bytes were authenticated, and still
goes through the strict codec with each section's declared size as its cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from meshagent.errors import DecodeError, HandoffError, MeshError, SealError
from meshagent.protocol import codec
from meshagent.protocol.signed import PeerId
from meshagent.protocol.snapshot import SUITE_X25519, SealedSnapshot, SnapshotHeader, seal_snapshot
from meshagent.runtime.snapshot import AgentSnapshot

if TYPE_CHECKING:
    from meshagent.node.identity import Identity

__all__ = ["AgentMeta", "FrozenAgent", "CACHEABLE", "TOOL_SECTION", "tool_section", "tool_prefix", "is_cacheable",
           "to_sections", "from_sections", "module_sha256_of", "seal_agent"]

CACHEABLE: Final = frozenset({"module"})
TOOL_SECTION: Final = "tool."
_TOOL_HEX: Final = 58
"""Section names are at most 64 characters: ``tool.`` + 58 hex digits of the tool's sha256."""


def tool_section(sha256: str) -> str:
    return TOOL_SECTION + sha256[:_TOOL_HEX]


def tool_prefix(section: str) -> str | None:
    """The sha256 prefix a ``tool.<h>`` section names, else ``None``."""
    if not section.startswith(TOOL_SECTION):
        return None
    prefix = section[len(TOOL_SECTION):]
    return prefix if len(prefix) == _TOOL_HEX and all(c in "0123456789abcdef" for c in prefix) else None


def is_cacheable(section: str) -> bool:
    """Sections a receiver may already hold by content hash (module, tools)."""
    return section in CACHEABLE or tool_prefix(section) is not None
PRIVACY_CLASSES: Final = ("private", "lan", "any")


@dataclass(frozen=True, slots=True)
class AgentMeta:
    """Who the agent belongs to and how it may be placed."""

    owner: str = ""
    privacy: str = "any"
    policy: str = "balanced"
    llm_models: tuple[str, ...] = ()
    """The sha256 of the model that answered each of the agent's LLM steps so far, in order:
    a receiver rebuilds each model's conversation from exactly the steps that model took."""


@dataclass(frozen=True, slots=True)
class FrozenAgent:
    """What the runtime hands over when it freezes an agent, and what it adopts."""

    snapshot: AgentSnapshot
    """Must carry the module bytes when frozen (the adapter drops them for a receiver that has them)."""
    meta: AgentMeta = field(default_factory=AgentMeta)
    kv_model_hash: str | None = None
    kv_blobs: tuple[tuple[str, bytes], ...] = ()

    @property
    def agent_id(self) -> str:
        return self.snapshot.agent_id


def module_sha256_of(agent: FrozenAgent) -> str:
    return agent.snapshot.module_sha256


def to_sections(agent: FrozenAgent, *, include_kv: bool) -> list[tuple[str, bytes]]:
    """The sections to seal; KV blobs only when ``include_kv`` (same model on the receiver)."""
    snap = agent.snapshot
    wire = snap.to_wire()
    meta = {k: v for k, v in wire.items() if k not in ("module", "journal", "image", "vfs", "tools")}
    meta.update(owner=agent.meta.owner, privacy=agent.meta.privacy, policy=agent.meta.policy,
                llm_models=list(agent.meta.llm_models),
                kv_model_hash=agent.kv_model_hash if include_kv else None)
    sections: list[tuple[str, bytes]] = [("meta", codec.encode(meta))]
    if snap.module is not None:
        sections.append(("module", snap.module))
    sections.append(("journal", snap.journal.encode()))
    if snap.image is not None:
        sections.append(("image", codec.encode(snap.image.to_wire())))
    sections.append(("vfs", codec.encode(snap.vfs.to_wire())))
    for sha, wasm in sorted(snap.tools.items()):
        sections.append((tool_section(sha), wasm))
    if include_kv and agent.kv_blobs:
        sections.append(("kv", codec.encode(dict(agent.kv_blobs))))
    return sections


def seal_agent(
    agent: FrozenAgent,
    identity: Identity,
    *,
    recipient: PeerId,
    recipient_key: bytes,
    generation: int,
    now: float,
    ttl_s: float,
    data_key: bytes,
    include_kv: bool = False,
    auction_id: str | None = None,
    suite: str = SUITE_X25519,
) -> SealedSnapshot:
    """Seal a frozen agent for ``recipient`` (iterate ``.container()`` for the bytes).

    For a backup, or to time sealing (``bench checkpoint``'s ``seal_s``), seal to
    yourself: ``recipient=identity.peer_id, recipient_key=identity.sealing_public``.
    ``suite`` is the HPKE suite: ``recipient_key`` must be the recipient's key
    of that suite (its hybrid key for ``SUITE_HYBRID``); the escrow copy is
    sealed to this node's own key of the same suite.
    """
    return seal_snapshot(
        signing_key=identity.signing_key,
        sender_sealing_key=identity.sealing_for(suite)[1],
        recipient=recipient,
        recipient_key=recipient_key,
        agent_id=agent.agent_id,
        generation=generation,
        sections=to_sections(agent, include_kv=include_kv),
        now=now,
        ttl_s=ttl_s,
        data_key=data_key,
        auction_id=auction_id,
        module_sha256=agent.snapshot.module_sha256,
        kv_model_hash=agent.kv_model_hash if include_kv else None,
        suite=suite,
    )


def _decode(name: str, data: bytes, depth: int) -> codec.Value:
    try:
        return codec.decode(data, max_size=max(1, len(data)), max_depth=depth)
    except DecodeError as exc:
        raise SealError(f"section {name!r} of an authenticated snapshot is malformed: {exc}") from exc


def from_sections(sections: Mapping[str, bytes], header: SnapshotHeader) -> FrozenAgent:
    """Rebuild the agent from opened sections; ``module`` may be absent (the receiver holds it)."""
    try:
        meta = _decode("meta", sections["meta"], 6)
        if not isinstance(meta, dict):
            raise SealError("the meta section must be a map")
        wire: dict[str | int, object] = dict(meta)
        for key in ("owner", "privacy", "policy", "kv_model_hash", "llm_models"):
            wire.pop(key, None)
        module = sections.get("module")
        if module is not None and hashlib.sha256(module).hexdigest() != header.module_sha256:
            raise SealError("the module section does not match the module sha256 in the signed header")
        wire["module"] = module
        wire["journal"] = _decode("journal", sections["journal"], 4)
        wire["image"] = _decode("image", sections["image"], 8) if "image" in sections else None
        wire["vfs"] = _decode("vfs", sections["vfs"], 2)
        tools: dict[str, bytes] = {}
        for name, wasm in sections.items():
            prefix = tool_prefix(name)
            if prefix is None:
                continue
            sha = hashlib.sha256(wasm).hexdigest()
            if not sha.startswith(prefix):
                raise SealError(f"section {name!r} does not hold the tool its name promises")
            tools[sha] = wasm
        wire["tools"] = tools
        snapshot = AgentSnapshot.from_wire(wire)
        kv: tuple[tuple[str, bytes], ...] = ()
        if "kv" in sections:
            blobs = _decode("kv", sections["kv"], 2)
            if not isinstance(blobs, dict) or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in blobs.items()):
                raise SealError("the kv section must map session names to blobs")
            kv = tuple(sorted(blobs.items()))  # type: ignore[arg-type]
    except KeyError as exc:
        raise SealError(f"snapshot lacks the {exc.args[0]!r} section") from exc
    except SealError:
        raise
    except MeshError as exc:
        raise HandoffError(f"snapshot of {header.agent_id} does not describe a valid agent: {exc}") from exc
    if snapshot.agent_id != header.agent_id or snapshot.module_sha256 != header.module_sha256:
        raise SealError("the snapshot's content does not match its signed header")
    privacy = meta.get("privacy", "any")
    llm_models = meta.get("llm_models", [])
    if not isinstance(llm_models, list) or not all(isinstance(m, str) and len(m) <= 64 for m in llm_models):
        raise SealError("llm_models in the meta section must be a list of model digests")
    return FrozenAgent(
        snapshot=snapshot,
        meta=AgentMeta(
            owner=str(meta.get("owner", "")),
            privacy=privacy if privacy in PRIVACY_CLASSES else "private",
            policy=str(meta.get("policy", "balanced")),
            llm_models=tuple(llm_models),  # type: ignore[arg-type]
        ),
        kv_model_hash=meta.get("kv_model_hash") if isinstance(meta.get("kv_model_hash"), str) else None,  # type: ignore[arg-type]
        kv_blobs=kv,
    )

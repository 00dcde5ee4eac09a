"""The one exception tree of meshagent.

Every error that meshagent raises on purpose derives from :class:`MeshError`.
Library exceptions (cbor2, cryptography, wasmtime, llama.cpp, libp2p) are
wrapped at the boundary with ``raise ... from exc`` so that callers only ever
need to catch this tree.

Protocol errors follow h11's split: a :class:`LocalProtocolError` means *we*
tried to do something the protocol forbids (a bug or a misuse of the API); a
:class:`RemoteProtocolError` means the *peer* sent something invalid, and the
right reaction is to drop the message, log it and keep running.
"""

from __future__ import annotations

__all__ = [
    "MeshError",
    "ConfigError",
    "IdentityError",
    "DuplicateIdentityError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "DecodeError",
    "FrameTooLarge",
    "SignatureError",
    "StaleError",
    "ExpiredError",
    "NodeError",
    "NodeNotRunning",
    "ControlError",
    "AgentError",
    "AgentNotFound",
    "ModuleError",
    "LinkError",
    "LimitExceeded",
    "CpuLimitExceeded",
    "MemoryLimitExceeded",
    "StackLimitExceeded",
    "OutputLimitExceeded",
    "JournalLimitExceeded",
    "WallClockLimitExceeded",
    "GuestMemoryError",
    "AgentTrap",
    "AgentExit",
    "DivergenceError",
    "JournalError",
    "CheckpointNotFound",
    "BuildError",
    "InferenceError",
    "ModelError",
    "ContextOverflow",
    "KVStateError",
    "SealError",
    "WrongRecipient",
    "DecompressionBomb",
    "HandoffError",
    "HandoffRejected",
    "AuctionError",
    "PrivacyViolation",
]


class MeshError(Exception):
    """Base of every error meshagent raises on purpose."""


class ConfigError(MeshError):
    """The configuration file or a command-line flag is invalid."""


class IdentityError(MeshError):
    """The node's key files are missing, unreadable or too widely readable."""


class DuplicateIdentityError(IdentityError):
    """Another live node uses this node's identity (for example a copied data dir)."""


# --- wire protocol ---------------------------------------------------------


class ProtocolError(MeshError):
    """A protocol rule was broken; see the Local/Remote subclasses."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol does not allow. Drop it and carry on."""


class DecodeError(RemoteProtocolError):
    """Bytes from the network or from disk could not be decoded."""


class FrameTooLarge(DecodeError):
    """A frame or document is larger than the limit declared for it."""


class SignatureError(RemoteProtocolError):
    """A signature did not verify, or was made by a key other than the claimed one."""


class StaleError(RemoteProtocolError):
    """A message repeats or goes behind one we already accepted (sequence or generation)."""


class ExpiredError(RemoteProtocolError):
    """A message arrived after its expiry time."""


# --- node --------------------------------------------------------------------


class NodeError(MeshError):
    """The node could not do what was asked."""


class NodeNotRunning(NodeError):
    """No node is running for this data directory."""


class ControlError(NodeError):
    """The local control API refused or failed a request."""


# --- agents and the sandbox --------------------------------------------------


class AgentError(MeshError):
    """An agent failed. The node and every other agent keep running."""


class AgentNotFound(AgentError):
    """No agent with that id is known to this node."""


class ModuleError(AgentError):
    """The WebAssembly module is corrupt or not a WASI preview 1 module."""


class LinkError(ModuleError):
    """The module imports a function that meshagent does not provide."""


class LimitExceeded(AgentError):
    """The agent went past one of its sandbox limits."""


class CpuLimitExceeded(LimitExceeded):
    """The agent used up its CPU budget (fuel); an infinite loop ends here."""


class MemoryLimitExceeded(LimitExceeded):
    """The agent tried to grow its linear memory or table past its limit."""


class StackLimitExceeded(LimitExceeded):
    """The agent overflowed its wasm stack (for example unbounded recursion)."""


class OutputLimitExceeded(LimitExceeded):
    """The agent wrote more to stdout/stderr than its limit allows."""


class JournalLimitExceeded(LimitExceeded):
    """The agent's journal grew past its limit."""


class WallClockLimitExceeded(LimitExceeded):
    """The agent ran (sleeps and joins included) for longer than the node lets one agent run at a stretch."""


class GuestMemoryError(AgentError):
    """The agent passed a pointer or length outside its own linear memory."""


class AgentTrap(AgentError):
    """The agent trapped (unreachable, division by zero, ...)."""


class AgentExit(AgentError):
    """Raised inside the sandbox to unwind on ``proc_exit``; carries the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"agent exited with code {code}")
        self.code = code


class DivergenceError(AgentError):
    """A replay asked for a different host call than the journal recorded."""


class JournalError(AgentError):
    """A journal is corrupt, truncated or forged."""


class CheckpointNotFound(AgentError):
    """A rollback named a checkpoint label the agent never reached on its current path."""


class BuildError(MeshError):
    """Compiling an agent failed."""


# --- inference -------------------------------------------------------------


class InferenceError(MeshError):
    """An inference engine failed."""


class ModelError(InferenceError):
    """A model file is missing, unreadable or not of the expected format."""


class ContextOverflow(InferenceError):
    """A prompt does not fit in the model's context window."""


class KVStateError(InferenceError):
    """A KV-cache blob is truncated, corrupt, or for another model or engine version."""


# --- snapshots, handoff, auctions -------------------------------------------


class SealError(RemoteProtocolError):
    """A sealed snapshot could not be verified or opened."""


class WrongRecipient(SealError):
    """A sealed snapshot was sealed for another peer (or another sealing key)."""


class DecompressionBomb(SealError):
    """A sealed section expanded past the size its signed header declared."""


class HandoffError(MeshError):
    """An agent handoff between peers failed; the agent stays where it was."""


class HandoffRejected(HandoffError):
    """The receiver refused the offer; ``reason`` is one of the handoff reject reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"handoff rejected: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


class AuctionError(MeshError):
    """A placement auction failed; the agent stays where it was."""


class PrivacyViolation(LocalProtocolError):
    """An action would move private data outside its privacy class."""

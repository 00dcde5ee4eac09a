"""Configuration: TOML files, overridden by command-line flags.

``config/default.toml`` documents every key. A node reads, in order: built-in
defaults, ``config/default.toml`` semantics (the same values), the file given
with ``--config`` or ``<data dir>/config.toml`` if present, then flags.

A configuration file never holds identity: keys live only in the data dir,
so copying a config file to another device never copies who a node is.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from meshagent.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "PROFILES",
    "SEALING_SUITES",
    "Config",
    "NodeConfig",
    "NetConfig",
    "SandboxLimits",
    "ModelConfig",
    "ApiConfig",
    "DEFAULT_API_PORT",
    "default_data_dir",
    "load_config",
]

DEFAULT_PORT: Final = 4737
"""Default libp2p TCP port; the next free port is used when it is taken."""

DEFAULT_API_PORT: Final = 4780
"""Default port of the OpenAI-compatible API and dashboard; when it is taken one of the next 20, else any free port."""

PROFILES: Final = ("phone", "pi", "laptop", "gpu", "cloud")

SEALING_SUITES: Final = ("x25519", "hybrid")
"""``[net] sealing_suite``: HPKE X25519, or the hybrid ML-KEM768-X25519 suite."""


def default_data_dir() -> Path:
    """Per-user data dir: ``$MESHAGENT_HOME``, else ``$XDG_DATA_HOME/meshagent``, else ``~/.local/share/meshagent``."""
    if env := os.environ.get("MESHAGENT_HOME"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meshagent"


def user_cache_dir() -> Path:
    """Per-user, per-machine cache shared by every node and command of this user:
    ``$XDG_CACHE_HOME/meshagent``, else ``~/.cache/meshagent`` (compiled modules, built
    agents and tools, model digests and measured throughput)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshagent"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str = ""
    """Human-readable node name shown to peers (default: the host name)."""
    profile: str = ""
    """Emulated device profile (phone, pi, laptop, gpu, cloud); empty = the real hardware."""
    tags: tuple[str, ...] = ()
    price_per_1k_tokens: float = 0.0
    """What this node charges per 1,000 generated tokens (0 for own devices)."""
    advert_interval_s: float = 3.0
    """How often the node republishes its advert."""
    advert_ttl_s: float = 12.0
    """How long an advert stays valid; a silent peer leaves tables after this. Adverts claiming a
    longer lifetime are refused (every node of a mesh should use the same value)."""
    report_grace_s: float = 30.0
    """A peer that won a step here and has not reported on it after 4x its promise plus this
    long is judged as having taken that long (its reliability factor rises)."""
    reputation_half_life_s: float = 600.0
    """Peers' reliability factors drift back towards 1, halving their distance from it this often."""


@dataclass(frozen=True, slots=True)
class NetConfig:
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    interface: str = ""
    """Restrict mDNS and advertised addresses to this interface (e.g. wlan0)."""
    max_frame_bytes: int = 1 << 20
    max_peers_exchanged: int = 64
    sealing_suite: str = "x25519"
    """HPKE suite for snapshots this node seals: ``x25519``, or ``hybrid`` (ML-KEM768-X25519; the node
    then also advertises its hybrid key and seals with it to every peer that advertises one)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-agent sandbox limits. Exceeding one ends that agent, never the node."""

    fuel: int = 20_000_000_000
    """CPU budget in wasmtime fuel units (about one per wasm instruction)."""
    memory_bytes: int = 256 << 20
    """Linear memory per agent; a refused memory.grow that ends the agent is a MemoryLimitExceeded."""
    table_elements: int = 100_000
    stack_bytes: int = 1 << 20
    """wasm stack per agent (wasmtime max_wasm_stack); unbounded recursion ends in StackLimitExceeded."""
    output_bytes: int = 1 << 20
    """Combined stdout + stderr."""
    journal_bytes: int = 64 << 20
    """Encoded size of the journal (host calls with their answers)."""
    max_instances: int = 4
    """Agents running at once on this node (execution slots); a parent waiting in mesh_join and an
    agent sleeping in poll_oneoff free their slot."""
    reserved_slots: int = 1
    """Slots kept for the agents of this node and its paired devices: agents of other owners
    (adopted from strangers) share the other ``max_instances - reserved_slots`` (at least one)."""
    owner_slots: int = 2
    """Slots the agents of one other owner may hold at once."""
    wall_clock_s: float = 3600.0
    """Longest an agent may run on this node at a stretch (sleeps and joins included), in seconds."""
    files_bytes: int = 64 << 20
    """The agent's files: its ``--dir`` copy plus everything it writes (at most 64 MiB)."""
    tool_memory_bytes: int = 256 << 20
    """Linear memory of one WASI tool run, whatever the agent's manifest asks for."""
    tool_fuel: int = 5_000_000_000
    """Fuel of one WASI tool run, whatever the manifest asks for; paid from the agent's own fuel."""
    log_bytes: int = 64 << 10
    """What one agent may write to the node's operator log through mesh_log (escaped; lines of at most 1,000 characters)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    path: str
    kind: str = "llm"
    """``llm`` (GGUF for llama.cpp) or ``embed`` (ONNX)."""
    tags: tuple[str, ...] = ()
    price_per_1k_tokens: float | None = None
    n_ctx: int = 4096
    n_gpu_layers: int = 0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The node's HTTP service: OpenAI-compatible API and dashboard (:mod:`meshagent.node.api`)."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    """Address to listen on; anything but loopback requires a bearer token."""
    port: int = DEFAULT_API_PORT
    """TCP port (0 = any free port); when taken, one of the next 20, else any free port."""
    token: str = ""
    """Bearer token for non-loopback binds; empty = generated into ``<data dir>/api.token`` (mode 0600)."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra names clients may give in the Host header (a reverse proxy's name); the loopback names, the
    bind address and, for a wildcard bind, this machine's addresses and host name are always allowed."""
    max_body_bytes: int = 4 << 20
    """Largest request body; a bigger one is refused as it arrives (413), never buffered."""
    max_event_streams: int = 32
    """Dashboard event streams open at once; the next one is refused (503)."""
    chat_retention_s: float = 0.0
    """How long a chat completion's agent (and with it the prompt) stays on this node once answered or
    abandoned; 0 = deleted as soon as the answer is sent."""


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    net: NetConfig = field(default_factory=NetConfig)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    api: ApiConfig = field(default_factory=ApiConfig)
    models: tuple[ModelConfig, ...] = ()
    source: str = "<defaults>"

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys of some sections replaced (used for CLI flags)."""
        updated: dict[str, Any] = {}
        for section, values in sections.items():
            current = getattr(self, section)
            updated[section] = replace(current, **{k: v for k, v in values.items() if v is not None})
        return replace(self, **updated)


_TOML_TYPES: Final = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _check_type(value: object, annotation: str, where: str, key: str) -> None:
    """Refuse a value of the wrong TOML type (``port = "x"``) with the key's name, before it is used."""
    kinds = [k.strip() for k in annotation.split("|")]
    if "None" in kinds and value is None:
        return
    for kind in kinds:
        if kind in _TOML_TYPES and isinstance(value, _TOML_TYPES[kind]) and (kind == "bool" or not isinstance(value, bool)):
            return
        if kind.startswith("tuple[str") and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            return
    wanted = " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
        k, "a list of strings") for k in kinds if k != "None")
    raise ConfigError(f"{where} {key} must be {wanted}, not {value!r}")


def _section(cls: type, raw: object, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, list):
            value = tuple(value)
        _check_type(value, str(known[key].type), where, key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: Path | None) -> Config:
    """Load ``path`` (or the built-in defaults when ``None``) and validate it."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = set(raw) - {"node", "net", "sandbox", "api", "models"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    models_raw = raw.get("models", [])
    if not isinstance(models_raw, list):
        raise ConfigError(f"{path}: [[models]] must be an array of tables")
    config = Config(
        node=_section(NodeConfig, raw.get("node"), f"{path} [node]"),
        net=_section(NetConfig, raw.get("net"), f"{path} [net]"),
        sandbox=_section(SandboxLimits, raw.get("sandbox"), f"{path} [sandbox]"),
        api=_section(ApiConfig, raw.get("api"), f"{path} [api]"),
        models=tuple(_section(ModelConfig, m, f"{path} [[models]]") for m in models_raw),
        source=str(path),
    )
    if config.node.profile and config.node.profile not in PROFILES:
        raise ConfigError(f"{path}: profile must be one of {', '.join(PROFILES)}")
    node = config.node
    for key, value, least in (("advert_interval_s", node.advert_interval_s, 0.0), ("advert_ttl_s", node.advert_ttl_s, 0.0),
                              ("reputation_half_life_s", node.reputation_half_life_s, 0.0)):
        if not value > least:
            raise ConfigError(f"{path}: [node] {key} must be above {least:g}, not {value}")
    if not node.report_grace_s >= 0:
        raise ConfigError(f"{path}: [node] report_grace_s must not be negative, not {node.report_grace_s}")
    _check_sandbox(config.sandbox, path)
    api = config.api
    if not all(isinstance(h, str) and h.strip() for h in api.allowed_hosts):
        raise ConfigError(f"{path}: [api] allowed_hosts must be a list of host names")
    for key, value, least in (("max_body_bytes", api.max_body_bytes, 1), ("max_event_streams", api.max_event_streams, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{path}: [api] {key} must be an integer of at least {least}, not {value!r}")
    if not isinstance(api.chat_retention_s, (int, float)) or isinstance(api.chat_retention_s, bool) \
            or not 0 <= api.chat_retention_s < float("inf"):
        raise ConfigError(f"{path}: [api] chat_retention_s must be a number of seconds, 0 or more, not {api.chat_retention_s!r}")
    if config.net.sealing_suite not in SEALING_SUITES:
        raise ConfigError(f"{path}: [net] sealing_suite must be one of {', '.join(SEALING_SUITES)}")
    return config


def _check_sandbox(limits: SandboxLimits, path: Path) -> None:
    for key in ("fuel", "memory_bytes", "table_elements", "stack_bytes", "output_bytes", "journal_bytes", "max_instances",
                "owner_slots", "files_bytes", "tool_memory_bytes", "tool_fuel"):
        value = getattr(limits, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{path}: [sandbox] {key} must be a positive integer, not {value!r}")
    for key in ("reserved_slots", "log_bytes"):
        value = getattr(limits, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: [sandbox] {key} must be an integer of at least 0, not {value!r}")
    wall = limits.wall_clock_s
    if not isinstance(wall, (int, float)) or isinstance(wall, bool) or not (math.isfinite(wall) and wall > 0):
        raise ConfigError(f"{path}: [sandbox] wall_clock_s must be a positive number of seconds, not {wall!r}")

"""Signed hardware adverts: what a node tells the mesh about itself.

An advert is a CBOR map inside a signed envelope (:mod:`meshagent.protocol.signed`)
of kind ``advert``. A receiver checks, in this order and before trusting any
field: the envelope's size and signature; that the payload's ``peer_id`` is the
signer's; that the sealing key carries a valid binding signature by the same
identity (and, when the advert carries a hybrid ML-KEM768-X25519 sealing key,
that it carries its own binding signature of kind ``sealing-key-pq/1``); that
the advert has not expired and was not issued in the future, and that its
lifetime (``expires_at - issued_at``) is no longer than the receiver allows.
Every number must be sane: times finite, rates finite and positive, prices
finite and non-negative, a battery level between 0 and 100, and every list
bounded. An advert that breaks one of these is refused whole, with the reason
(a peer that never expires or claims an infinite speed would otherwise stay in
every table and be invited to every auction).
Whether its sequence number is new is the peer table's business
(:mod:`meshagent.protocol.peers`).

A goodbye (kind ``goodbye``) is the signed last word of a node that shuts
down cleanly: peers drop it from their tables at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshagent.errors import DecodeError, ExpiredError, SignatureError
from meshagent.protocol import codec, signed
from meshagent.protocol.codec import Value, field as get, opt_field
from meshagent.protocol.signed import PeerId

__all__ = [
    "ADVERT_KIND",
    "GOODBYE_KIND",
    "SEALING_KEY_KIND",
    "SEALING_KEY_PQ_KIND",
    "PQ_SEALING_KEY_BYTES",
    "MAX_ADVERT_BYTES",
    "MAX_ADVERT_TTL_S",
    "MAX_ADVERT_ADDRS",
    "MAX_ADVERT_MODELS",
    "MAX_RATE_TPS",
    "MAX_CLOCK_SKEW_S",
    "ModelAd",
    "Hardware",
    "Advert",
    "Goodbye",
    "bind_sealing_key",
    "bind_pq_sealing_key",
    "encode_advert",
    "decode_advert",
    "encode_goodbye",
    "decode_goodbye",
]

ADVERT_KIND: Final = "advert/1"
GOODBYE_KIND: Final = "goodbye/1"
SEALING_KEY_KIND: Final = "sealing-key/1"
SEALING_KEY_PQ_KIND: Final = "sealing-key-pq/1"
PQ_SEALING_KEY_BYTES: Final = 1184 + 32
"""A hybrid sealing key: ML-KEM-768 public key (1184 bytes) | X25519 public key (32)."""
MAX_ADVERT_BYTES: Final = 64 * 1024
MAX_CLOCK_SKEW_S: Final = 30.0
"""Adverts issued further than this in the future are refused."""
MAX_ADVERT_TTL_S: Final = 600.0
"""The longest lifetime any advert may claim; a node passes its own configured TTL (shorter) to
:func:`decode_advert`."""
MAX_ADVERT_ADDRS: Final = 64
MAX_ADVERT_MODELS: Final = 64
MAX_RATE_TPS: Final = 1e7
"""The highest prefill or decode rate an advert may claim, in tokens per second (far above any
device): beyond it a claim is a lie meant to top every bidder list."""

_MAX_ITEMS: Final = 64
_MAX_INSTANCE: Final = 64
_TTL_SLACK_S: Final = 1e-3
"""``now + ttl - now`` is not exactly ``ttl`` in floating point."""
_MAX_STR: Final = 512


@dataclass(frozen=True, slots=True)
class ModelAd:
    name: str
    sha256: str
    size_bytes: int
    kind: str = "llm"
    parameters: int = 0
    quantization: str = ""
    n_ctx: int = 0
    tags: tuple[str, ...] = ()
    prefill_tps: float | None = None
    decode_tps: float | None = None


@dataclass(frozen=True, slots=True)
class Hardware:
    arch: str
    os: str
    cpu_model: str
    cpu_cores: int
    ram_total: int
    ram_free: int
    accelerators: tuple[str, ...] = ()
    """e.g. ``cuda:0 NVIDIA RTX 4090``, ``onnxruntime:CPUExecutionProvider``, ``llama.cpp:gpu-offload``."""
    battery_percent: float | None = None
    """None on devices without a battery."""
    on_battery: bool = False
    """True when running from the battery (not plugged in)."""


@dataclass(frozen=True, slots=True)
class Advert:
    peer_id: PeerId
    seq: int
    """Strictly increasing per identity, across restarts (it is a millisecond clock)."""
    issued_at: float
    expires_at: float
    name: str
    addrs: tuple[str, ...]
    hardware: Hardware
    sealing_key: bytes
    """X25519 public key (32 bytes) that snapshots for this node are sealed to."""
    sealing_key_sig: bytes
    """Signature by the node identity binding ``sealing_key`` to ``peer_id``."""
    instance: bytes
    """Random per process start: two live instances of one identity are a copied data dir."""
    started_at: float
    profile: str = ""
    emulated: bool = False
    """True when ``--profile`` overrides the real hardware (a lab or a demo)."""
    models: tuple[ModelAd, ...] = ()
    load: int = 0
    """Agents currently running on the node."""
    tags: tuple[str, ...] = ()
    price_per_1k_tokens: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
    sealing_key_pq: bytes = b""
    """Hybrid ML-KEM768-X25519 public key (1184 + 32 bytes) for the hybrid HPKE suite; empty when not offered."""
    sealing_key_pq_sig: bytes = b""
    """Signature by the node identity binding ``sealing_key_pq`` to ``peer_id`` (empty with it)."""


@dataclass(frozen=True, slots=True)
class Goodbye:
    peer_id: PeerId
    seq: int
    instance: bytes


def _binding_message(kind: str, sealing_public: bytes) -> bytes:
    return b"meshagent/" + kind.encode() + b"\x00" + sealing_public


def bind_sealing_key(sealing_public: bytes, key: Ed25519PrivateKey) -> bytes:
    """The signature that binds a sealing key to an identity (published in adverts)."""
    return key.sign(_binding_message(SEALING_KEY_KIND, sealing_public))


def bind_pq_sealing_key(hybrid_public: bytes, key: Ed25519PrivateKey) -> bytes:
    """The signature that binds a hybrid ML-KEM768-X25519 sealing key to an identity (its own kind)."""
    return key.sign(_binding_message(SEALING_KEY_PQ_KIND, hybrid_public))


def _check_sealing_binding(public_key: bytes, sealing_key: bytes, sig: bytes, kind: str = SEALING_KEY_KIND) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, _binding_message(kind, sealing_key))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"the advert's {kind} is not bound to its identity") from exc


def encode_advert(advert: Advert, key: Ed25519PrivateKey) -> bytes:
    payload = asdict(advert)
    payload["hardware"] = asdict(advert.hardware)
    payload["models"] = [asdict(m) for m in advert.models]
    return signed.sign(ADVERT_KIND, codec.encode(_listify(payload)), key)


def _listify(value: object) -> object:
    match value:
        case dict():
            return {k: _listify(v) for k, v in value.items()}
        case tuple() | list():
            return [_listify(v) for v in value]
        case _:
            return value


def decode_advert(
    blob: bytes, *, now: float, max_size: int = MAX_ADVERT_BYTES, max_ttl_s: float = MAX_ADVERT_TTL_S
) -> Advert:
    """Verify and decode an advert. Raises DecodeError, SignatureError or ExpiredError.

    ``max_ttl_s`` is the longest lifetime this receiver accepts (its own configured
    advert TTL): a longer one is refused, so a peer cannot stay in tables after it
    went silent for longer than the receiver allows.
    """
    env = signed.verify(blob, kind=ADVERT_KIND, max_size=max_size)
    m = codec.decode_map(env.payload, max_size=max_size, max_depth=6)
    peer_id = get(m, "peer_id", str)
    if peer_id != env.signer:
        raise SignatureError(f"advert for {peer_id} signed by {env.signer}")
    sealing_key = get(m, "sealing_key", bytes)
    sealing_sig = get(m, "sealing_key_sig", bytes)
    if len(sealing_key) != 32:
        raise DecodeError("sealing key must be 32 bytes")
    _check_sealing_binding(env.public_key, sealing_key, sealing_sig)
    pq_key = opt_field(m, "sealing_key_pq", bytes, b"")
    pq_sig = opt_field(m, "sealing_key_pq_sig", bytes, b"")
    if pq_key or pq_sig:
        if len(pq_key) != PQ_SEALING_KEY_BYTES:
            raise DecodeError(f"a hybrid sealing key must be {PQ_SEALING_KEY_BYTES} bytes")
        _check_sealing_binding(env.public_key, pq_key, pq_sig, SEALING_KEY_PQ_KIND)
    issued_at = _finite(get(m, "issued_at", float), "issued_at")
    expires_at = _finite(get(m, "expires_at", float), "expires_at")
    started_at = _finite(get(m, "started_at", float), "started_at")
    ttl = expires_at - issued_at
    if not 0.0 < ttl <= max_ttl_s + _TTL_SLACK_S:
        raise DecodeError(f"advert from {peer_id} claims a lifetime of {ttl:.1f} s; this node accepts 0 to {max_ttl_s:g} s")
    if expires_at <= now:
        raise ExpiredError(f"advert from {peer_id} expired {now - expires_at:.1f} s ago")
    if issued_at > now + MAX_CLOCK_SKEW_S:
        raise ExpiredError(f"advert from {peer_id} issued {issued_at - now:.1f} s in the future")
    hw = get(m, "hardware", dict)
    models = get(m, "models", list)
    if len(models) > MAX_ADVERT_MODELS:
        raise DecodeError(f"advert lists {len(models)} models; the limit is {MAX_ADVERT_MODELS}")
    addrs = get(m, "addrs", list)
    if len(addrs) > MAX_ADVERT_ADDRS:
        raise DecodeError(f"advert lists {len(addrs)} addresses; the limit is {MAX_ADVERT_ADDRS}")
    return Advert(
        peer_id=PeerId(peer_id),
        seq=_nonneg(get(m, "seq", int), "seq"),
        issued_at=issued_at,
        expires_at=expires_at,
        name=_short(get(m, "name", str)),
        addrs=_strs(addrs, "addrs"),
        hardware=_hardware(hw),
        sealing_key=sealing_key,
        sealing_key_sig=sealing_sig,
        instance=_instance(get(m, "instance", bytes)),
        started_at=started_at,
        profile=_short(opt_field(m, "profile", str, "")),
        emulated=opt_field(m, "emulated", bool, False),
        models=tuple(_model(x) for x in models),
        load=_nonneg(opt_field(m, "load", int, 0), "load"),
        tags=_strs(opt_field(m, "tags", list, []), "tags"),
        price_per_1k_tokens=_price(opt_field(m, "price_per_1k_tokens", float, 0.0), "price_per_1k_tokens"),
        extra=_extra(opt_field(m, "extra", dict, {})),
        sealing_key_pq=pq_key,
        sealing_key_pq_sig=pq_sig,
    )


def _hardware(m: dict[str | int, Value]) -> Hardware:
    battery = m.get("battery_percent")
    if battery is not None and (isinstance(battery, bool) or not isinstance(battery, (int, float))):
        raise DecodeError("battery_percent must be a number")
    if battery is not None and not 0.0 <= battery <= 100.0:  # also refuses NaN
        raise DecodeError(f"battery_percent must be between 0 and 100, not {battery!r}")
    return Hardware(
        arch=_short(get(m, "arch", str)),
        os=_short(get(m, "os", str)),
        cpu_model=_short(get(m, "cpu_model", str)),
        cpu_cores=_nonneg(get(m, "cpu_cores", int), "cpu_cores"),
        ram_total=_nonneg(get(m, "ram_total", int), "ram_total"),
        ram_free=_nonneg(get(m, "ram_free", int), "ram_free"),
        accelerators=_strs(opt_field(m, "accelerators", list, []), "accelerators"),
        battery_percent=None if battery is None else float(battery),
        on_battery=opt_field(m, "on_battery", bool, False),
    )


def _model(x: Value) -> ModelAd:
    if not isinstance(x, dict):
        raise DecodeError("model entry must be a map")
    p = x.get("prefill_tps")
    d = x.get("decode_tps")
    return ModelAd(
        name=_short(get(x, "name", str)),
        sha256=_short(get(x, "sha256", str)),
        size_bytes=_nonneg(get(x, "size_bytes", int), "size_bytes"),
        kind=_short(opt_field(x, "kind", str, "llm")),
        parameters=_nonneg(opt_field(x, "parameters", int, 0), "parameters"),
        quantization=_short(opt_field(x, "quantization", str, "")),
        n_ctx=_nonneg(opt_field(x, "n_ctx", int, 0), "n_ctx"),
        tags=_strs(opt_field(x, "tags", list, []), "tags"),
        prefill_tps=None if p is None else _rate(get(x, "prefill_tps", float), "prefill_tps"),
        decode_tps=None if d is None else _rate(get(x, "decode_tps", float), "decode_tps"),
    )


def _instance(b: bytes) -> bytes:
    if not 0 < len(b) <= _MAX_INSTANCE:
        raise DecodeError(f"instance must be 1 to {_MAX_INSTANCE} bytes")
    return b


def _finite(x: float, name: str) -> float:
    if not math.isfinite(x):
        raise DecodeError(f"{name} must be a finite number, not {x!r}")
    return x


def _rate(x: float, name: str) -> float:
    """A measured rate: finite, positive, and below what any device reaches."""
    if not 0.0 < x <= MAX_RATE_TPS:  # also refuses NaN
        raise DecodeError(f"{name} must be above 0 and at most {MAX_RATE_TPS:g} tokens/s, not {x!r}")
    return x


def _price(x: float, name: str) -> float:
    if not 0.0 <= x < math.inf:  # also refuses NaN
        raise DecodeError(f"{name} must be a finite price of 0 or more, not {x!r}")
    return x


def _short(s: str) -> str:
    if len(s) > _MAX_STR:
        raise DecodeError("string field too long")
    return s


def _nonneg(n: int, name: str) -> int:
    if n < 0 or n >= 1 << 63:
        raise DecodeError(f"{name} out of range")
    return n


def _strs(items: list[Value], name: str) -> tuple[str, ...]:
    if len(items) > _MAX_ITEMS:
        raise DecodeError(f"too many {name}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise DecodeError(f"{name} must be strings")
        out.append(_short(item))
    return tuple(out)


def _extra(m: dict[str | int, Value]) -> dict[str, str]:
    if len(m) > _MAX_ITEMS:
        raise DecodeError("too many extra fields")
    out: dict[str, str] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise DecodeError("extra fields must map strings to strings")
        out[_short(k)] = _short(v)
    return out


def encode_goodbye(goodbye: Goodbye, key: Ed25519PrivateKey) -> bytes:
    return signed.sign(GOODBYE_KIND, codec.encode(asdict(goodbye)), key)


def decode_goodbye(blob: bytes) -> Goodbye:
    env = signed.verify(blob, kind=GOODBYE_KIND, max_size=1024)
    m = codec.decode_map(env.payload, max_size=1024, max_depth=2)
    peer_id = get(m, "peer_id", str)
    if peer_id != env.signer:
        raise SignatureError(f"goodbye for {peer_id} signed by {env.signer}")
    return Goodbye(peer_id=PeerId(peer_id), seq=_nonneg(get(m, "seq", int), "seq"), instance=get(m, "instance", bytes))

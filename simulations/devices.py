"""Device classes and links of the simulated mesh, with the figures they are built from.

Every number here is documented with its source in ``simulations/README.md``
("Device and link parameters"). Speeds are quoted once per device for an 8B Q4
model (prompt processing ``pp`` and token generation ``tg``, llama.cpp's
``llama-bench`` terms) and scaled to other sizes by parameter count: decoding is
memory-bandwidth bound and prefill compute bound, so both fall roughly as
1/parameters. Small models do not speed up without limit (kernel launch and
sampling overheads), hence :data:`MAX_SPEEDUP`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshagent.protocol.advert import ModelAd

from simulations.models import MODELS, REFERENCE_PARAMS_B, model_sha256

__all__ = [
    "Link",
    "LINKS",
    "WAN",
    "DeviceClass",
    "DEVICE_CLASSES",
    "MAX_SPEEDUP",
    "ELECTRICITY_PER_KWH",
    "true_rates",
    "model_ads",
]

MAX_SPEEDUP: Final = 4.0
"""Most a smaller model runs faster than the 8B reference on the same device."""
ELECTRICITY_PER_KWH: Final = 0.30
"""Price of a kWh (USD) for devices that do not charge for their work."""


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    bytes_per_s: float
    """Usable throughput (goodput), bytes per second."""
    rtt_s: float
    """Round trip contributed by this hop."""


LINKS: Final[dict[str, Link]] = {
    "wifi": Link("wifi", 250e6 / 8, 0.004),
    "ethernet": Link("ethernet", 940e6 / 8, 0.0005),
    "lte": Link("lte", 10e6 / 8, 0.050),
    "datacenter": Link("datacenter", 10e9 / 8, 0.0005),
}
WAN: Final = Link("wan", 50e6 / 8, 0.030)
"""Home broadband to a cloud region or another site: the uplink bounds it."""


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    pp_tps_8b: float
    """Prefill tokens/s on the 8B Q4 reference model."""
    tg_tps_8b: float
    """Decode tokens/s on the 8B Q4 reference model."""
    sizes: tuple[str, ...]
    """Model sizes it holds (fits in memory)."""
    memory_gb: float
    power_w: float
    """Draw while running a step."""
    battery_wh: float | None
    price_per_1k_tokens: float
    """What a rented device charges (USD per 1k output tokens; prompt tokens at a tenth)."""
    slots: int
    link: str
    arch: str
    os: str


DEVICE_CLASSES: Final[dict[str, DeviceClass]] = {
    "phone": DeviceClass("phone", 40.0, 8.0, ("small", "medium"), 12, 6.0, 19.3, 0.0, 1, "wifi", "aarch64", "Android"),
    "pi": DeviceClass("pi", 10.0, 2.5, ("small", "medium"), 8, 7.0, None, 0.0, 1, "ethernet", "aarch64", "Linux"),
    "laptop": DeviceClass("laptop", 150.0, 18.0, ("small", "medium", "large"), 16, 22.0, 52.6, 0.0, 1, "wifi", "aarch64", "macOS"),
    "edge_gpu": DeviceClass("edge_gpu", 5000.0, 110.0, ("small", "medium", "large"), 24, 400.0, None, 0.0003, 2, "ethernet", "x86_64", "Linux"),
    "cloud_gpu": DeviceClass("cloud_gpu", 10000.0, 150.0, ("large", "xl"), 80, 700.0, None, 0.0006, 8, "datacenter", "x86_64", "Linux"),
}


def true_rates(cls: DeviceClass, size: str) -> tuple[float, float]:
    """(prefill, decode) tokens/s of ``cls`` on the model of this size."""
    speedup = min(REFERENCE_PARAMS_B / MODELS[size].params_b, MAX_SPEEDUP)
    return cls.pp_tps_8b * speedup, cls.tg_tps_8b * speedup


def model_ads(cls: DeviceClass, *, claim: float = 1.0) -> tuple[ModelAd, ...]:
    """The models a device of this class advertises; ``claim`` > 1 is a lie about its speed."""
    ads = []
    for size in cls.sizes:
        spec = MODELS[size]
        pp, tg = true_rates(cls, size)
        ads.append(
            ModelAd(
                name=spec.name,
                sha256=model_sha256(spec),
                size_bytes=spec.file_bytes,
                parameters=int(spec.params_b * 1e9),
                quantization="Q4_K_M",
                n_ctx=spec.n_ctx,
                tags=(f"size={size}",),
                prefill_tps=pp * claim,
                decode_tps=tg * claim,
            )
        )
    return tuple(ads)

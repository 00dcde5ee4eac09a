"""Emulated devices for demos, benchmarks and tests on one machine.

Each device class gets its own generated model (real llama.cpp GGUF files of
different sizes, seeded random weights) and a price, written into a
``config.toml`` in the device's data dir, so a ``meshagent join --data-dir D
--profile P`` process there behaves like that device in the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshagent.inference.tiny import TinyModelSpec, ensure_tiny_model

__all__ = ["DeviceModel", "DEVICE_MODELS", "DEVICE_PRICES", "write_device_config"]


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    size: str
    spec: TinyModelSpec


DEVICE_MODELS: Final[dict[str, tuple[DeviceModel, ...]]] = {
    "phone": (DeviceModel("tiny-chat", "tiny", TinyModelSpec(layers=2, dim=128, heads=4, ffn=256)),),
    "pi": (DeviceModel("tiny-chat", "tiny", TinyModelSpec(layers=2, dim=128, heads=4, ffn=256)),),
    "laptop": (DeviceModel("small-chat", "small", TinyModelSpec()),),
    "gpu": (DeviceModel("large-chat", "large", TinyModelSpec(layers=6, dim=384, heads=6, ffn=768)),),
    "cloud": (DeviceModel("large-chat", "large", TinyModelSpec(layers=6, dim=384, heads=6, ffn=768)),),
}

DEVICE_PRICES: Final[dict[str, float]] = {"phone": 0.0, "pi": 0.0, "laptop": 0.0, "gpu": 0.002, "cloud": 0.01}


def write_device_config(data_dir: Path, profile: str, models_dir: Path, *, extra_models: tuple[str, ...] = ()) -> Path:
    """Generate the profile's models (cached in ``models_dir``) and write ``data_dir/config.toml``.

    ``extra_models`` adds other profiles' models (e.g. a single node holding every model).
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["[node]", f'profile = "{profile}"', f"price_per_1k_tokens = {DEVICE_PRICES[profile]}", ""]
    seen: set[str] = set()
    for source in (profile, *extra_models):
        for m in DEVICE_MODELS[source]:
            if m.name in seen:
                continue
            seen.add(m.name)
            path = ensure_tiny_model(models_dir, m.spec)
            lines += ["[[models]]", f'name = "{m.name}"', f'path = "{path}"', f'tags = ["size={m.size}"]', "n_ctx = 4096", ""]
    config = data_dir / "config.toml"
    config.write_text("\n".join(lines))
    return config

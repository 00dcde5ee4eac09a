"""Probe the device this node runs on, or emulate a device profile.

The probe reads what the operating system reports (psutil, /proc/cpuinfo,
onnxruntime's execution providers, llama.cpp's GPU-offload support, CUDA
devices through ``nvidia-smi`` when present). ``--profile`` replaces the
probed capacity with a device class so a mesh of differing devices can be
emulated on one machine; such adverts are marked ``emulated``.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import replace
from typing import Final

import psutil

from meshagent.protocol.advert import Hardware

__all__ = ["probe_hardware", "emulate_profile", "PROFILE_HARDWARE", "PROFILE_SPEED"]

log = logging.getLogger(__name__)

_GIB: Final = 1 << 30

PROFILE_HARDWARE: Final[dict[str, Hardware]] = {
    # Figures for typical devices of each class; see simulations/README.md for sources.
    "phone": Hardware(
        arch="aarch64", os="Android", cpu_model="emulated phone SoC (8 cores)", cpu_cores=8,
        ram_total=8 * _GIB, ram_free=3 * _GIB, accelerators=("npu:emulated",),
        battery_percent=35.0, on_battery=True,
    ),
    "pi": Hardware(
        arch="aarch64", os="Linux", cpu_model="emulated Raspberry Pi 5 (Cortex-A76)", cpu_cores=4,
        ram_total=8 * _GIB, ram_free=6 * _GIB,
    ),
    "laptop": Hardware(
        arch="x86_64", os="Linux", cpu_model="emulated laptop CPU (8 cores)", cpu_cores=8,
        ram_total=16 * _GIB, ram_free=10 * _GIB, battery_percent=80.0, on_battery=False,
    ),
    "gpu": Hardware(
        arch="x86_64", os="Linux", cpu_model="emulated workstation CPU (16 cores)", cpu_cores=16,
        ram_total=64 * _GIB, ram_free=48 * _GIB, accelerators=("cuda:0 emulated 24 GiB GPU", "llama.cpp:gpu-offload"),
    ),
    "cloud": Hardware(
        arch="x86_64", os="Linux", cpu_model="emulated cloud instance (32 vCPU)", cpu_cores=32,
        ram_total=128 * _GIB, ram_free=100 * _GIB, accelerators=("cuda:0 emulated 80 GiB GPU", "llama.cpp:gpu-offload"),
    ),
}


PROFILE_SPEED: Final[dict[str, float]] = {
    # An emulated device computes at this fraction of the real machine's speed:
    # the node really slows its inference down (it sleeps after each step) and
    # advertises the slowed rates, so emulated timings stay honest. The machine
    # itself plays the fastest device.
    "phone": 0.2,
    "pi": 0.15,
    "laptop": 0.5,
    "gpu": 1.0,
    "cloud": 1.0,
}


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _accelerators() -> tuple[str, ...]:
    found: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout
            found += [f"cuda:{line.split(',')[0].strip()} {','.join(line.split(',')[1:]).strip()}" for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("nvidia-smi failed: %s", exc)
    try:
        import onnxruntime

        found += [f"onnxruntime:{p}" for p in onnxruntime.get_available_providers()]
    except ImportError:
        pass
    try:
        import llama_cpp

        if llama_cpp.llama_supports_gpu_offload():
            found.append("llama.cpp:gpu-offload")
    except (ImportError, OSError, AttributeError):
        pass
    return tuple(found)


def is_hot() -> bool:
    """Whether any thermal sensor is at or above its high mark (False where there are none)."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, NotImplementedError, OSError):
        return False
    return any(t.high and t.current >= t.high for readings in sensors.values() for t in readings)


def probe_hardware() -> Hardware:
    """What this device really has, right now."""
    vm = psutil.virtual_memory()
    battery_percent: float | None = None
    on_battery = False
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        battery = None
    if battery is not None:
        battery_percent = float(battery.percent)
        on_battery = not battery.power_plugged
    return Hardware(
        arch=platform.machine(),
        os=platform.system(),
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=vm.total,
        ram_free=vm.available,
        accelerators=_accelerators(),
        battery_percent=battery_percent,
        on_battery=on_battery,
    )


def emulate_profile(real: Hardware, profile: str) -> Hardware:
    """The advertised hardware of an emulated device profile.

    The software accelerators that really exist (onnxruntime providers) are
    kept, since the node really has them.
    """
    base = PROFILE_HARDWARE[profile]
    software = tuple(a for a in real.accelerators if a.startswith("onnxruntime:"))
    return replace(base, accelerators=base.accelerators + software)

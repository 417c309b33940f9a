"""Telemetry through NVML (nvidia-ml-py), the only module that imports it: discrete GPUs, not Jetson.

Jetson has no libnvidia-ml, so this serves development machines and x86 servers running the agent.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.telemetry.jetson import Telemetry

log = logging.getLogger(__name__)


def _pynvml() -> Any:
    import pynvml

    return pynvml


def nvml_available() -> tuple[bool, str]:
    try:
        nvml = _pynvml()
    except ImportError:
        return False, "nvidia-ml-py is not installed"
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
        nvml.nvmlShutdown()
    except nvml.NVMLError as exc:
        return False, f"NVML unavailable: {exc}"
    if count < 1:
        return False, "NVML finds no GPU"
    return True, ""


class NvmlSource:
    """Reads GPU 0 (the agent runs on a one-GPU machine)."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        self._nvml = _pynvml()
        self._nvml.nvmlInit()
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> Telemetry:
        nvml, handle = self._nvml, self._handle
        problems: list[str] = []
        load = memory = None
        temps: dict[str, float] = {}
        power: dict[str, float] = {}
        try:
            load = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            memory = self._memory_used()
            temps["gpu"] = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError as exc:
            problems.append(f"NVML read failed: {exc}")
        try:
            power["gpu"] = round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 3)  # milliwatts
        except nvml.NVMLError:
            problems.append("this GPU does not report power")
        return Telemetry("nvml", load, memory, temps, power, problems)

    def _memory_used(self) -> int:
        nvml = self._nvml
        try:  # v2 leaves out driver-reserved memory, matching nvidia-smi
            return int(nvml.nvmlDeviceGetMemoryInfo(self._handle, version=nvml.nvmlMemory_v2).used)
        except (AttributeError, TypeError, nvml.NVMLError):
            return int(nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("NVML shutdown: %s", exc)

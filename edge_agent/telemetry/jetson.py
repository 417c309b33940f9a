"""Jetson telemetry read straight from sysfs and procfs: no root service, no AGPL library.

Where an Orin on JetPack 6 (L4T 36) exposes what we need, all readable without root:

- GPU load, per-mille (0-1000): ``/sys/devices/platform/gpu.0/load``; older L4T used
  ``/sys/devices/gpu.0/load``; the devfreq node ``/sys/class/devfreq/17000000.gpu`` (``17000000.ga10b`` on
  JetPack 5) links to the same device, whose ``device/load`` is tried last.
- GPU memory: the GPU shares DRAM with the CPU; ``NvMapMemUsed`` in ``/proc/meminfo`` counts what the
  nvmap allocator handed out (CUDA buffers, TensorRT engines), in kB.
- Temperatures: ``/sys/class/thermal/thermal_zone*/{type,temp}`` in millidegrees. Orin's gpu-thermal
  reads -256000 (or fails with EINVAL) while the GPU is power-gated; such values are skipped, not shown.
- Power: INA3221 monitors under ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/``: ``inN_label`` (rail),
  ``inN_input`` (mV) and ``currN_input`` (mA). Not every module carries them (Orin Nano has one chip,
  AGX Orin two, some carrier boards none).

Every function takes ``root`` so tests point it at a fake tree laid out like a real board's. Nothing
here raises on a missing or garbled file: it returns what it could read plus the reasons for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

GPU_LOAD_FILES = (
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/17000000.ga10b/load",
)
GPU_DEVFREQ_GLOBS = ("sys/class/devfreq/*gpu*/device/load", "sys/class/devfreq/*ga10b*/device/load")
INA3221_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
THERMAL_GLOB = "sys/class/thermal/thermal_zone*"

_MIN_PLAUSIBLE_C = -40.0  # below the operating range: a gated or absent sensor, not a reading
_MAX_PLAUSIBLE_C = 150.0
_SKIPPED_RAIL_LABELS = ("sum of shunt voltages",)  # a derived channel, not a rail


@dataclass(frozen=True)
class Telemetry:
    source: str  # "sysfs", "jtop", "nvml" or "none"
    gpu_load: float | None = None  # 0..1
    gpu_memory_bytes: int | None = None
    temperatures: dict[str, float] = field(default_factory=dict)
    power_w: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why a value is missing, for the detail line

    def has_data(self) -> bool:
        scalars = self.gpu_load is not None or self.gpu_memory_bytes is not None
        return bool(scalars or self.temperatures or self.power_w)

    def detail(self) -> str:
        if self.source == "none":
            return "; ".join(self.problems) or "no telemetry source on this machine"
        return "; ".join(self.problems) if self.problems else "all readings present"

    def to_live(self) -> dict[str, Any]:
        """The LiveBoard "device" section."""
        return {
            "source": self.source,
            "gpu_load": self.gpu_load,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "temperatures": dict(self.temperatures),
            "power_w": dict(self.power_w),
            "detail": self.detail(),
        }


class TelemetrySource(Protocol):
    name: str

    def read(self) -> Telemetry: ...

    def close(self) -> None: ...


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


def _read_number(path: Path) -> float:
    """A sysfs number; raises ValueError (garbage) or OSError (missing, unreadable, EINVAL)."""
    text = _read_text(path)
    return float(int(text)) if re.fullmatch(r"-?\d+", text) else float(text)


def read_gpu_load(root: Path) -> tuple[float | None, str | None]:
    """GPU busy share 0..1 from the per-mille load file, or None and why."""
    candidates = [root / rel for rel in GPU_LOAD_FILES]
    for pattern in GPU_DEVFREQ_GLOBS:
        candidates += sorted(root.glob(pattern))
    tried_garbled = None
    for path in candidates:
        if not path.exists():
            continue
        try:
            value = _read_number(path)
        except (OSError, ValueError):
            tried_garbled = path
            continue
        if not 0 <= value <= 1000:
            tried_garbled = path
            continue
        return value / 1000.0, None
    if tried_garbled is not None:
        return None, f"GPU load file {tried_garbled.relative_to(root)} is unreadable or out of range"
    return None, "no GPU load file (not a Jetson, or sysfs not mounted)"


def read_gpu_memory(root: Path) -> tuple[int | None, str | None]:
    """Bytes the nvmap allocator holds, from ``NvMapMemUsed`` in /proc/meminfo."""
    meminfo = root / "proc/meminfo"
    try:
        text = meminfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None, "cannot read /proc/meminfo"
    match = re.search(r"^NvMapMemUsed:\s+(\d+)\s*kB\s*$", text, re.MULTILINE)
    if match is None:
        return None, "no NvMapMemUsed in /proc/meminfo (not a Jetson kernel)"
    return int(match.group(1)) * 1024, None


def read_temperatures(root: Path) -> tuple[dict[str, float], list[str]]:
    """Zone type -> degrees Celsius for every zone with a plausible reading."""
    temps: dict[str, float] = {}
    problems: list[str] = []
    for zone in sorted(root.glob(THERMAL_GLOB), key=lambda p: _zone_index(p.name)):
        try:
            name = _read_text(zone / "type") or zone.name
            celsius = _read_number(zone / "temp") / 1000.0
        except (OSError, ValueError):
            problems.append(f"thermal zone {zone.name} unreadable")
            continue
        if not _MIN_PLAUSIBLE_C <= celsius <= _MAX_PLAUSIBLE_C:
            continue  # e.g. gpu-thermal while the GPU is power-gated: no reading, not a problem
        name = _unique(name, temps)
        temps[name] = round(celsius, 2)
    if not temps and not problems:
        problems.append("no thermal zones")
    return temps, problems


def _zone_index(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else -1


def _unique(name: str, taken: dict[str, float]) -> str:
    if name not in taken:
        return name
    suffix = 2
    while f"{name}#{suffix}" in taken:
        suffix += 1
    return f"{name}#{suffix}"


def read_power(root: Path) -> tuple[dict[str, float], list[str]]:
    """Rail label -> watts from the INA3221 channels (voltage mV x current mA)."""
    power: dict[str, float] = {}
    problems: list[str] = []
    for hwmon in sorted(root.glob(INA3221_GLOB)):
        for label_file in sorted(hwmon.glob("in*_label")):
            channel = label_file.name[len("in") : -len("_label")]
            try:
                label = _read_text(label_file)
                if not label or label.lower() in _SKIPPED_RAIL_LABELS:
                    continue
                millivolts = _read_number(hwmon / f"in{channel}_input")
                milliamps = _read_number(hwmon / f"curr{channel}_input")
            except (OSError, ValueError):
                problems.append(f"power channel {channel} of {hwmon.parent.parent.name} unreadable")
                continue
            if millivolts < 0 or milliamps < 0:
                problems.append(f"power channel {label} reports a negative value")
                continue
            power[_unique(label, power)] = round(millivolts * milliamps / 1e6, 3)
    return power, problems


def is_jetson(root: Path) -> bool:
    """True where the Tegra sysfs is visible (load file, nvmap, or the device-tree says tegra)."""
    if any((root / rel).exists() for rel in GPU_LOAD_FILES):
        return True
    try:
        compatible = (root / "proc/device-tree/compatible").read_bytes()
    except OSError:
        return False
    return b"nvidia,tegra" in compatible or b"nvidia,p3" in compatible


def read_sysfs(root: Path) -> Telemetry:
    load, load_problem = read_gpu_load(root)
    memory, memory_problem = read_gpu_memory(root)
    temps, temp_problems = read_temperatures(root)
    power, power_problems = read_power(root)
    problems = [p for p in (load_problem, memory_problem) if p] + temp_problems + power_problems
    if not power and not power_problems:
        problems.append("no INA3221 power monitor on this board")
    return Telemetry("sysfs", load, memory, temps, power, problems)


class SysfsSource:
    name = "sysfs"

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def read(self) -> Telemetry:
        return read_sysfs(self.root)

    def close(self) -> None:
        pass


class NoSource:
    """Stands in where nothing can be read, so the metric says ``source="none"`` with a reason."""

    name = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def read(self) -> Telemetry:
        return Telemetry("none", problems=[self.reason])

    def close(self) -> None:
        pass

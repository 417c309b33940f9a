"""Telemetry through jetson-stats (jtop), the only module that imports it.

Used only when sysfs gives nothing (a container without /sys bind mounts) and the jtop service's
socket exists: jtop needs its root service, so a missing service must never delay the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.telemetry.jetson import Telemetry

log = logging.getLogger(__name__)

JTOP_SOCKET = Path("/run/jtop.sock")


def jtop_available(socket: Path = JTOP_SOCKET) -> tuple[bool, str]:
    if not socket.exists():
        return False, f"jtop service socket {socket} absent"
    try:
        import jtop  # noqa: F401
    except ImportError:
        return False, "jetson-stats is not installed (pip install 'edge-agent[jetson]')"
    return True, ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def telemetry_from_jtop(
    gpu: Mapping[str, Any],
    temperature: Mapping[str, Any],
    power: Mapping[str, Any],
    memory: Mapping[str, Any],
) -> Telemetry:
    """Pure translation of jtop 4.x's ``gpu``, ``temperature``, ``power`` and ``memory`` dicts."""
    problems: list[str] = []
    load = None
    for info in gpu.values():
        status = _mapping(_mapping(info).get("status"))
        if isinstance(status.get("load"), (int, float)):
            load = max(0.0, min(1.0, float(status["load"]) / 100.0))  # jtop reports percent
            break
    if load is None:
        problems.append("jtop reports no GPU load")
    temps = {
        name: round(float(t["temp"]), 2)
        for name, t in temperature.items()
        if isinstance(t, Mapping) and t.get("online", True) and isinstance(t.get("temp"), (int, float))
        and -40.0 <= float(t["temp"]) <= 150.0
    }
    rails = _mapping(power.get("rail"))
    watts = {
        name: round(float(r["power"]) / 1000.0, 3)  # milliwatts
        for name, r in rails.items()
        if isinstance(r, Mapping) and r.get("online", True) and isinstance(r.get("power"), (int, float))
    }
    shared = _mapping(memory.get("RAM")).get("shared")
    gpu_memory = int(shared) * 1024 if isinstance(shared, (int, float)) else None  # kB, NvMap share
    return Telemetry("jtop", load, gpu_memory, temps, watts, problems)


class JtopSource:
    name = "jtop"

    def __init__(self) -> None:
        from jtop import jtop  # guarded by jtop_available()

        self._jetson = jtop()
        self._jetson.start()  # connects to the service socket; raises JtopException when refused

    def read(self) -> Telemetry:
        if not self._jetson.ok(spin=False):
            return Telemetry("jtop", problems=["jtop service stopped answering"])
        j = self._jetson
        return telemetry_from_jtop(j.gpu, j.temperature, j.power, j.memory)

    def close(self) -> None:
        try:
            self._jetson.close()
        except Exception as exc:  # jtop raises its own untyped errors on a dead socket
            log.debug("closing jtop: %s", exc)

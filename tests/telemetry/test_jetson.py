"""Jetson sysfs telemetry against a fake tree laid out like an Orin Nano on JetPack 6 (L4T 36)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.telemetry.component import TelemetryComponent, choose_source, record
from edge_agent.telemetry.jetson import (
    NoSource,
    SysfsSource,
    Telemetry,
    read_gpu_load,
    read_gpu_memory,
    read_power,
    read_sysfs,
    read_temperatures,
)
from edge_agent.telemetry.jtop_source import jtop_available, telemetry_from_jtop

ORIN_ZONES = [  # (type, millidegrees) as an Orin Nano lists them; gpu-thermal reads -256 °C while gated
    ("cpu-thermal", "48500"),
    ("gpu-thermal", "-256000"),
    ("cv0-thermal", "46031"),
    ("cv1-thermal", "46218"),
    ("cv2-thermal", "45812"),
    ("soc0-thermal", "47250"),
    ("soc1-thermal", "46875"),
    ("soc2-thermal", "46593"),
    ("tj-thermal", "49000"),
]
ORIN_RAILS = [  # channel, label, mV, mA (INA3221 at 1-0040 on the Orin Nano module)
    (1, "VDD_IN", "5072", "1384"),
    (2, "VDD_CPU_GPU_CV", "5064", "384"),
    (3, "VDD_SOC", "5064", "480"),
]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def make_orin(root: Path, load: str = "523") -> Path:
    write(root / "sys/devices/platform/gpu.0/load", load)
    write(
        root / "proc/meminfo",
        "MemTotal:        7620440 kB\nMemFree:         3122008 kB\n"
        "NvMapMemUsed:     204800 kB\nNvMapMemFree:      10240 kB\n",
    )
    for index, (kind, temp) in enumerate(ORIN_ZONES):
        write(root / f"sys/class/thermal/thermal_zone{index}/type", kind)
        write(root / f"sys/class/thermal/thermal_zone{index}/temp", temp)
    hwmon = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    for channel, label, mv, ma in ORIN_RAILS:
        write(hwmon / f"in{channel}_label", label)
        write(hwmon / f"in{channel}_input", mv)
        write(hwmon / f"curr{channel}_input", ma)
    write(hwmon / "in7_label", "sum of shunt voltages")
    write(hwmon / "in7_input", "1234")
    write(root / "proc/device-tree/compatible", "nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    return root


def test_orin_tree_parses_to_load_memory_temperatures_and_rails(tmp_path: Path) -> None:
    reading = read_sysfs(make_orin(tmp_path))
    assert reading.source == "sysfs"
    assert reading.gpu_load == pytest.approx(0.523)
    assert reading.gpu_memory_bytes == 204800 * 1024
    assert reading.temperatures["cpu-thermal"] == 48.5
    assert reading.temperatures["tj-thermal"] == 49.0
    assert "gpu-thermal" not in reading.temperatures  # gated sensor: no reading rather than -256 °C
    assert len(reading.temperatures) == 8
    assert reading.power_w == {
        "VDD_IN": pytest.approx(7.0196, abs=1e-3),
        "VDD_CPU_GPU_CV": pytest.approx(1.9446, abs=1e-3),
        "VDD_SOC": pytest.approx(2.4307, abs=1e-3),
    }
    assert reading.problems == []
    assert reading.to_live()["detail"] == "all readings present"


def test_devfreq_load_is_used_when_the_platform_file_is_absent(tmp_path: Path) -> None:
    write(tmp_path / "sys/class/devfreq/17000000.gpu/device/load", "1000")
    assert read_gpu_load(tmp_path) == (1.0, None)


@pytest.mark.parametrize("content", ["garbage", "", "1500", "-3", "\x00\xff"])
def test_garbled_gpu_load_gives_none_and_a_reason(tmp_path: Path, content: str) -> None:
    write(tmp_path / "sys/devices/platform/gpu.0/load", content)
    load, reason = read_gpu_load(tmp_path)
    assert load is None
    assert reason is not None and "unreadable or out of range" in reason


def test_missing_everything_gives_reasons_not_a_crash(tmp_path: Path) -> None:
    reading = read_sysfs(tmp_path)
    assert not reading.has_data()
    text = reading.detail()
    assert "no GPU load file" in text and "/proc/meminfo" in text and "no thermal zones" in text
    assert "no INA3221" in text


def test_meminfo_without_nvmap_says_not_a_jetson_kernel(tmp_path: Path) -> None:
    write(tmp_path / "proc/meminfo", "MemTotal: 100 kB\nNvMapMemUsed: lots\n")
    assert read_gpu_memory(tmp_path) == (None, "no NvMapMemUsed in /proc/meminfo (not a Jetson kernel)")


def test_garbled_thermal_and_power_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    make_orin(tmp_path)
    write(tmp_path / "sys/class/thermal/thermal_zone0/temp", "hot")
    (tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr2_input").unlink()
    write(tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/in3_input", "-5")
    temps, temp_problems = read_temperatures(tmp_path)
    power, power_problems = read_power(tmp_path)
    assert "cpu-thermal" not in temps and temp_problems == ["thermal zone thermal_zone0 unreadable"]
    assert list(power) == ["VDD_IN"]
    assert any("channel 2" in p for p in power_problems)
    assert any("VDD_SOC reports a negative value" in p for p in power_problems)


def test_duplicate_zone_names_are_kept_apart(tmp_path: Path) -> None:
    for index in range(2):
        write(tmp_path / f"sys/class/thermal/thermal_zone{index}/type", "soc-thermal")
        write(tmp_path / f"sys/class/thermal/thermal_zone{index}/temp", str(40000 + index * 1000))
    temps, _ = read_temperatures(tmp_path)
    assert temps == {"soc-thermal": 40.0, "soc-thermal#2": 41.0}


def test_orin_tree_is_chosen_as_the_sysfs_source(tmp_path: Path) -> None:
    source = choose_source(make_orin(tmp_path))
    assert isinstance(source, SysfsSource)


def test_no_source_says_why(tmp_path: Path) -> None:
    source = choose_source(tmp_path)
    if source.name == "nvml":  # a development machine with a discrete GPU and nvidia-ml-py
        pytest.skip("NVML is available here")
    assert isinstance(source, NoSource)
    assert "no Jetson sysfs" in source.reason and "jtop service socket" in source.reason
    reading = source.read()
    assert reading.source == "none" and reading.to_live()["source"] == "none"


def test_jtop_needs_its_socket(tmp_path: Path) -> None:
    ok, why = jtop_available(tmp_path / "run/jtop.sock")
    assert not ok and "absent" in why


def test_jtop_dicts_translate_to_telemetry() -> None:
    reading = telemetry_from_jtop(
        gpu={"gpu": {"type": "integrated", "status": {"load": 37.5, "railgate": False}}},
        temperature={"cpu": {"online": True, "temp": 47.2}, "gpu": {"online": False, "temp": -256.0}},
        power={
            "rail": {"VDD_IN": {"online": True, "volt": 5072, "curr": 1384, "power": 7019}},
            "tot": {"power": 7019},
        },
        memory={"RAM": {"tot": 7620440, "used": 3000000, "shared": 204800}},
    )
    assert reading == Telemetry("jtop", 0.375, 204800 * 1024, {"cpu": 47.2}, {"VDD_IN": 7.019}, [])


def test_jtop_dicts_with_unexpected_shapes_do_not_crash() -> None:
    reading = telemetry_from_jtop({"gpu": "busy"}, {"cpu": 5}, {"rail": []}, {"RAM": None})
    assert reading.gpu_load is None and reading.problems == ["jtop reports no GPU load"]


def test_record_sets_gauges_and_the_device_section(tmp_path: Path) -> None:
    live = LiveBoard()
    record(read_sysfs(make_orin(tmp_path, load="250")), live)
    assert metrics.sample("edge_gpu_utilisation_ratio") == 0.25
    assert metrics.sample("edge_gpu_memory_used_bytes") == 204800 * 1024
    assert metrics.sample("edge_soc_temperature_celsius", {"zone": "tj-thermal"}) == 49.0
    assert metrics.sample("edge_power_watts", {"rail": "VDD_IN"}) == pytest.approx(7.0196, abs=1e-3)
    assert metrics.sample("edge_telemetry_source", {"source": "sysfs"}) == 1.0
    assert metrics.sample("edge_telemetry_source", {"source": "none"}) == 0.0
    device = live.get("device")
    assert device["source"] == "sysfs" and device["gpu_load"] == 0.25
    assert set(device) >= {"gpu_memory_bytes", "temperatures", "power_w", "detail"}


def test_a_value_missing_from_a_reading_is_not_left_at_its_last_value(tmp_path: Path) -> None:
    record(read_sysfs(make_orin(tmp_path, load="730")), None)
    assert metrics.sample("edge_gpu_utilisation_ratio") == 0.73
    assert metrics.sample("edge_soc_temperature_celsius", {"zone": "tj-thermal"}) == 49.0
    record(Telemetry("sysfs", temperatures={"cpu-thermal": 50.0}, problems=["GPU load unreadable"]), None)
    assert math.isnan(metrics.sample("edge_gpu_utilisation_ratio"))  # not 0.73, which looked healthy
    assert math.isnan(metrics.sample("edge_gpu_memory_used_bytes"))
    assert metrics.REGISTRY.get_sample_value("edge_soc_temperature_celsius", {"zone": "tj-thermal"}) is None
    assert metrics.sample("edge_soc_temperature_celsius", {"zone": "cpu-thermal"}) == 50.0
    record(Telemetry("none"), None)  # a machine with no telemetry: nothing, rather than 0 % GPU
    assert math.isnan(metrics.sample("edge_gpu_utilisation_ratio"))


def test_component_polls_in_a_thread_beats_and_stops(tmp_path: Path) -> None:
    root = make_orin(tmp_path, load="100")
    live = LiveBoard()
    beats = HeartbeatRegistry()
    component = TelemetryComponent(0.5, live, beats, root=root)

    async def scenario() -> None:
        started = time.monotonic()
        await component.start()
        assert time.monotonic() - started < 0.5  # start-up never waits for a source
        deadline = time.monotonic() + 5
        while live.get("device") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        write(root / "sys/devices/platform/gpu.0/load", "900")
        while (live.get("device") or {}).get("gpu_load") != 0.9 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert beats.stale() == []
        assert component.health().ok and "source sysfs" in component.health().detail
        await component.stop()

    asyncio.run(scenario())
    assert live.get("device")["gpu_load"] == 0.9
    assert metrics.sample("edge_gpu_utilisation_ratio") == 0.9
    assert beats.stale() == []  # unregistered on stop: a stopped worker must not starve the watchdog


def test_component_survives_a_failing_source() -> None:
    class Broken:
        name = "sysfs"

        def read(self) -> Telemetry:
            raise OSError("sysfs vanished")

        def close(self) -> None:
            pass

    live = LiveBoard()
    component = TelemetryComponent(0.5, live, HeartbeatRegistry(), source_factory=Broken)

    async def scenario() -> None:
        await component.start()
        deadline = time.monotonic() + 5
        while live.get("device") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await component.stop()

    asyncio.run(scenario())
    assert "read failed: sysfs vanished" in live.get("device")["detail"]


def test_nvml_source_reads_a_real_gpu_where_there_is_one() -> None:
    from edge_agent.telemetry.nvml_source import NvmlSource, nvml_available

    ok, why = nvml_available()
    if not ok:
        assert why  # says why (package missing, no driver, no GPU)
        pytest.skip(why)
    source = NvmlSource()
    try:
        reading = source.read()
    finally:
        source.close()
    assert reading.source == "nvml" and reading.gpu_load is not None and 0.0 <= reading.gpu_load <= 1.0
    assert reading.gpu_memory_bytes is not None and "gpu" in reading.temperatures

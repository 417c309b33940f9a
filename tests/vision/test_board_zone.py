"""The board's time zone: the system's, followed when it changes under a running daemon; doctor's warning
for a board left on UTC; and the ``device.timezone`` names that are no place."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edge_agent import doctor
from edge_agent.config import parse_config
from edge_agent.errors import ConfigError
from edge_agent.vision.camera_hours import CameraHours, board_clock, zone_name

ZONES = Path("/usr/share/zoneinfo")


def test_a_system_zone_changed_under_a_running_daemon_moves_its_clock_and_zone_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `timedatectl set-timezone Asia/Shanghai` re-points /etc/localtime; $TZ naming a link is read alike
    link = tmp_path / "localtime"
    link.symlink_to(ZONES / "Etc/UTC")
    monkeypatch.setenv("TZ", str(link))
    clock = board_clock("")  # built once at the start, as the camera's hours and the heartbeat do
    assert (clock().utcoffset(), zone_name("")) == (dt.timedelta(0), "Etc/UTC")
    link.unlink()
    link.symlink_to(ZONES / "Asia/Shanghai")
    assert (clock().utcoffset(), zone_name("")) == (dt.timedelta(hours=8), "Asia/Shanghai")
    # a zone file copied over in place (no link): its new contents count too
    link.unlink()
    link.write_bytes((ZONES / "Europe/Berlin").read_bytes())
    assert clock().utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))
    assert zone_name("") is None  # a copy names no zone


@pytest.mark.parametrize("zone", ["Europe/London", "Europe/Lisbon", "Atlantic/Reykjavik", "Africa/Accra"])
def test_a_system_zone_at_utc_0_that_is_a_place_is_no_reason_to_set_device_timezone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, zone: str
) -> None:
    hours = CameraHours.parse(["mon-fri 08:00-16:00"])
    link = tmp_path / "localtime"
    link.symlink_to(ZONES / zone)
    monkeypatch.setenv("TZ", str(link))  # the board's /etc/localtime, as doctor reads it
    winter = board_clock("")().replace(2026, 12, 7, 9, 0)
    assert winter.utcoffset() == dt.timedelta(0)
    assert not doctor.check_camera_hours(hours, winter, zone_set=False).warning


@pytest.mark.parametrize("zone", ["Etc/UTC", "UTC", "Etc/UCT", "Universal", "Zulu", "GMT", "Etc/Greenwich"])
def test_a_system_zone_that_is_utc_itself_still_asks_for_device_timezone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, zone: str
) -> None:
    hours = CameraHours.parse(["mon-fri 08:00-16:00"])
    link = tmp_path / "localtime"
    link.symlink_to(ZONES / zone)
    monkeypatch.setenv("TZ", str(link))
    result = doctor.check_camera_hours(hours, board_clock("")(), zone_set=False)
    assert result.warning and "device.timezone" in result.fix


@pytest.mark.parametrize(
    "zone", ["posix/Asia/Shanghai", "right/Europe/Berlin", "localtime", "posixrules", "Factory"]
)
def test_tzdata_files_that_are_no_place_are_refused_as_device_timezone(zone: str) -> None:
    # config check passed them; the heartbeat then sent "posix/Asia/Shanghai" as the school's zone and the
    # teacher view's browser refused it, silently showing its own zone
    with pytest.raises(ConfigError, match="use an IANA name such as Asia/Shanghai"):
        parse_config(f'[device]\ntimezone = "{zone}"\n[camera]\nenabled = false\n')

"""The attention component end to end on real photos, a real outbox, and the privacy proof."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import pytest

from edge_agent.config import AttentionSettings, CameraSettings, DeviceSettings, MqttSettings, StoreSettings
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database, set_meta
from edge_agent.store.history import History
from edge_agent.store.outbox import Outbox
from edge_agent.telemetry import metrics
from edge_agent.vision import pipeline
from edge_agent.vision.attention import summarise
from edge_agent.vision.component import OPEN_WINDOW_KEY, AttentionComponent, _forget_open_window
from edge_agent.vision.sources import open_source

WINDOW_KEYS = {"start", "end", "frames", "frames_expected", "faces_mean", "faces_max", "attentive_mean",
               "attentive_p10", "attentive_median", "suppressed", "low", "kind", "v", "pose_method",
               "class_id", "min_faces"}
IMAGE_SIGNATURES = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]
BASE64_SIGNATURES = [base64.b64encode(b"\xff\xd8\xff")[:4], base64.b64encode(b"\x89PNG\r\n\x1a\n")[:8]]


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _folder_opener(folder: Path):
    return lambda stop: open_source(str(folder), stop=stop, folder_fps=20.0)


def _numbers_in(value: Any) -> list[int]:
    """Lengths of every list in a JSON value (pixel arrays would be long lists of numbers)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers_in(v)]
    if isinstance(value, list):
        return [len(value)] + [n for v in value for n in _numbers_in(v)]
    return []


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return list(value) + [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return [value] if isinstance(value, str) else []


def _assert_no_image_data(blob: bytes, where: str) -> None:
    for signature in IMAGE_SIGNATURES + BASE64_SIGNATURES:
        assert signature not in blob, f"image signature {signature!r} found in {where}"


@pytest.fixture()
def photo_folder(tmp_path: Path, faces_dir: Path) -> Path:
    folder = tmp_path / "camera"
    folder.mkdir()
    for path in [*sorted((faces_dir / "pexels").glob("*.jpg")), faces_dir / "crowd" / "crowd_spectators.jpg"]:
        shutil.copy(path, folder / path.name)
    return folder


def test_pipeline_on_real_photos_stores_only_class_numbers(
    photo_folder, state_dir, face_engine, pose_engines, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(pipeline, "KEEP_OPEN_WINDOW_EVERY_S", 0.2)  # the open window stored, as for a cut
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    outbox.open()
    live = LiveBoard()
    beats = HeartbeatRegistry()
    analysed0 = _value("edge_camera_frames_analysed_total")
    pre0 = _value("edge_inference_latency_seconds_count", engine="yunet", stage="pre")
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0),
        AttentionSettings(window_s=5.0, min_faces=1),
        face_engine, pose_engines, outbox=outbox, heartbeats=beats, live=live,
        opener=_folder_opener(photo_folder), db=db,
    )
    stored: list[dict[str, Any]] = []

    async def run() -> None:
        await component.start()
        await wait_for(lambda: _open_window(db) is not None)
        stored.append(_open_window(db))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while _value("edge_camera_frames_analysed_total") < analysed0 + 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert component.health().ok, component.health().detail
        assert "attention" in beats._beats and beats.stale() == []
        camera_threads = {
            t.name.split("_")[0]: os.getpriority(os.PRIO_PROCESS, t.native_id)
            for t in threading.enumerate()
            if t.name in ("attention-analysis", "camera-grabber") or t.name.startswith("fsanet")
        }
        await component.stop()
        if sys.platform == "linux":  # answers first: camera work yields the CPU (attention.nice = 10)
            base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            lowered = max(10, base)
            names = ("attention-analysis", "camera-grabber", "fsanet")
            assert camera_threads == dict.fromkeys(names, lowered)

    asyncio.run(run())
    assert "attention" not in beats._beats
    assert _value("edge_inference_latency_seconds_count", engine="yunet", stage="pre") >= pre0 + 8
    assert _value("edge_camera_analysis_fps") > 0
    db.write(lambda _conn: None).result(5)  # the writer is FIFO: the stop's window is committed now
    rows = db.read(lambda conn: conn.execute("SELECT stream, payload FROM outbox").fetchall())
    db.close()
    assert rows, "stopping flushes the open window into the outbox"
    kept = stored[-1]  # the open window as stored: counts and shares, with how many frames had each
    assert set(kept) == {"window_s", "start", "last_t", "faces", "shares"}
    assert all(len(pair) == 2 and isinstance(pair[1], int) for pair in kept["faces"] + kept["shares"])
    assert all(isinstance(pair[0], int) for pair in kept["faces"])
    assert all(isinstance(pair[0], float) and 0 <= pair[0] <= 1 for pair in kept["shares"])
    assert json.loads(rows[-1][1])["partial"] is True  # the window the stop cut short says so
    for stream, text in rows:
        assert stream == "attention"
        payload = json.loads(text)
        assert set(payload) - {"partial"} == WINDOW_KEYS
        assert payload["frames"] >= 1 and payload["faces_max"] >= 1
        assert payload["attentive_mean"] is None or 0.0 <= payload["attentive_mean"] <= 1.0
        assert _numbers_in(payload) == []
        assert max(len(s) for s in _strings_in(payload)) < 40
        _assert_no_image_data(text.encode(), "an outbox payload")

    section = live.get("attention")
    # "stopped", not "disabled" (which the page read as the camera switched off, no problem)
    assert section["camera"]["state"] == "stopped" and section["pose_method"] == "fsanet"
    assert section["camera"]["detail"] == "attention analysis stopped: edge-agent is stopping or restarting"
    assert max(_numbers_in(section), default=0) <= 120  # the timeline list, nothing pixel-sized
    assert all(set(w) <= WINDOW_KEYS | {"partial"} for w in section["timeline"])
    _assert_no_image_data(json.dumps(section).encode(), "the live board")

    total = 0
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            total += len(data)
            _assert_no_image_data(data, str(path))
    assert total < 1024 * 1024, "the state directory grew like it holds pictures"
    logs = "\n".join(record.getMessage() for record in caplog.records)
    _assert_no_image_data(logs.encode(), "the logs")
    assert "[[" not in logs and "array(" not in logs


def test_the_teachers_timeline_survives_a_restart(photo_folder, state_dir, face_engine, pose_engines):
    # Found by the upgrade audit: every restart (an update during the school day) emptied the attention
    # timeline (3 windows -> 1); the history table the code had for it was never written.
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    outbox.open()
    history = History(db)

    def component() -> AttentionComponent:
        return AttentionComponent(
            CameraSettings(source=str(photo_folder), analysis_fps=10.0),
            AttentionSettings(min_faces=1).model_copy(update={"window_s": 1.0}),  # short, for the test
            face_engine, pose_engines, outbox=outbox, heartbeats=HeartbeatRegistry(),
            opener=_folder_opener(photo_folder), history=history,
        )

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        first = component()
        await first.start()
        await asyncio.sleep(3.5)
        await first.stop()
        db.write(lambda _conn: None).result(5)  # the writer is FIFO: the stop's window is committed now
        assert first.loop is not None
        before = first.loop.live_section()["timeline"]
        second = component()
        await second.start()
        assert second.loop is not None
        after = second.loop.live_section()["timeline"]
        await second.stop()
        return before, after

    try:
        before, after = asyncio.run(run())
    finally:
        db.close()
    assert len(before) >= 3 and after[: len(before)] == before


def test_a_restart_after_a_long_break_shows_only_the_windows_since(photo_folder, state_dir, face_engine,
                                                                   pose_engines):
    # The timeline reloads 2 h of windows (120 at 60 s) at a start: after the daemon was down for 57 min
    # the chart showed the lesson before it beside this one, and its summary named that lesson's low point.
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    history = History(db)
    now = time.time()
    earlier = [summarise(now - 5400 + 60 * i, now - 5340 + 60 * i, [20] * 5, [0.3] * 5, 3) for i in range(30)]
    since = [summarise(now - 180 + 60 * i, now - 120 + 60 * i, [20] * 5, [0.8] * 5, 3) for i in range(2)]
    for window in earlier + since:
        history.record("attention", window, at=window["end"])
    db.write(lambda _conn: None).result(5)
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder)), AttentionSettings(), face_engine, pose_engines,
        outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), opener=_folder_opener(photo_folder),
        history=history,
    )

    async def run() -> list[dict[str, Any]]:
        await component.start()
        try:
            assert component.loop is not None
            return component.loop.live_section()["timeline"]
        finally:
            await component.stop()

    try:
        shown = asyncio.run(run())
    finally:
        db.close()
    assert shown == since


class ListOutbox:
    """The outbox's enqueue, keeping what the component stores."""

    def __init__(self) -> None:
        self.stored: list[dict[str, Any]] = []

    def enqueue(self, stream: str, payload: dict[str, Any], expires_at: float | None = None,
                also: object = None) -> None:
        self.stored.append(payload)


class CountingOpener:
    """Opens the photo folder as the camera, noting when each open happened."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.opened: list[float] = []

    def __call__(self, stop: threading.Event):
        self.opened.append(time.monotonic())
        return open_source(str(self.folder), stop=stop, folder_fps=20.0)


async def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_missing_camera_degrades_health_and_keeps_retrying(tmp_path, face_engine, pose_engines):
    missing = str(tmp_path / "absent.mp4")
    outbox = ListOutbox()
    component = AttentionComponent(
        CameraSettings(source=missing, reconnect_min_s=0.1, reconnect_max_s=0.2),
        AttentionSettings(), face_engine, pose_engines, outbox=outbox, heartbeats=HeartbeatRegistry(),
    )

    async def run() -> None:
        await component.start()
        await asyncio.sleep(0.3)
        health = component.health()
        assert not health.ok and "camera error" in health.detail and "absent.mp4" in health.detail
        await component.stop()

    asyncio.run(run())
    assert outbox.stored == []  # no frames, no window


def test_a_camera_whose_open_never_returns_degrades_health_instead_of_starting_for_ever(
    face_engine, pose_engines
):
    # A review: an open that never returned (a wedged nvargus-daemon) kept "camera starting", health OK.
    answer = threading.Event()

    def opener(stop: threading.Event) -> Any:
        answer.wait(10.0)  # the driver does not answer
        raise OSError("the driver answered at last")

    component = AttentionComponent(
        CameraSettings(source="0", analysis_fps=10.0, stall_timeout_s=0.3), AttentionSettings(),
        face_engine, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), opener=opener,
    )

    async def run() -> None:
        await component.start()
        try:
            assert component.health().detail == "camera starting"
            await wait_for(lambda: not component.health().ok, 5.0)
            assert "camera error: camera open blocked for" in component.health().detail
        finally:
            answer.set()
            await component.stop()

    asyncio.run(run())


def test_engine_failure_degrades_health_without_crashing(photo_folder, model_mirror, pose_engines):
    # The fixed 640x640 export refuses the 640x416 padded crowd frame: a real engine error, no mock.
    fixed = OnnxRuntimeEngine(model_mirror / "yunet" / "face_detection_yunet_2023mar.onnx",
                              model_name="yunet-fixed")
    errors0 = _value("edge_camera_frames_dropped_total", reason="analysis_error")
    (photo_folder / "crowd_spectators.jpg").rename(photo_folder / "only.jpg")
    for path in photo_folder.glob("Test*.jpg"):
        path.unlink()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=20.0), AttentionSettings(),
        fixed, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(),
        opener=_folder_opener(photo_folder),
    )

    async def run() -> None:
        await component.start()
        deadline = time.monotonic() + 5
        while component.health().ok or component.loop is None or component.loop.error is None:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        health = component.health()
        assert not health.ok and "analysis failed" in health.detail
        await component.stop()

    asyncio.run(run())
    assert _value("edge_camera_frames_dropped_total", reason="analysis_error") > errors0


def test_analysis_rate_gauge_falls_to_zero_when_the_camera_stops_delivering(
    tmp_path, faces_dir, face_engine, pose_engines, monkeypatch
):
    monkeypatch.setattr(pipeline, "FPS_WINDOW_S", 1.0)
    video = tmp_path / "short.avi"  # 1.5 s of a class, then the camera drops and stays away
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    image = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test3.jpg")), (640, 480))
    for _ in range(15):
        writer.write(image)
    writer.release()

    class OnePlay:  # a video file plays again at its end: this camera drops after one play
        def __init__(self, stop: threading.Event) -> None:
            self.source = open_source(str(video), stop=stop)
            self.description = self.source.description
            self.left = 15

        def read(self) -> Any:
            self.left -= 1
            return self.source.read() if self.left >= 0 else None

        def release(self) -> None:
            self.source.release()

    component = AttentionComponent(
        CameraSettings(source=str(video), analysis_fps=5.0, reconnect_min_s=60.0, reconnect_max_s=60.0),
        AttentionSettings(), face_engine, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(),
        opener=OnePlay,
    )

    async def run() -> tuple[float, float]:
        await component.start()
        deadline = time.monotonic() + 10
        while _value("edge_camera_analysis_fps") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        running = _value("edge_camera_analysis_fps")
        deadline = time.monotonic() + 10
        while _value("edge_camera_analysis_fps") > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        gone = _value("edge_camera_analysis_fps")
        await component.stop()
        return running, gone

    running, gone = asyncio.run(run())
    assert running > 0 and gone == 0.0  # was frozen at the last rate while the camera was away


def test_hours_that_keep_the_camera_closed_on_an_unsynchronised_clock_degrade_its_health_said_once(
    photo_folder, face_engine, pose_engines, caplog
):
    # A review: a board booted at Monday 07:50 on the time timesyncd saved on Friday at 17:45 (no RTC
    # battery), NTP blocked, kept the camera closed all day by its hours, and reported OK.
    clock = {"now": datetime(2026, 12, 4, 17, 45)}  # Friday evening, by the board's clock
    synced = [False]
    opener = CountingOpener(photo_folder)
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0, active_hours=["mon-fri 07:30-17:30"]),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=LiveBoard(), opener=opener, local_now=lambda: clock["now"],
        clock_synced=lambda: synced[0],
    )
    caplog.set_level(logging.INFO, logger="edge_agent.vision.pipeline")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not yet synchronised" in r.getMessage()]

    async def run() -> None:
        await component.start()
        await wait_for(lambda: not component.health().ok)
        health = component.health()
        assert "camera.active_hours judged on a clock not yet synchronised" in health.detail, health
        assert "board says Fri 17:45" in health.detail and "timedatectl timesync-status" in health.detail
        await asyncio.sleep(0.5)  # several ticks: said once
        assert len(said()) == 1 and not component.camera.started and opener.opened == []  # still closed
        synced[0] = True  # NTP got through, and it really is Friday evening
        await wait_for(lambda: component.health().ok)
        assert "camera closed:" in component.health().detail and not component.camera.started
        synced[0] = False  # a new period (timesyncd lost its sync): said again
        await wait_for(lambda: not component.health().ok)
        assert len(said()) == 2
        component.pause(30)  # a teacher's pause is no question of the clock
        await wait_for(lambda: component.health().ok)
        await component.stop()

    asyncio.run(run())


def test_the_camera_stays_closed_outside_its_hours_and_opens_when_they_begin(
    photo_folder, face_engine, pose_engines
):
    clock = {"now": datetime(2026, 12, 5, 23, 0)}  # a Saturday night
    opener = CountingOpener(photo_folder)
    opened = opener.opened
    outbox = ListOutbox()
    stored = outbox.stored
    live = LiveBoard()
    component = AttentionComponent(
        # a night longer than the stall timeout, as a real one is: reopening must not look like a stall
        CameraSettings(
            source=str(photo_folder),
            analysis_fps=10.0,
            stall_timeout_s=0.5,
            active_hours=["mon-fri 07:30-17:30"],
        ),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=outbox,
        heartbeats=HeartbeatRegistry(), live=live, opener=opener, local_now=lambda: clock["now"],
    )

    def camera_state() -> str:
        return (live.get("attention") or {}).get("camera", {}).get("state", "")

    faults = ("edge_camera_stalls_total", "edge_camera_reconnects_total")
    faults0 = [_value(name) for name in faults]

    async def run() -> None:
        analysed0 = _value("edge_camera_frames_analysed_total")
        await component.start()
        await wait_for(lambda: camera_state() == "off_hours")
        await asyncio.sleep(0.5)
        assert opened == [] and not component.camera.started  # never opened at night, not even briefly
        assert _value("edge_camera_frames_analysed_total") == analysed0
        health = component.health()
        assert health.ok and "camera.active_hours" in health.detail and "Mon 07:30" in health.detail
        camera = live.get("attention")["camera"]
        assert camera["opens_at"] == datetime(2026, 12, 7, 7, 30).timestamp()

        clock["now"] = datetime(2026, 12, 7, 7, 30)  # Monday's first lesson
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed0 + 5)
        assert len(opened) == 1 and camera_state() == "running" and component.health().ok

        clock["now"] = datetime(2026, 12, 7, 17, 30)  # the end of the school day
        await wait_for(lambda: camera_state() == "off_hours")
        assert not component.camera.started and component.camera.latest() is None  # no image kept
        assert not any(t.name == "camera-grabber" for t in threading.enumerate())
        analysed = _value("edge_camera_frames_analysed_total")
        assert stored and stored[-1]["partial"] is True  # the day's open window was closed and stored
        windows = len(stored)
        await asyncio.sleep(1.0)
        assert _value("edge_camera_frames_analysed_total") == analysed and len(stored) == windows

        clock["now"] = datetime(2026, 12, 8, 7, 30)  # Tuesday: opened again, no stall from last night
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed + 5)
        await wait_for(lambda: camera_state() == "running")
        assert len(opened) == 2
        await component.stop()

    asyncio.run(run())
    assert [_value(name) for name in faults] == faults0  # closing and opening are not camera faults


def test_the_camera_stays_closed_on_a_holiday_in_the_schools_zone_and_opens_the_day_after(
    photo_folder, face_engine, pose_engines
):
    # The board runs on UTC; the school is in Shanghai (device.timezone). 09:00 on the first day of the
    # National Day holiday, a Thursday, is lesson time by the weekly hours, but a closed day.
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = {"now": datetime(2026, 10, 1, 9, 0, tzinfo=shanghai)}
    opener = CountingOpener(photo_folder)
    opened = opener.opened
    live = LiveBoard()
    settings = CameraSettings(
        source=str(photo_folder), analysis_fps=10.0, active_hours=["mon-fri 07:30-17:30"],
        closed_dates=["2026-10-01..2026-10-07"],
    )
    component = AttentionComponent(
        settings, AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines,
        outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), live=live, opener=opener,
        local_now=lambda: clock["now"],
    )

    def camera() -> dict[str, Any]:
        return (live.get("attention") or {}).get("camera", {})

    async def run() -> None:
        analysed0 = _value("edge_camera_frames_analysed_total")
        await component.start()
        await wait_for(lambda: camera().get("state") == "off_hours")
        await asyncio.sleep(0.5)
        assert opened == [] and not component.camera.started
        # Thursday 8 October 07:30 in Shanghai is 23:30 UTC the day before: the absolute time is right
        assert camera()["opens_at"] == datetime(2026, 10, 7, 23, 30, tzinfo=timezone.utc).timestamp()
        # a week away: with its date, or "Thu 07:30" would read as tomorrow
        assert component.health().ok and "opens Thu 2026-10-08 07:30" in component.health().detail

        clock["now"] = datetime(2026, 10, 8, 7, 30, tzinfo=shanghai)
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed0 + 5)
        assert len(opened) == 1 and camera()["state"] == "running"
        await component.stop()

    asyncio.run(run())


def test_a_teachers_pause_closes_the_camera_survives_a_restart_and_ends_on_time(
    photo_folder, face_engine, pose_engines, tmp_path
):
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = {"now": datetime(2026, 12, 7, 9, 0, tzinfo=shanghai)}  # a Monday lesson
    opener = CountingOpener(photo_folder)
    opened = opener.opened
    outbox = ListOutbox()
    live = LiveBoard()
    pause_file = tmp_path / "camera-pause"

    def make() -> AttentionComponent:
        return AttentionComponent(
            CameraSettings(source=str(photo_folder), analysis_fps=10.0, stall_timeout_s=0.5),
            AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=outbox,
            heartbeats=HeartbeatRegistry(), live=live, opener=opener, local_now=lambda: clock["now"],
            pause_file=pause_file, monotonic=lambda: clock["now"].timestamp(),  # noqa: PLW0108 (no NTP step)
        )

    def camera() -> dict[str, Any]:
        return (live.get("attention") or {}).get("camera", {})

    async def run() -> None:
        component = make()
        analysed0 = _value("edge_camera_frames_analysed_total")
        await component.start()
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed0 + 3)
        until = component.pause(45)
        assert until == datetime(2026, 12, 7, 9, 45, tzinfo=shanghai)
        await wait_for(lambda: camera().get("state") == "paused")
        await wait_for(lambda: component.loop.closed_until is not None)  # type: ignore[union-attr]  # closed at its tick
        assert not component.camera.started and component.camera.latest() is None  # no image kept
        assert not any(t.name == "camera-grabber" for t in threading.enumerate())
        assert outbox.stored and outbox.stored[-1]["partial"] is True  # the open window closed, kept
        assert outbox.stored[-1]["frames_expected"] == 50  # 5-s windows at 10 frames/s
        assert camera()["opens_at"] == until.timestamp()
        assert component.health().ok and "paused by the teacher; opens Mon 09:45" in component.health().detail
        assert pause_file.read_text() == until.isoformat()
        await component.stop()

        # A restart during the pause (an update, a power cut): the camera is not opened, not even briefly
        clock["now"] = datetime(2026, 12, 7, 9, 10, tzinfo=shanghai)
        again = make()
        await again.start()
        await wait_for(lambda: camera().get("state") == "paused")
        await asyncio.sleep(0.5)
        assert len(opened) == 1 and not again.camera.started
        analysed = _value("edge_camera_frames_analysed_total")

        clock["now"] = until  # the pause is over: measured again without anyone touching it
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed + 3)
        await wait_for(lambda: camera().get("state") == "running")  # the view hears of it within a second
        assert len(opened) == 2

        again.pause(45)  # and the teacher can resume it early
        await wait_for(lambda: camera().get("state") == "paused")
        assert again.pause(None) is None
        await wait_for(lambda: camera().get("state") == "running")
        assert pause_file.read_text() == ""
        await again.stop()

    asyncio.run(run())


def test_a_pause_that_cannot_be_saved_still_closes_the_camera_and_says_why(
    photo_folder, face_engine, pose_engines, tmp_path, caplog
):
    # A review: a full or read-only disk made the teacher's pause a bare HTTP 500 while the camera was in
    # fact paused. It holds, and the log says a restart would not keep it.
    (tmp_path / "state").write_text("a file where the state folder should be: writing under it fails")
    live = LiveBoard()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0), AttentionSettings(window_s=5.0),
        face_engine, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), live=live,
        pause_file=tmp_path / "state" / "camera-pause",
    )

    async def run() -> None:
        await component.start()
        try:
            assert component.pause(45) is not None
            await wait_for(lambda: (live.get("attention") or {}).get("camera", {}).get("state") == "paused")
        finally:
            await component.stop()

    with caplog.at_level(logging.WARNING, logger="edge_agent.vision.component"):
        asyncio.run(run())
    assert any("the camera pause holds, but could not be kept" in r.getMessage() for r in caplog.records)


def test_a_frame_whose_analysis_the_teachers_pause_interrupts_is_not_counted(
    photo_folder, face_engine, pose_engines
):
    # A CI run: the page said paused, and a frame analysed after that still counted (its analysis had begun
    # before the press). The pause holds from the press: that frame is dropped, counted as such.
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=LiveBoard(), opener=CountingOpener(photo_folder),
    )
    pressed: dict[str, float] = {}

    async def run() -> None:
        analysed0 = _value("edge_camera_frames_analysed_total")
        await component.start()
        await wait_for(lambda: _value("edge_camera_frames_analysed_total") >= analysed0 + 2)
        analyser = component.loop.analyser  # type: ignore[union-attr]
        analyse = analyser.analyse_tracked

        def pressed_meanwhile(*args: Any) -> Any:
            result = analyse(*args)
            if not pressed:  # the teacher's press lands while this frame is analysed
                pressed["analysed"] = _value("edge_camera_frames_analysed_total")
                pressed["dropped"] = _value("edge_camera_frames_dropped_total", reason="paused")
                component.pause(45)
            return result

        analyser.analyse_tracked = pressed_meanwhile  # type: ignore[method-assign]
        await wait_for(lambda: component.loop.closed_until is not None)  # type: ignore[union-attr]
        await asyncio.sleep(0.3)
        assert _value("edge_camera_frames_analysed_total") == pressed["analysed"]
        assert _value("edge_camera_frames_dropped_total", reason="paused") == pressed["dropped"] + 1
        await component.stop()

    asyncio.run(run())


def test_a_teachers_pause_lasts_its_minutes_whatever_ntp_does_to_the_clock(
    photo_folder, face_engine, pose_engines, tmp_path
):
    # Time review: the pause's end was a wall-clock time, so NTP stepping the clock 3 h forward ended a
    # 45-minute pause at once (the camera back on mid-lesson) and a step back made it last days
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = {"now": datetime(2026, 12, 7, 6, 0, tzinfo=shanghai), "mono": 1000.0}  # booted 3 h behind
    live = LiveBoard()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0, stall_timeout_s=0.5),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=live, opener=CountingOpener(photo_folder),
        local_now=lambda: clock["now"], monotonic=lambda: clock["mono"], pause_file=tmp_path / "camera-pause",
    )

    def camera() -> dict[str, Any]:
        return (live.get("attention") or {}).get("camera", {})

    async def run() -> None:
        await component.start()
        try:
            component.pause(45)
            await wait_for(lambda: camera().get("state") == "paused")
            clock["now"] += timedelta(hours=3)  # NTP: the monotonic clock does not move with it
            clock["mono"] += 1.0
            moved = clock["now"] + timedelta(minutes=45, seconds=-1)
            # the page's end moves at the loop's next live section (every 1 s), waited for: a sleep of 1.5 s
            # missed it in a CI run with 2 test workers on 2 cores
            await wait_for(lambda: camera().get("opens_at") == moved.timestamp())
            assert camera().get("state") == "paused" and not component.camera.started
            # and the file a restart reads follows (round 2: it kept the old end, 3 h before)
            assert (tmp_path / "camera-pause").read_text() == moved.isoformat()
            clock["mono"] += 45 * 60  # 45 real minutes on
            await wait_for(lambda: camera().get("state") == "running")
            assert (tmp_path / "camera-pause").read_text() == ""  # over: a restart does not pause again
        finally:
            await component.stop()

    asyncio.run(run())


def test_a_kept_pause_longer_than_a_teacher_can_ask_lasts_the_longest_one_and_is_said(
    photo_folder, face_engine, pose_engines, tmp_path, caplog
):
    # A review: a board that rebooted on a clock a day behind (no RTC battery, NTP not yet reachable) read
    # the saved end of a 45-minute pause as a day and 40 minutes away, and kept the camera closed that long
    shanghai = ZoneInfo("Asia/Shanghai")
    saved = datetime(2026, 12, 8, 10, 45, tzinfo=shanghai)  # Tuesday's pause, set at 10:00
    clock = {"now": datetime(2026, 12, 7, 10, 5, tzinfo=shanghai), "mono": 1000.0}  # booted a day behind
    pause_file = tmp_path / "camera-pause"
    pause_file.write_text(saved.isoformat())
    live = LiveBoard()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0, stall_timeout_s=0.5),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=live, opener=CountingOpener(photo_folder),
        local_now=lambda: clock["now"], monotonic=lambda: clock["mono"], pause_file=pause_file,
    )

    def camera() -> dict[str, Any]:
        return (live.get("attention") or {}).get("camera", {})

    async def run() -> None:
        with caplog.at_level(logging.WARNING, logger="edge_agent.vision.component"):
            await component.start()
        try:
            await wait_for(lambda: camera().get("state") == "paused")  # never opened early
            assert component.loop.paused_until == clock["now"] + timedelta(minutes=240)  # type: ignore[union-attr]
            clock["now"] = datetime(2026, 12, 8, 10, 6, tzinfo=shanghai)  # NTP steps the clock
            clock["mono"] += 60.0
            await asyncio.sleep(0.3)
            assert camera().get("state") == "paused" and not component.camera.started
            clock["mono"] += 240 * 60.0  # the longest pause is over
            await wait_for(lambda: camera().get("state") == "running")
        finally:
            await component.stop()

    asyncio.run(run())
    assert "more than 240 minutes from now" in caplog.text and "check the clock" in caplog.text, caplog.text


def test_a_pause_the_teacher_sets_as_the_last_one_ends_stays_in_the_file(
    photo_folder, face_engine, pose_engines, tmp_path, monkeypatch
):
    # Round 2: the loop thread, emptying the file as a 1-minute pause ended by itself, wrote after the
    # teacher's new 30-minute pause had: the camera paused in memory, the file empty, a restart ran it
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = {"now": datetime(2026, 12, 7, 9, 0, tzinfo=shanghai), "mono": 1000.0}
    pause_file = tmp_path / "camera-pause"
    keep, in_callback = AttentionComponent._keep_pause, threading.Event()

    def descheduled(self: AttentionComponent, until: datetime | None, ends: float) -> None:
        in_callback.set()
        time.sleep(0.5)  # the loop thread loses the processor between its check and the lock
        keep(self, until, ends)

    monkeypatch.setattr(AttentionComponent, "_keep_pause", descheduled)
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0, stall_timeout_s=0.5),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=LiveBoard(), opener=CountingOpener(photo_folder),
        local_now=lambda: clock["now"], monotonic=lambda: clock["mono"], pause_file=pause_file,
    )

    async def run() -> None:
        await component.start()
        try:
            component.pause(1)
            await wait_for(lambda: not component.camera.started)
            clock["mono"] += 61  # the pause ends by itself ...
            await asyncio.to_thread(in_callback.wait, 5)
            until = await asyncio.to_thread(component.pause, 30)  # ... as the teacher pauses again
            await asyncio.sleep(1.0)
            assert until is not None and pause_file.read_text() == until.isoformat()
        finally:
            await component.stop()

    asyncio.run(run())


def _never_attentive(folder: Path, face_engine, pose_engines, live: LiveBoard) -> AttentionComponent:
    """Nobody counts as attentive (a yaw limit of 0.001°): every window is weak, and one raises the
    low-attention signal."""
    settings = AttentionSettings(min_faces=1, yaw_limit_deg=0.001, low_attention_windows=1)
    return AttentionComponent(
        CameraSettings(source=str(folder), analysis_fps=10.0),
        settings.model_copy(update={"window_s": 1.0}),  # short, for the test
        face_engine, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), live=live,
        opener=CountingOpener(folder),
    )


def _attention_section(live: LiveBoard) -> dict[str, Any]:
    return live.get("attention") or {}


def test_a_paused_camera_does_not_leave_the_live_view_saying_low_attention(
    photo_folder, face_engine, pose_engines
):
    live = LiveBoard()
    component = _never_attentive(photo_folder, face_engine, pose_engines, live)

    section = partial(_attention_section, live)

    async def run() -> None:
        await component.start()
        await wait_for(lambda: section().get("low_attention") is True)
        component.pause(45)
        await wait_for(lambda: section().get("camera", {}).get("state") == "paused")
        assert section()["low_attention"] is False  # was True for the whole pause (or night)
        component.pause(None)  # resumed: the first weak window is a row of one again
        await wait_for(lambda: section().get("camera", {}).get("state") == "running")
        await wait_for(lambda: section().get("low_attention") is True)
        await component.stop()

    asyncio.run(run())


def test_a_camera_gone_mid_lesson_does_not_leave_the_live_view_saying_low_attention(
    photo_folder, face_engine, pose_engines
):
    live = LiveBoard()
    component = _never_attentive(photo_folder, face_engine, pose_engines, live)

    section = partial(_attention_section, live)

    async def run() -> None:
        await component.start()
        await wait_for(lambda: section().get("low_attention") is True)
        shutil.rmtree(photo_folder)  # the camera is unplugged
        await wait_for(lambda: section()["camera"]["state"] in ("reconnecting", "error"))
        assert section()["low_attention"] is False  # the signal is as stale as the share
        await component.stop()

    asyncio.run(run())


def test_a_pause_into_the_evening_opens_at_the_next_school_hours_and_a_damaged_pause_file_is_ignored(
    photo_folder, face_engine, pose_engines, tmp_path, caplog
):
    clock = {"now": datetime(2026, 12, 7, 17, 0).astimezone()}
    pause_file = tmp_path / "camera-pause"
    pause_file.write_text("not a time")
    live = LiveBoard()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0, active_hours=["mon-fri 07:30-17:30"]),
        AttentionSettings(window_s=5.0, min_faces=1), face_engine, pose_engines, outbox=ListOutbox(),
        heartbeats=HeartbeatRegistry(), live=live, opener=CountingOpener(photo_folder),
        local_now=lambda: clock["now"], pause_file=pause_file,
    )

    def camera() -> dict[str, Any]:
        return (live.get("attention") or {}).get("camera", {})

    async def run() -> None:
        with caplog.at_level(logging.WARNING):
            await component.start()
            await wait_for(lambda: camera().get("state") == "running")  # the damaged file paused nothing
        assert "does not hold a pause" in caplog.text
        component.pause(45)  # until 17:45, after the school day ends at 17:30
        await wait_for(lambda: camera().get("state") == "paused")
        assert camera()["opens_at"] == datetime(2026, 12, 8, 7, 30).astimezone().timestamp()
        await component.stop()

    asyncio.run(run())


def test_a_camera_opening_again_after_a_pause_is_starting_and_only_a_stop_says_stopped(
    photo_folder, face_engine, pose_engines
):
    # The grabber said "stopped" until it had opened again (seconds for a network camera); the page lists
    # "stopped" as a problem now that the component's stop says it (it said "disabled": "switched off").
    live = LiveBoard()
    gate = threading.Event()
    gate.set()
    folder = _folder_opener(photo_folder)

    def slow_opener(stop: threading.Event):
        gate.wait(10)
        return folder(stop)

    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0), AttentionSettings(), face_engine,
        pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(), live=live, opener=slow_opener,
    )
    state = lambda: _attention_section(live).get("camera", {}).get("state")  # noqa: E731

    async def run() -> list[str | None]:
        await component.start()
        try:
            return await resumed()
        finally:  # stopped on a failure too: left running at 10 frames/s, it failed later tests (CI)
            gate.set()
            await component.stop()

    async def resumed() -> list[str | None]:
        await wait_for(lambda: state() == "running")
        component.pause(45)
        # paused at once, published at once: while the camera closed the page said "stopped (the board
        # is restarting)" and the health listed a camera fault for IT (a review: for 1.1 s)
        assert state() == "paused" and component.health().ok, component.health()
        # closed, as the loop has it: it notes the close after the grabber stopped and the window went
        # out, and a resume before that said "stopped" (CI, under load; the next tick opens it again)
        await wait_for(lambda: component.camera.state()[0] == "stopped"
                       and component.loop is not None and component.loop.closed_until is not None)
        gate.clear()  # the camera takes its time to open again
        component.pause(None)
        # at once, not "closed: outside camera.active_hours" until the loop's next tick
        healths.add(component.health().detail)
        assert component.loop is not None and component.loop.live_section()["camera"]["state"] == "starting"
        assert state() == "starting"  # published at once
        await wait_for(lambda: state() != "paused")
        seen = []
        for _ in range(10):
            seen.append(state())
            healths.add(component.health().detail)
            oks.add(component.health().ok)
            await asyncio.sleep(0.1)
        gate.set()
        await wait_for(lambda: state() == "running")
        return seen

    healths: set[str] = set()
    oks: set[bool] = set()
    seen = asyncio.run(run())
    component_health_ok = oks == {True}
    assert component.camera.state()[0] == "stopped"
    assert set(seen) == {"starting"}, seen
    # the component's health (systemd's status line, doctor, the heartbeat) says so too, not "stopped",
    # and as no fault: the page listed it for IT
    assert healths == {"camera starting"}, healths
    assert component_health_ok, "starting was listed as a fault"
    assert _attention_section(live)["camera"]["state"] == "stopped"


def test_a_camera_lost_after_every_frame_or_two_is_unstable_not_working(
    photo_folder, face_engine, pose_engines
):
    # Round 2: a camera that sent a frame or two per connection and then hung read "running" between its
    # reopens, so the component stayed up and the fleet alert never fired
    image = cv2.imread(str(next(p for p in sorted(photo_folder.rglob("*.jpg")))))

    class Brief:
        description = "a camera that drops every connection"

        def __init__(self) -> None:
            self.sent = 0

        def read(self):
            time.sleep(0.05)
            self.sent += 1
            return image.copy() if self.sent <= 2 else None  # then the connection ends

        def release(self) -> None:
            return None

    component = AttentionComponent(
        CameraSettings(source="x", analysis_fps=10.0, reconnect_min_s=0.1, reconnect_max_s=0.2),
        AttentionSettings(), face_engine, pose_engines, outbox=ListOutbox(), heartbeats=HeartbeatRegistry(),
        live=LiveBoard(), opener=lambda stop: Brief(),
    )

    async def run() -> set[str]:
        await component.start()
        healths = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            health = component.health()
            healths.add(("ok " if health.ok else "down ") + health.detail.split(":")[0])
            await asyncio.sleep(0.05)
        await component.stop()
        return healths

    healths = asyncio.run(run())
    assert "down camera unstable" in healths, healths
    assert component.camera.reopens() >= 3


def _open_window(db: Database) -> dict[str, Any] | None:
    row = db.read(lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (OPEN_WINDOW_KEY,)).fetchone())
    return None if row is None else json.loads(row[0])


def _frames_in(saved: dict[str, Any] | None) -> int:
    return 0 if saved is None else sum(frames for _, frames in saved["faces"])


def _attention_windows(db: Database) -> list[dict[str, Any]]:
    rows = db.read(lambda c: c.execute("SELECT payload FROM outbox WHERE stream = 'attention' ORDER BY seq")
                   .fetchall())
    return [json.loads(p) for (p,) in rows]


@pytest.mark.parametrize("back_after_s", [0.0, 3600.0])
def test_the_attention_window_open_at_a_power_cut_is_not_lost(
    photo_folder, state_dir, face_engine, pose_engines, monkeypatch, back_after_s
):
    # A crash or a power cut lost the frames of the window in progress, up to a whole window (60 s) of the
    # class's attention. They are stored every 15 s: back within the window it goes on with them; back
    # after it (the board was off an hour), it is sent at once, marked partial.
    monkeypatch.setattr(pipeline, "KEEP_OPEN_WINDOW_EVERY_S", 0.3)
    if time.time() % 3600 > 3570:  # no hour's end, where the test's hour-long window would close, in it
        time.sleep(3600 - time.time() % 3600 + 1)
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    outbox.open()

    def component() -> AttentionComponent:
        return AttentionComponent(
            CameraSettings(source=str(photo_folder), analysis_fps=10.0),
            AttentionSettings(min_faces=1).model_copy(update={"window_s": 3600.0}),
            face_engine, pose_engines, outbox=outbox, heartbeats=HeartbeatRegistry(),
            opener=_folder_opener(photo_folder), db=db,
        )

    async def run() -> tuple[int, float]:
        first = component()
        await first.start()
        assert first.loop is not None and first.loop._thread is not None
        await wait_for(lambda: _frames_in(_open_window(db)) >= 5)
        first.loop._stop.set()  # the cut: the analysis ends where it is, no window is closed or sent
        first.loop._thread.join(5)
        first.camera.stop()
        db.write(lambda _conn: None).result(5)  # all the writer was given is committed (the cut's image)
        saved = _open_window(db)
        assert saved is not None and _attention_windows(db) == []
        if back_after_s:
            db.write(lambda c: set_meta(c, OPEN_WINDOW_KEY, json.dumps(
                saved | {"start": saved["start"] - back_after_s, "last_t": saved["last_t"] - back_after_s}))
            ).result(5)
        analysed = _value("edge_camera_frames_analysed_total")
        second = component()
        await second.start()
        await asyncio.sleep(1.0)
        await second.stop()
        db.write(lambda _conn: None).result(5)
        return _frames_in(saved), _value("edge_camera_frames_analysed_total") - analysed

    try:
        saved, after = asyncio.run(run())
        windows = _attention_windows(db)
        assert _open_window(db) is None  # sent: not sent again after another cut
    finally:
        db.close()
    assert {w["min_faces"] for w in windows} == {1}  # the suppression rule each was judged by, for the cloud
    if back_after_s:
        assert [(w["frames"], w.get("partial")) for w in windows] == [(saved, True), (after, True)]
        assert windows[0]["start"] == windows[1]["start"] - back_after_s
    else:  # the stop sends it, partial: the daemon stopped within its hour
        assert [(w["frames"], w.get("partial")) for w in windows] == [(saved + after, True)]


@pytest.mark.parametrize("stored", ["{not json", "[1, 2]", '{"faces": [4], "shares": [], "start": "x"}',
                                    '{"start": 1%s}' % ("0" * 400), "[" * 100_000 + "]" * 100_000])
def test_an_open_window_stored_damaged_is_left_out_said_and_the_analysis_goes_on(
    photo_folder, state_dir, face_engine, pose_engines, caplog, stored
):
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    outbox.open()
    db.write(lambda c: set_meta(c, OPEN_WINDOW_KEY, stored)).result(5)
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0), AttentionSettings(min_faces=1),
        face_engine, pose_engines, outbox=outbox, heartbeats=HeartbeatRegistry(),
        opener=_folder_opener(photo_folder), db=db,
    )

    async def run() -> None:
        await component.start()
        assert component.loop is not None
        await wait_for(lambda: component.loop.windows.snapshot() is not None)  # type: ignore[union-attr]
        await component.stop()
        db.write(lambda _conn: None).result(5)

    try:
        with caplog.at_level(logging.WARNING, logger="edge_agent.vision.component"):
            asyncio.run(run())
        assert _open_window(db) is None and len(_attention_windows(db)) == 1
    finally:
        db.close()
    assert "the attention window open at the last stop does not read" in caplog.text


def test_a_window_written_at_last_after_a_full_disk_leaves_the_next_windows_stored_frames(state_dir):
    # The outbox holds a window the full disk refused and writes it later; the next window's frames were
    # stored meanwhile, and that write cleared them: a cut then lost them (a round-2 review, real SQLITE_FULL)
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    try:
        db.write(lambda c: set_meta(c, OPEN_WINDOW_KEY, json.dumps({"start": 1020.0}))).result(5)
        db.write(_forget_open_window(960.0)).result(5)  # the held window, written at last
        assert _open_window(db) == {"start": 1020.0}
        db.write(_forget_open_window(1020.0)).result(5)  # its own window queued
        assert _open_window(db) is None
    finally:
        db.close()


def test_a_stopped_analysis_stores_and_counts_no_frame_it_finishes_late(
    photo_folder, state_dir, face_engine, pose_engines, monkeypatch
):
    # A thread that outlived the stop's 5-s join stored its window after the stop had sent it: a restart
    # sent those frames again (a round-2 review forced a 6-s stall there: 10 frames twice)
    monkeypatch.setattr(pipeline, "KEEP_OPEN_WINDOW_EVERY_S", 0.0)
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    outbox.open()
    component = AttentionComponent(
        CameraSettings(source=str(photo_folder), analysis_fps=10.0), AttentionSettings(min_faces=1),
        face_engine, pose_engines, outbox=outbox, heartbeats=HeartbeatRegistry(),
        opener=_folder_opener(photo_folder), db=db,
    )
    image = cv2.imread(str(next(photo_folder.glob("*.jpg"))))

    async def run() -> None:
        await component.start()
        assert component.loop is not None
        await wait_for(lambda: _open_window(db) is not None)
        await component.stop()
        component.loop.step(image, time.time())  # the late frame
        db.write(lambda _conn: None).result(5)

    try:
        asyncio.run(run())
        assert _open_window(db) is None and len(_attention_windows(db)) == 1
    finally:
        db.close()

"""The camera thread on real files: latest frame only, bad frames skipped, reconnects, stalls."""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import parse_config
from edge_agent.errors import CameraError, ConfigError
from edge_agent.telemetry import metrics
from edge_agent.vision.camera import Camera, as_bgr, frame_problem, next_backoff
from edge_agent.vision.sources import classify, open_source


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _camera(source: str, fps: float = 100.0, **kwargs) -> Camera:
    kwargs.setdefault("reconnect_min_s", 0.05)
    kwargs.setdefault("reconnect_max_s", 0.2)
    return Camera(source, opener=lambda stop: open_source(source, stop=stop, folder_fps=fps), **kwargs)


@pytest.fixture()
def folder(tmp_path: Path, faces_dir: Path) -> Path:
    path = tmp_path / "frames"
    path.mkdir()
    shutil.copy(faces_dir / "pexels" / "Test3.jpg", path / "a.jpg")
    return path


@pytest.mark.parametrize(
    ("source", "kind"),
    [("0", "v4l2"), ("/dev/video2", "v4l2"), ("rtsp://cam/stream", "url"),
     ("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! appsink", "gstreamer"), ("/nonexistent.mp4", "file"),
     ("rtsp://admin:Secret!1@10.0.0.9/stream1", "url"),  # a "!" in the password is no pipeline
     ("rtspsrc location=rtsp://cam/s ! decodebin ! appsink", "gstreamer"),
     # a review: a copy-paste's space made a file of the device; the stable name of a USB camera was a
     # file too; a space in a password made a file of the URL
     (" /dev/video0", "v4l2"), ("/dev/v4l/by-id/usb-046d_HD_Webcam-video-index0", "v4l2"),
     ("rtsp://admin:Zq9 Secret@10.0.0.9/s", "url")],
)
def test_source_strings_are_classified(source, kind):
    assert classify(source) == kind


def test_a_folder_under_dev_is_a_folder(tmp_path: Path):
    # round 2: /dev/shm/frames was taken for a video device (the daemon refused it, doctor said OK)
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    folder = Path("/dev/shm") / f"edge-agent-test-{tmp_path.name}"
    folder.mkdir()
    try:
        assert classify(str(folder)) == "folder"
    finally:
        folder.rmdir()


def test_a_link_to_a_video_device_opens_that_device_and_a_missing_one_says_to_plug_it_in(tmp_path: Path):
    from edge_agent.vision.sources import _v4l2_index

    link = tmp_path / "usb-cam-video-index0"
    link.symlink_to("/dev/video3")  # as udev makes /dev/v4l/by-id/... (the device need not exist here)
    assert _v4l2_index(str(link)) == 3 and _v4l2_index("/dev/video12") == 12 and _v4l2_index("2") == 2
    with pytest.raises(CameraError, match="does not exist: check that the camera is plugged in"):
        _v4l2_index("/dev/v4l/by-id/usb-unplugged-video-index0")
    with pytest.raises(CameraError, match="is not a video device"):
        _v4l2_index("/dev/null")


def test_an_unexpected_failure_to_open_is_an_error_that_is_retried_not_a_dead_camera():
    # A review: " /dev/video0" raised ValueError in the grabber, which ended its thread: "starting" for good
    attempts = []

    def opener(stop: threading.Event):
        attempts.append(1)
        raise ValueError("invalid literal for int() with base 10: ' /dev/video0'")

    camera = Camera("x", reconnect_min_s=0.02, reconnect_max_s=0.05, opener=opener)
    camera.start()
    try:
        assert _wait(lambda: len(attempts) >= 3)
        state, detail = camera.state()
        assert state == "error" and detail.startswith("cannot open the camera: ValueError: invalid literal")
        assert "retrying" in detail
    finally:
        camera.stop()


def test_a_folder_source_plays_at_the_analysis_rate_so_every_picture_is_analysed(folder: Path):
    # A review: at 30 pictures a second and 2 analysed, the demo analysed one picture in six, always the
    # same three of its nine, and its share of attention read 100%
    from edge_agent.config import CameraSettings

    camera = Camera.from_settings(CameraSettings(source=str(folder), analysis_fps=5.0))
    camera.start()
    try:
        time.sleep(1.2)
        frame = camera.latest()
    finally:
        camera.stop()
    assert frame is not None and frame.seq <= 8, frame.seq if frame else None


def test_a_folder_analysed_less_often_than_its_stall_timeout_does_not_stall(folder: Path):
    # A review: analysis_fps = 0.05 with stall_timeout_s = 5 played one picture in 20 s: "camera stalled:
    # no frame for 5 s", reopened, again, for ever
    from edge_agent.config import CameraSettings

    camera = Camera.from_settings(CameraSettings(source=str(folder), analysis_fps=0.05, stall_timeout_s=1.0))
    camera.start()
    stalled = []
    try:
        for _ in range(25):  # as the analysis loop calls it
            time.sleep(0.1)
            stalled.append(camera.check_stall())
        state = camera.state()
    finally:
        camera.stop()
    assert not any(stalled) and state[0] == "running", state


def test_spaces_around_the_camera_source_are_no_part_of_it():
    config = parse_config('[camera]\nsource = " /dev/video0 "\n')
    assert config.camera.source == "/dev/video0"


def test_frame_checks_and_backoff_are_pure():
    assert frame_problem(np.zeros((0, 0, 3), np.uint8)) == "empty"
    assert frame_problem(np.zeros((10, 10, 3), np.uint8)) == "tiny"
    assert frame_problem(np.zeros((100, 100), np.uint8)) == "format"
    assert frame_problem(np.zeros((100, 100, 3), np.uint8)) is None
    assert next_backoff(0.0, 1.0, 8.0) == 1.0
    assert next_backoff(4.0, 1.0, 8.0) == 8.0
    assert next_backoff(8.0, 1.0, 8.0) == 8.0


def test_corrupt_empty_and_tiny_images_are_skipped_and_counted(folder: Path):
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "c.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "d.png"), np.zeros((8, 8, 3), np.uint8))
    empty0, tiny0, frames0 = (_value("edge_camera_frames_dropped_total", reason="empty"),
                              _value("edge_camera_frames_dropped_total", reason="tiny"),
                              _value("edge_camera_frames_total"))
    camera = _camera(str(folder))
    camera.start()
    try:
        assert _wait(lambda: _value("edge_camera_frames_dropped_total", reason="tiny") > tiny0 + 1)
        frame = camera.latest()
        assert frame is not None and frame.image.shape == (1024, 1024, 3)
    finally:
        camera.stop()
    assert _value("edge_camera_frames_dropped_total", reason="empty") >= empty0 + 2
    assert _value("edge_camera_frames_total") > frames0


def test_a_camera_sending_only_corrupt_frames_is_never_running_and_says_why(tmp_path: Path):
    # A review: "running, 0.0 frames/s" for the first stall timeout of every reopen, then "stalled", so
    # the component flapped up and down (the fleet alert never fired) and "corrupt" was never said
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    camera = _camera(str(folder), stall_timeout_s=0.3)
    seen = set()
    camera.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            seen.add(camera.state()[0])
            time.sleep(0.02)
        state, detail = camera.state()
    finally:
        camera.stop()
    # nor "stalled" ("no frame for 0 s") while its frames came: CI once ended the 3 s in it
    assert not {"running", "stalled"} & seen, seen
    assert state == "reconnecting" and "sent only frames that cannot be decoded (corrupt)" in detail, detail


def test_a_truncated_jpeg_in_a_folder_is_dropped_without_a_line_on_stderr_at_every_turn(
    tmp_path: Path, faces_dir: Path, capfd: pytest.CaptureFixture[str]
):
    # A review: libjpeg wrote "Premature end of JPEG file" at every decode (451 lines in 30 s, all in the
    # journal under systemd)
    from edge_agent.vision.sources import ImageFolderSource

    photo = (faces_dir / "pexels" / "Test3.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(photo[: len(photo) // 2])
    (tmp_path / "b.jpg").write_bytes(photo)
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg\xff\xd9")
    source = ImageFolderSource(tmp_path, fps=1000)
    capfd.readouterr()
    shapes = [source.read().shape for _ in range(30)]  # type: ignore[union-attr]
    assert shapes.count((1024, 1024, 3)) == 10 and shapes.count((0, 0, 3)) == 20
    assert len(capfd.readouterr().err.splitlines()) <= 1  # the damaged one decoded once, at most


def test_an_image_folder_is_listed_again_every_few_seconds_not_at_every_frame(
    tmp_path: Path, faces_dir: Path, monkeypatch
):
    # A review: the folder was walked and sorted at every frame (66 ms of CPU at 10,000 images)
    from edge_agent.vision import sources

    shutil.copy(faces_dir / "pexels" / "Test3.jpg", tmp_path / "a.jpg")
    listings: list[float] = []
    listed = sources.folder_images

    def counted(folder: Path) -> list[Path]:
        listings.append(time.monotonic())
        return listed(folder)

    monkeypatch.setattr(sources, "folder_images", counted)
    source = sources.ImageFolderSource(tmp_path, fps=1000)
    assert [source.read().shape for _ in range(20)] == [(1024, 1024, 3)] * 20  # type: ignore[union-attr]
    assert len(listings) == 1, len(listings)
    small = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test1.jpg")), (320, 240))
    cv2.imwrite(str(tmp_path / "b.jpg"), small)  # a picture added: shown soon
    monkeypatch.setattr(sources, "FOLDER_RESCAN_S", 0.1)
    time.sleep(0.15)
    shapes = {source.read().shape for _ in range(4)}  # type: ignore[union-attr]
    assert shapes == {(1024, 1024, 3), (240, 320, 3)} and len(listings) == 2, (shapes, len(listings))
    (tmp_path / "a.jpg").unlink()
    (tmp_path / "b.jpg").unlink()  # all gone: the source ends at once, not a rescan period later
    monkeypatch.setattr(sources, "FOLDER_RESCAN_S", 60.0)
    reads = [source.read() for _ in range(2)]
    assert reads[1] is None, reads


def test_a_photo_whose_name_is_not_utf8_is_shown_and_crashes_nothing(tmp_path: Path, faces_dir: Path):
    # A review: OpenCV 5.1's imread took a Latin-1 name ("clé.jpg" from a camera's SD card) and the whole
    # daemon died with SIGSEGV. In a child process, so that a crash fails this test, not the suite.
    import os
    import subprocess
    import sys

    folder = os.fsencode(tmp_path)
    with open(folder + b"/cl\xe9.jpg", "wb") as photo:
        photo.write((faces_dir / "pexels" / "Test3.jpg").read_bytes())
    code = ("import sys; from edge_agent.vision.sources import open_source; "
            "print(open_source(sys.argv[1], folder_fps=1000).read().shape)")
    done = subprocess.run([sys.executable, "-c", code, os.fsdecode(folder)], check=False, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert done.stdout.split() == [b"(1024,", b"1024,", b"3)"]


def test_a_video_whose_name_is_not_utf8_is_refused_with_a_fix_not_a_crash(tmp_path: Path):
    import os

    name = os.fsdecode(os.fsencode(tmp_path) + b"/le\xe7on.avi")
    Path(name).write_bytes(b"RIFF")
    with pytest.raises(CameraError, match=r"le\\udce7on.avi: OpenCV cannot open a file whose name is not "
                                          r"UTF-8 .*rename it"):
        open_source(name)


def test_a_folder_or_video_with_a_bang_in_its_name_is_no_gstreamer_pipeline(tmp_path: Path, faces_dir: Path):
    # A review: "lesson!1.avi" was handed to GStreamer, which cannot open it
    folder = tmp_path / "demo!"
    folder.mkdir()
    shutil.copy(faces_dir / "pexels" / "Test3.jpg", folder / "a.jpg")
    video = tmp_path / "lesson!1.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 128, np.uint8))
    writer.release()
    assert (classify(str(folder)), classify(str(video))) == ("folder", "file")
    assert open_source(str(folder), folder_fps=1000).read().shape == (1024, 1024, 3)  # type: ignore[union-attr]
    assert open_source(str(video)).read().shape == (48, 64, 3)  # type: ignore[union-attr]
    assert classify("x" * 300 + " ! appsink") == "gstreamer"  # too long a name for a file: no OSError


def test_a_phone_photo_with_data_after_its_picture_is_shown_and_a_cut_one_is_not(
    tmp_path: Path, faces_dir: Path
):
    # A review: a "motion photo" (a video after the JPEG's end) was dropped as corrupt. An EXIF
    # thumbnail's end marker does not make a cut photo whole.
    from edge_agent.image_files import jpeg_complete
    from edge_agent.vision.sources import ImageFolderSource

    photo = (faces_dir / "pexels" / "Test3.jpg").read_bytes()
    (tmp_path / "motion.jpg").write_bytes(photo + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 64)
    source = ImageFolderSource(tmp_path, fps=1000)
    assert source.read().shape == (1024, 1024, 3)  # type: ignore[union-attr]
    _, progressive = cv2.imencode(".jpg", cv2.imread(str(faces_dir / "pexels" / "Test1.jpg")),
                                   [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 4])
    for whole in (photo, (faces_dir / "pexels" / "Test1.jpg").read_bytes(), progressive.tobytes()):
        assert jpeg_complete(whole) and jpeg_complete(whole + b"trailer" * 100)
        assert not any(jpeg_complete(whole[: len(whole) * k // 10]) for k in range(1, 10))


def test_four_channel_frames_are_analysed_as_colour_and_one_channel_ones_are_not():
    # A GStreamer appsink in BGRx: every frame was dropped as "format", the camera "stalled". One plane
    # stays refused (round 2: an I420 frame is one plane 1.5 times the height, read as grey it had faces
    # in its colour planes)
    bgrx = np.full((120, 160, 4), 90, np.uint8)
    assert frame_problem(as_bgr(np.full((180, 160), 90, np.uint8))) == "format"
    for frames in ([bgrx],):
        class Source:
            description = "test source"

            def read(self, frames=frames):
                time.sleep(0.01)
                return frames[0]

            def release(self) -> None:
                return None

        camera = Camera("x", opener=lambda stop: Source())
        camera.start()
        try:
            assert _wait(lambda camera=camera: camera.latest() is not None)
            frame = camera.latest(0)
            assert frame is not None and frame.image.shape == (120, 160, 3) and camera.state()[0] == "running"
        finally:
            camera.stop()


def test_only_the_newest_frame_is_kept_and_superseded_frames_are_counted(folder: Path):
    busy0 = _value("edge_camera_frames_dropped_total", reason="busy")
    camera = _camera(str(folder), fps=200.0)
    camera.start()
    try:
        assert _wait(lambda: camera.latest(0) is not None)  # seq 1 taken; nobody takes the next ones
        # Each frame replaced untaken counts as busy, so 4 counted means seq 6 is out. It was a 0.2 s sleep
        # (40 frames at 200/s), but a 1024x1024 JPEG decoded on a loaded machine gave 1 frame in that time
        # (seq 1, a full run with 2 xdist workers beside another run on 2 cores)
        assert _wait(lambda: _value("edge_camera_frames_dropped_total", reason="busy") >= busy0 + 4, 30)
        first = camera.latest(0)
        assert first is not None and first.seq > 5
        assert camera.latest(first.seq) is None or camera.latest(first.seq).seq > first.seq
    finally:
        camera.stop()
    assert _value("edge_camera_frames_dropped_total", reason="busy") > busy0


def test_folder_deleted_mid_run_reconnects_and_recovers(folder: Path, faces_dir: Path):
    reconnects0 = _value("edge_camera_reconnects_total")
    camera = _camera(str(folder))
    camera.start()
    try:
        assert _wait(lambda: camera.state()[0] == "running")
        shutil.rmtree(folder)
        assert _wait(lambda: camera.state()[0] in ("reconnecting", "error"))
        assert _wait(lambda: _value("edge_camera_reconnects_total") >= reconnects0 + 2)
        folder.mkdir()
        shutil.copy(faces_dir / "pexels" / "Test1.jpg", folder / "a.jpg")
        assert _wait(lambda: camera.state()[0] == "running")
        seq = camera.latest().seq if camera.latest() else 0
        assert _wait(lambda: camera.latest(seq) is not None)
    finally:
        camera.stop()
    assert camera.state()[0] == "stopped"


def _shades_video(path: Path, fps: float, count: int) -> Path:
    """A video of ``count`` frames, each one grey shade brighter than the last (its mean says which)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for index in range(count):
        writer.write(np.full((240, 320, 3), 20 + 40 * index, np.uint8))
    writer.release()
    return path


def _shade(frame_image: np.ndarray) -> int:
    """Which frame of a ``_shades_video`` this is."""
    return round((float(frame_image.mean()) - 20) / 40)


def test_a_video_file_plays_again_from_its_start_at_its_end_not_reopened_as_a_dropped_camera(
    tmp_path: Path,
):
    # A review: a file's end was handled as a dropped camera, so a 10 s lesson video made the component
    # "camera unstable" after three plays, with 1, 2, 4 ... 60 s of nothing between plays.
    video = _shades_video(tmp_path / "clip.avi", 50.0, 5)
    reconnects0 = _value("edge_camera_reconnects_total")
    camera = Camera(str(video), reconnect_min_s=0.05, reconnect_max_s=0.2, stall_timeout_s=1.0)
    camera.start()
    shades: list[int] = []
    try:
        while len(shades) < 14:
            frame = camera.latest(camera._taken_seq, wait_s=2.0)
            assert frame is not None, (camera.state(), shades)
            shades.append(_shade(frame.image))
            camera.check_stall()
        assert camera.state()[0] == "running"
        assert camera.reopens() == 0
    finally:
        camera.stop()
    assert _value("edge_camera_reconnects_total") == reconnects0
    assert shades.count(0) >= 2 and max(shades) == 4, shades  # played through, and from its start again


def _reopen_waits(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The wait before each reopen, as the camera's log says it ("...; reopening in 0.2 s")."""
    return re.findall(r"reopening in ([\d.]+) s", caplog.text)


def test_a_source_that_drops_each_session_at_once_is_reopened_ever_more_slowly(
    caplog: pytest.LogCaptureFixture,
):
    # As a network camera that accepts the stream and hangs up after a frame: before, it was reopened
    # every reconnect_min_s for ever (20 reopens in 20 s at the defaults).
    class HangsUp:
        description = "a stream that hangs up after its first frame"

        def __init__(self) -> None:
            self.first = True

        def read(self) -> np.ndarray | None:
            if self.first:
                self.first = False
                return np.zeros((48, 64, 3), np.uint8)
            return None

        def release(self) -> None:
            return None

    caplog.set_level(logging.INFO, logger="edge_agent.vision.camera")
    camera = Camera("test", reconnect_min_s=0.1, reconnect_max_s=0.4, stall_timeout_s=10.0,
                    opener=lambda stop: HangsUp())
    camera.start()
    try:
        assert _wait(lambda: len(_reopen_waits(caplog)) >= 5)
    finally:
        camera.stop()
    assert _reopen_waits(caplog)[:5] == ["0.1", "0.2", "0.4", "0.4", "0.4"]


def test_a_camera_that_glitches_after_a_good_session_is_reopened_soon_every_time(
    folder: Path, faces_dir: Path, caplog: pytest.LogCaptureFixture
):
    # Before, the wait doubled at every glitch for the life of the process, however long the camera ran
    # well in between: with the defaults, every glitch after the sixth cost a minute of lesson.
    good = (folder / "a.jpg").read_bytes()
    caplog.set_level(logging.INFO, logger="edge_agent.vision.camera")
    camera = _camera(str(folder), fps=20.0, reconnect_min_s=0.5, reconnect_max_s=4.0, stall_timeout_s=0.3)
    camera.start()
    try:
        for glitch in range(3):
            assert _wait(lambda: camera.state()[0] == "running")
            time.sleep(0.8)  # good frames for longer than stall_timeout_s
            (folder / "a.jpg").write_bytes(b"not a jpeg")  # unreadable frames: a stall
            assert _wait(lambda n=glitch: len(_reopen_waits(caplog)) > n)
            (folder / "a.jpg").write_bytes(good)
    finally:
        camera.stop()
    assert _reopen_waits(caplog) == ["0.5", "0.5", "0.5"]  # was 0.5, 1.0, 2.0


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("reconnect_min_s = 0.001", "camera.reconnect_min_s"),  # 910 reopens in 3 s
        ("reconnect_max_s = inf", "camera.reconnect_max_s"),  # a wait that long crashes the grabber thread
        ("reconnect_min_s = 1e300\nreconnect_max_s = 1e300", "camera.reconnect_min_s"),
        ("stall_timeout_s = inf", "camera.stall_timeout_s"),  # a hung read would never be replaced
    ],
)
def test_reconnect_and_stall_times_out_of_range_are_refused_with_the_key(setting: str, key: str):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[camera]\n{setting}\n")
    assert key in [path.split(" ")[0] for path, _ in caught.value.problems]


def test_source_that_cannot_be_opened_reports_a_fix_and_is_retried(tmp_path: Path):
    missing = str(tmp_path / "no-such-camera.mp4")
    with pytest.raises(CameraError, match="neither a device"):
        open_source(missing)
    reconnects0 = _value("edge_camera_reconnects_total")
    camera = Camera(missing, reconnect_min_s=0.02, reconnect_max_s=0.05)
    camera.start()
    try:
        assert _wait(lambda: _value("edge_camera_reconnects_total") >= reconnects0 + 3)
        state, detail = camera.state()
        assert state == "error" and "retrying" in detail
    finally:
        camera.stop()


def test_a_file_that_is_not_a_video_is_refused_with_a_fix(tmp_path: Path):
    notes = tmp_path / "camera.mp4"
    notes.write_text("not a video, just text with a video's name\n")
    with pytest.raises(CameraError, match="check that the file is a readable video"):
        open_source(str(notes))


def test_empty_image_folder_is_refused_with_a_message(tmp_path: Path):
    with pytest.raises(CameraError, match=r"no \.jpg/\.png"):
        open_source(str(tmp_path))


class _BlockingPort:
    """Hardware port fake: a camera whose second read hangs, as a hung GStreamer pipeline or a dead RTSP
    peer does."""

    description = "blocking test camera"

    def __init__(self, release: threading.Event) -> None:
        self.release_event = release
        self.first = True
        self.released = False

    def read(self) -> np.ndarray | None:
        if self.first:
            self.first = False
            return np.zeros((48, 64, 3), np.uint8)
        self.release_event.wait(10.0)
        return None

    def release(self) -> None:
        self.released = True


def test_a_read_that_hangs_is_a_stall_and_a_new_reader_reopens_the_source():
    unblock = threading.Event()
    ports: list[_BlockingPort] = []

    def opener(stop: threading.Event) -> _BlockingPort:
        ports.append(_BlockingPort(unblock))
        return ports[-1]

    camera = Camera("test", stall_timeout_s=0.2, reconnect_min_s=0.05, opener=opener)
    stalls0 = _value("edge_camera_stalls_total")
    camera.start()
    try:
        assert _wait(lambda: camera.latest() is not None)
        assert not camera.check_stall()
        time.sleep(0.3)  # the second read hangs
        assert camera.check_stall()
        assert _value("edge_camera_stalls_total") == stalls0 + 1
        # a new reader opened the source again and frames arrive, while the first read still hangs
        assert _wait(lambda: camera.latest(after_seq=1) is not None)
        assert len(ports) == 2 and camera.state()[0] == "running"
        time.sleep(0.3)  # the new reader's second read hangs too: no third reader beside a hung one
        camera.check_stall()
        assert len(ports) == 2
        unblock.set()  # the hung reads return: the replaced reader releases its source and ends
        assert _wait(lambda: ports[0].released)
    finally:
        unblock.set()
        camera.stop()


def test_a_camera_that_hangs_after_every_frame_is_reopened_ever_more_slowly():
    # Round 2: a camera that hung after a frame or two per connection was reopened every stall timeout for
    # ever. Each read here hangs for 0.3 s (then returns, so that the next replacement may start).
    opened: list[float] = []

    class Hangs:
        description = "a camera that hangs after its first frame"

        def __init__(self) -> None:
            self.first = True

        def read(self) -> np.ndarray | None:
            if self.first:
                self.first = False
                return np.zeros((48, 64, 3), np.uint8)
            time.sleep(0.3)
            return None

        def release(self) -> None:
            return None

    def opener(stop: threading.Event) -> Hangs:
        opened.append(time.monotonic())
        return Hangs()

    camera = Camera("test", stall_timeout_s=0.1, reconnect_min_s=0.1, reconnect_max_s=0.8, opener=opener)
    camera.start()
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            time.sleep(0.01)
    finally:
        camera.stop()
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    assert len(opened) >= 4 and max(gaps[-2:]) >= 0.7, [round(g, 2) for g in gaps]


# Camera sources as schools write them, each with the secret it must never show. Nothing listens on port 1,
# so each fails to open at once and its error is what status, STATUS= and the log show.
LEAKY_SOURCES = [
    # the XMEye URL of many Chinese IP cameras: credentials as path parameters
    ("rtsp://127.0.0.1:1/user=admin&password=Pw123xyz&channel=1&stream=0.sdp?", "Pw123xyz"),
    ("rtsp://admin:Pw@9Secret@127.0.0.1:1/stream1", "9Secret"),  # a raw "@" in the password
    ("rtsp://127.0.0.1:1/live?PWD=Tok3nPw&user=admin", "Tok3nPw"),
    ("rtspsrc location=rtsp://127.0.0.1:1/s user-id=admin user-pw=S3cretCamPw ! decodebin ! appsink",
     "S3cretCamPw"),
    ("rtmp://admin:Rtmp5ecret@127.0.0.1:1/live", "Rtmp5ecret"),  # no scheme we know: taken for a file
    # a review: a space in the password made it a "file", whose message showed the password in clear;
    # Hikvision's ?auth= is base64 of admin:S3cret
    ("rtsp://admin:Zq9 Spaced@127.0.0.1:1/Streaming/Channels/101", "Spaced"),
    ("http://127.0.0.1:1/ISAPI/Streaming/channels/101/picture?auth=YWRtaW46UzNjcmV0", "YWRtaW46UzNjcmV0"),
    # a review: a quote in the password ended the part hidden, and the state showed it whole
    ("rtsp://admin:Tom's2024@127.0.0.1:1/stream1", "2024"),
    ('rtsp://admin:pa"ss1@127.0.0.1:1/stream1', "ss1"),
]


@pytest.mark.parametrize(("source", "secret"), LEAKY_SOURCES)
def test_a_camera_that_cannot_be_opened_never_shows_its_password(
    source: str, secret: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    camera = Camera(source, reconnect_min_s=0.05, reconnect_max_s=0.1)
    camera.start()
    try:
        assert _wait(lambda: camera.state()[0] == "error", timeout=15.0), camera.state()
        detail = camera.state()[1]
    finally:
        camera.stop()
    assert "admin" not in detail and secret not in detail, detail
    assert secret not in caplog.text and "admin" not in caplog.text, caplog.text


def _state_levels(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.getMessage().split(":")[0].split()[1], r.levelname) for r in caplog.records
            if r.name == "edge_agent.vision.camera" and r.getMessage().startswith("camera ")]


def test_a_camera_that_fails_is_logged_as_a_warning_and_running_or_stopped_as_info(
    folder: Path, faces_dir: Path, caplog: pytest.LogCaptureFixture
):
    # Review: every state was logged at INFO, so `journalctl -p warning` never showed a failed camera.
    caplog.set_level(logging.INFO, logger="edge_agent.vision.camera")
    camera = _camera(str(folder))
    camera.start()
    try:
        assert _wait(lambda: camera.state()[0] == "running")
        shutil.rmtree(folder)  # the folder goes: reconnecting, then error while it cannot be opened
        assert _wait(lambda: camera.state()[0] == "error")
        folder.mkdir()
        shutil.copy(faces_dir / "pexels" / "Test1.jpg", folder / "a.jpg")
        assert _wait(lambda: camera.state()[0] == "running")
    finally:
        camera.stop()
    levels = dict(_state_levels(caplog))
    assert levels == {"running": "INFO", "reconnecting": "WARNING", "error": "WARNING", "stopped": "INFO"}, \
        _state_levels(caplog)


def test_a_stalled_camera_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="edge_agent.vision.camera")
    unblock = threading.Event()
    camera = Camera("test", stall_timeout_s=0.2, reconnect_min_s=0.05,
                    opener=lambda stop: _BlockingPort(unblock))
    camera.start()
    try:
        assert _wait(lambda: camera.latest() is not None)
        time.sleep(0.3)  # the second read hangs
        assert camera.check_stall()
    finally:
        unblock.set()
        camera.stop()
    assert ("stalled", "WARNING") in _state_levels(caplog), _state_levels(caplog)
    assert "camera stalled: no frame for 0.2 s" in caplog.messages  # not "0 s"


def test_a_frame_that_comes_just_after_the_analysis_tick_is_analysed_not_superseded(
    detector, faces_dir: Path
) -> None:
    # The lesson benchmark analysed 4.0-4.7 of its folder's 5 pictures a second: the folder plays at the
    # analysis rate, and a picture that came just after a tick was found only at the next one, beside the
    # picture after it, and dropped as superseded. Here every other tick has two pictures between it and
    # the next: one 20 ms after it, one 20 ms before the next; each must be analysed. A picture that this
    # machine's scheduler let out later than the loop waits after its tick (half a period) is not the
    # promise (a fresh-clone CI with 4 test workers on 2 cores: 1 of 12 came too late)
    from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
    from edge_agent.vision.pipeline import AttentionLoop, FrameAnalyser
    from edge_agent.vision.pose import LandmarkPose

    period = 0.2
    image = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test1.jpg")), (640, 480))
    ticks: list[float] = []
    ticked = threading.Condition()
    published: list[float] = []
    late: list[float] = []  # pictures due just after a tick that came after the loop's wait for them

    class TickedSource:
        description = "pictures timed against the analysis ticks"

        def __init__(self, stop: threading.Event) -> None:
            self.stop, self.tick = stop, 0.0
            self.due: list[float] = []

        def read(self) -> np.ndarray | None:
            while not self.due:
                with ticked:  # the next tick of an even count: two pictures in the period after it
                    seen = len(ticks)

                    def next_even_tick(seen: int = seen) -> bool:
                        return (len(ticks) > seen and len(ticks) % 2 == 0) or self.stop.is_set()

                    ticked.wait_for(next_even_tick, 2)
                    if self.stop.is_set():
                        return None
                    self.tick = ticks[-1]
                    self.due = [self.tick + 0.02, self.tick + period - 0.02]
            after_tick = len(self.due) == 2
            self.stop.wait(max(0.0, self.due.pop(0) - time.monotonic()))
            published.append(time.monotonic())
            if after_tick and published[-1] - self.tick > period / 2 - 0.02:
                late.append(published[-1] - self.tick)
            return image.copy()

        def release(self) -> None:
            pass

    def beat() -> None:
        with ticked:
            ticks.append(time.monotonic())
            ticked.notify_all()

    camera = Camera("timed", opener=TickedSource)
    loop = AttentionLoop(camera, FrameAnalyser(detector, LandmarkPose(), AttentionRules()), FaceTracker(),
                         WindowAggregator(), analysis_fps=1 / period, on_window=lambda _w: None, beat=beat)
    analysed_before = _value("edge_camera_frames_analysed_total")
    camera.start()
    loop.start()
    try:
        # six pairs whose first picture came in time (each late one's pair is one more)
        assert _wait(lambda: len(published) >= 12 + 2 * len(late), timeout=20)
    finally:
        loop.stop()
        camera.stop()
    analysed = _value("edge_camera_frames_analysed_total") - analysed_before
    # the last may still be unanalysed
    assert analysed >= len(published) - 1 - len(late), (analysed, len(published), late)


def test_the_analysis_stops_at_once_at_a_slow_rate_with_no_frame_coming(detector, tmp_path: Path) -> None:
    # A review: waiting for a frame due just after the tick for half a period made a stop wait out the
    # rest of it with the camera down: 4.9 s at 0.1 frames/s (0.00 s before).
    from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
    from edge_agent.vision.pipeline import AttentionLoop, FrameAnalyser
    from edge_agent.vision.pose import LandmarkPose

    camera = Camera(str(tmp_path / "absent.mp4"), reconnect_min_s=0.1, reconnect_max_s=0.2)
    ticks: list[float] = []
    loop = AttentionLoop(camera, FrameAnalyser(detector, LandmarkPose(), AttentionRules()), FaceTracker(),
                         WindowAggregator(), analysis_fps=0.1, on_window=lambda _w: None,
                         beat=lambda: ticks.append(time.monotonic()))
    camera.start()
    loop.start()
    try:
        assert _wait(lambda: bool(ticks))
        time.sleep(0.05)  # inside the first tick's wait for a frame
        started = time.monotonic()
        loop.stop()
        took = time.monotonic() - started
    finally:
        camera.stop()
    assert took < 1.0, took


def test_one_photo_of_two_faces_in_a_lesson_keeps_the_share_shown_and_a_silent_camera_clears_it(
    detector, faces_dir: Path
) -> None:
    # The demo's folder holds photos of two faces beside classes: each one put "too few faces" on the
    # teacher's page for a second, 23 times in 150 s. The share shown is over the last 10 s of frames.
    from types import SimpleNamespace

    from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
    from edge_agent.vision.pipeline import AttentionLoop, FrameAnalyser
    from edge_agent.vision.pose import LandmarkPose

    class_photo = cv2.imread(str(faces_dir / "voc_dlib" / "2008_004176.jpg"))  # 7 labelled faces
    two_faces = cv2.imread(str(faces_dir / "voc_dlib" / "2009_004587.jpg"))
    now = [1000.0]
    camera = SimpleNamespace(state=lambda: ("running", ""))
    loop = AttentionLoop(camera, FrameAnalyser(detector, LandmarkPose(), AttentionRules()),  # type: ignore[arg-type]
                         FaceTracker(), WindowAggregator(), on_window=lambda _w: None,
                         monotonic=lambda: now[0])
    for image in [class_photo] * 9 + [two_faces]:
        now[0] += 0.2
        loop.step(image, time.time())
    live = loop.live_section()
    assert 0.0 <= live["current_share"] <= 1.0 and live["faces"] >= 3, live
    now[0] += 10.0  # no frame for 10 s
    live = loop.live_section()
    assert live["current_share"] is None and live["faces"] == 0


def test_a_frame_read_as_the_camera_stops_is_not_kept_in_memory(folder: Path, monkeypatch) -> None:
    # A CI run kept a frame through a teacher's pause: stop() cleared the frame while the grabber was
    # checking one it had just read, which it then published into the closed camera
    import edge_agent.vision.camera as camera_module

    camera = _camera(str(folder), fps=50.0)
    checked = frame_problem
    calls: list[int] = []
    stopper = threading.Thread(target=camera.stop)

    def stop_during_the_check(image: np.ndarray) -> str | None:
        calls.append(1)
        if len(calls) == 3:  # a frame published already, the next one read: stop now, from outside
            stopper.start()
            assert _wait(lambda: not camera.started and camera.latest() is None)
        return checked(image)

    monkeypatch.setattr(camera_module, "frame_problem", stop_during_the_check)
    camera.start()
    try:
        assert _wait(lambda: stopper.ident is not None)
        stopper.join(5)
        assert not stopper.is_alive()
        assert camera.latest() is None
        assert camera.state() == ("stopped", "")
    finally:
        camera.stop()


def test_no_camera_image_stays_in_memory_while_the_hours_keep_the_camera_closed(
    detector, faces_dir: Path
) -> None:
    # A review: the analysis loop's last frame stayed in a local of its thread all night (and through a
    # teacher's pause) while the camera itself had dropped it
    import gc
    import weakref
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
    from edge_agent.vision.camera_hours import CameraHours
    from edge_agent.vision.pipeline import AttentionLoop, FrameAnalyser
    from edge_agent.vision.pose import LandmarkPose

    photo = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test1.jpg")), (320, 240))
    grabbed: list[weakref.ref[np.ndarray]] = []

    class Photos:
        description = "a camera in a classroom"

        def __init__(self, stop: threading.Event) -> None:
            self.stop = stop

        def read(self) -> np.ndarray | None:
            self.stop.wait(0.05)
            image = photo.copy()
            grabbed.append(weakref.ref(image))
            return image

        def release(self) -> None:
            return None

    shanghai = ZoneInfo("Asia/Shanghai")
    clock = {"now": datetime(2026, 9, 28, 17, 29, tzinfo=shanghai)}  # a Monday's last lesson
    camera = Camera("classroom", opener=Photos)
    loop = AttentionLoop(camera, FrameAnalyser(detector, LandmarkPose(), AttentionRules()), FaceTracker(),
                         WindowAggregator(), analysis_fps=10.0, on_window=lambda _w: None,
                         hours=CameraHours.parse(["mon-fri 07:30-17:30"]), local_now=lambda: clock["now"])
    analysed0 = _value("edge_camera_frames_analysed_total")
    camera.start()
    loop.start()
    try:
        assert _wait(lambda: _value("edge_camera_frames_analysed_total") >= analysed0 + 2, timeout=10)
        clock["now"] = datetime(2026, 9, 28, 17, 30, tzinfo=shanghai)  # the hours end
        assert _wait(lambda: loop.camera_state()[0] == "off_hours" and not camera.started)
        assert _wait(lambda: not any(t.name == "camera-grabber" for t in threading.enumerate()))
        time.sleep(0.3)  # a few ticks of the closed loop
        gc.collect()
        kept = sum(1 for ref in grabbed if ref() is not None)
        assert kept == 0, f"{kept} camera image(s) still in memory with the camera closed"
    finally:
        loop.stop()
        camera.stop()


def test_a_video_slower_than_a_frame_a_stall_timeout_plays_on_and_is_never_taken_for_stalled(tmp_path: Path):
    # A review: a slideshow video (a picture every 20 s, stall timeout 10 s) was paced inside the read, so
    # the wait for its next picture looked like a hung read: reopened from its first picture for ever.
    video = _shades_video(tmp_path / "slides.avi", 1.0, 4)  # 1 frame a second; the stall timeout 0.4 s
    camera = Camera(str(video), reconnect_min_s=0.05, reconnect_max_s=0.2, stall_timeout_s=0.4)
    stalls0 = _value("edge_camera_stalls_total")
    camera.start()
    shades: list[int] = []
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            frame = camera.latest(camera._taken_seq, wait_s=0.02)
            if frame is not None:
                shades.append(_shade(frame.image))
        assert camera.reopens() == 0 and camera.state()[0] == "running", (camera.state(), shades)
    finally:
        camera.stop()
    assert _value("edge_camera_stalls_total") == stalls0
    assert set(shades) >= {0, 1, 2, 3}, shades  # past its first picture


def _grabbers(before: set[threading.Thread]) -> list[threading.Thread]:
    """The camera grabber threads alive now that were not alive at ``before``."""
    return [t for t in threading.enumerate()
            if t.name == "camera-grabber" and t.is_alive() and t not in before]


def test_an_open_that_never_returns_is_an_error_and_is_tried_again_on_one_new_thread_only():
    # A review: an open that never returns (V4L2 and GStreamer opens have no timeout; nvarguscamerasrc with
    # a wedged nvargus-daemon) read "starting", and the component was healthy, for ever.
    unblock = threading.Event()
    opens: list[float] = []

    class Frames:
        description = "a camera that works once opened"

        def read(self) -> np.ndarray | None:
            time.sleep(0.01)
            return np.zeros((48, 64, 3), np.uint8)

        def release(self) -> None:
            return None

    def opener(stop: threading.Event) -> Frames:
        opens.append(time.monotonic())
        if len(opens) <= 2:
            unblock.wait(10.0)  # the driver does not answer
        return Frames()

    before = set(threading.enumerate())
    stalls0 = _value("edge_camera_stalls_total")
    camera = Camera("test", stall_timeout_s=0.2, reconnect_min_s=0.05, opener=opener)
    camera.start()
    try:
        assert camera.state()[0] == "starting"
        deadline = time.monotonic() + 1.0  # five stall timeouts of a blocked open
        while time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            time.sleep(0.02)
        state, detail = camera.state()
        assert state == "error" and "open blocked for" in detail, (state, detail)
        # opened again once on a new thread; not a third time while the first open still blocks
        assert len(opens) == 2 and len(_grabbers(before)) == 2
        assert _value("edge_camera_stalls_total") == stalls0 + 1
        unblock.set()  # the driver answers: the camera runs, the thread left behind ends
        assert _wait(lambda: camera.latest() is not None)
        assert camera.state()[0] == "running"
        assert _wait(lambda: len(_grabbers(before)) == 1)
    finally:
        unblock.set()
        camera.stop()


def test_a_network_camera_that_never_answers_is_retried_with_backoff_not_taken_for_a_wedged_driver():
    # A review: an RTSP camera that accepts the connection and never answers was declared a blocked open
    # just before FFmpeg's fixed 10-s timeout: "a wedged nvargus-daemon", reopened on a new thread every
    # 10 s for ever with no backoff, and a stop waited 5 s on the thread left behind
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])  # and never a word back
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"rtsp://admin:Secret1@127.0.0.1:{server.getsockname()[1]}/stream1"
    before = set(threading.enumerate())
    camera = Camera(url, stall_timeout_s=1.0, reconnect_min_s=0.5, reconnect_max_s=1.0)
    seen: set[tuple[str, str]] = set()
    grabbers = 0
    camera.start()
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            seen.add(camera.state())
            grabbers = max(grabbers, len(_grabbers(before)))
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        camera.stop()
        took = time.monotonic() - started
        server.close()
        for connection in accepted:
            connection.close()
    assert not [detail for _, detail in seen if "blocked" in detail or "driver" in detail], seen
    assert any(state == "error" and "cannot open stream rtsp://***@127.0.0.1" in detail
               for state, detail in seen), seen
    assert grabbers == 1 and 2 <= len(accepted) <= 4, (grabbers, len(accepted))
    assert took < 2.0, took


def test_a_replaced_grabber_whose_open_fails_at_last_leaves_the_new_ones_state_and_count_alone(
    caplog: pytest.LogCaptureFixture,
):
    # A review: the grabber left behind in a blocked open wrote its failure over the new one's "running"
    # and counted one more reopen when its open returned at last
    unblock = threading.Event()
    opens: list[float] = []

    class Frames:
        description = "a camera that works once opened"

        def read(self) -> np.ndarray | None:
            time.sleep(0.01)
            return np.zeros((48, 64, 3), np.uint8)

        def release(self) -> None:
            return None

    def opener(stop: threading.Event) -> Frames:
        opens.append(time.monotonic())
        if len(opens) == 1:
            unblock.wait(10.0)  # the driver does not answer, then fails
            raise CameraError("the first open failed at last")
        return Frames()

    before = set(threading.enumerate())
    camera = Camera("test", stall_timeout_s=0.2, reconnect_min_s=0.05, opener=opener)
    camera.start()
    try:
        deadline = time.monotonic() + 2.0
        while len(opens) < 2 and time.monotonic() < deadline:
            camera.check_stall()  # as the analysis loop does
            time.sleep(0.02)
        assert _wait(lambda: camera.state()[0] == "running"), camera.state()
        reopens = camera.reopens()
        with caplog.at_level(logging.INFO, logger="edge_agent.vision.camera"):
            unblock.set()
            assert _wait(lambda: len(_grabbers(before)) == 1)
        assert camera.reopens() == reopens
        assert "the first open failed at last" not in caplog.text, caplog.text
    finally:
        unblock.set()
        camera.stop()


def test_pauses_while_a_read_hangs_leave_one_thread_behind_not_one_more_each_time():
    # A review: each stop()/start() (a teacher's pause, the camera's hours) while a read hung left one more
    # grabber thread for good: 6 after five pauses.
    unblock = threading.Event()
    ports: list[_BlockingPort] = []

    def opener(stop: threading.Event) -> _BlockingPort:
        ports.append(_BlockingPort(unblock))  # its second read hangs
        return ports[-1]

    before = set(threading.enumerate())
    camera = Camera("test", stall_timeout_s=0.2, reconnect_min_s=0.05, opener=opener)
    camera.start()
    try:
        for _ in range(5):
            deadline = time.monotonic() + 0.4
            while time.monotonic() < deadline:
                camera.check_stall()  # as the analysis loop does
                time.sleep(0.02)
            camera.stop(timeout=0.05)  # the pause: the read never returns
            camera.start()  # the pause ends
        # the first hung read was left behind, and the reader that replaced it hangs too: no third
        assert len(_grabbers(before)) == 2 and len(ports) == 2
        state, detail = camera.state()
        assert state == "error" and "blocked" in detail, (state, detail)
        unblock.set()  # the reads return: a new reader opens the camera
        assert _wait(lambda: len(_grabbers(before)) <= 1)
        deadline = time.monotonic() + 2.0
        while camera.latest() is None and time.monotonic() < deadline:
            camera.check_stall()
            time.sleep(0.02)
        assert camera.latest() is not None and len(ports) >= 3
    finally:
        unblock.set()
        camera.stop()

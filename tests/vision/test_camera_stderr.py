"""OpenCV's and FFmpeg's own messages stay off the daemon's stderr (the journal, under systemd).

Each test runs a real Python process, imported as the daemon is (cv2 first, by the command line's
modules, then the camera), that reads a real damaged video or a missing camera through the project's
Camera, and counts the lines on its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]

READER = """
import json, sys, time
import cv2  # the daemon imports it before the camera (edge_agent.vision.cli_attention)
from edge_agent.vision.camera import Camera
source, wanted, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
camera = Camera(source, reconnect_min_s=0.1, reconnect_max_s=0.2, stall_timeout_s=5.0)
camera.start()
frames, seq, deadline = 0, 0, time.monotonic() + seconds
while time.monotonic() < deadline and frames < wanted:
    frame = camera.latest(after_seq=seq, wait_s=0.5)
    if frame is not None:
        frames, seq = frames + 1, frame.seq
reopens = camera.reopens()
camera.stop()
print(json.dumps({"frames": frames, "reopens": reopens}))
"""


def corrupt_mjpeg(path: Path, frames: int = 20) -> Path:
    """An MJPEG AVI whose every frame has stray restart markers in its scan data (a camera or cable
    sending damaged frames): FFmpeg decodes each and complains about each."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write((rng.random((240, 320, 3)) * 255).astype(np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    at = data.find(b"\xff\xda")
    while at >= 0:
        for k in range(at + 300, at + 340, 2):
            data[k : k + 2] = b"\xff\xd3"
        at = data.find(b"\xff\xda", at + 2)
    path.write_bytes(bytes(data))
    return path


def read_in_a_process(source: str, wanted: int, seconds: float) -> tuple[dict[str, int], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}  # as systemd starts it
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-c", READER, source, str(wanted), str(seconds)],
                            capture_output=True, text=True, timeout=120, check=True, env=env, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr.splitlines()


def test_a_camera_sending_corrupt_frames_writes_no_ffmpeg_line_per_frame_to_stderr(tmp_path: Path) -> None:
    # A review: "[mjpeg @ 0x...] overread 8" on stderr for every frame, 1,800 lines a minute at 30 fps
    video = corrupt_mjpeg(tmp_path / "corrupt.avi")
    seen, stderr = read_in_a_process(str(video), wanted=30, seconds=30)
    assert seen["frames"] >= 30  # the frames were read and decoded (damaged), through the file's loop
    assert [line for line in stderr if "@ 0x" in line] == []


def test_a_missing_camera_reopened_writes_no_opencv_warnings_to_stderr() -> None:
    # A review: two "[ WARN:0@...] ... can't open camera by index" lines at each reopen
    missing = next(str(n) for n in range(63, 0, -1) if not Path(f"/dev/video{n}").exists())
    seen, stderr = read_in_a_process(missing, wanted=1, seconds=2.0)
    assert seen["frames"] == 0 and seen["reopens"] >= 3
    assert [line for line in stderr if "WARN" in line] == []

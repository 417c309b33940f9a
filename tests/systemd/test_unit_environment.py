"""The daemon unit's Environment= lines keep OpenCV's and FFmpeg's own messages out of the journal, with
the OpenCV this project installs: raw cv2 (no edge_agent module) reading a damaged video and a missing
camera under the unit's environment writes nothing to stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.vision.test_camera_stderr import corrupt_mjpeg

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"

RAW_READER = """
import sys, cv2
capture = cv2.VideoCapture(sys.argv[1])
print(sum(1 for _ in range(20) if capture.read()[0]))
for _ in range(2):
    cv2.VideoCapture(int(sys.argv[2]), cv2.CAP_V4L2)
"""


def unit_environment() -> dict[str, str]:
    lines = UNIT.read_text().splitlines()
    pairs = (line.split("=", 1)[1] for line in lines if line.startswith("Environment="))
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_units_environment_silences_opencv_and_ffmpeg_on_stderr(tmp_path: Path) -> None:
    environment = unit_environment()
    assert environment.get("OPENCV_FFMPEG_LOGLEVEL") == "-8" and environment.get("OPENCV_LOG_LEVEL")
    video = corrupt_mjpeg(tmp_path / "corrupt.avi")
    missing = next(str(n) for n in range(63, 0, -1) if not Path(f"/dev/video{n}").exists())
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")} | environment
    result = subprocess.run([sys.executable, "-c", RAW_READER, str(video), missing], capture_output=True,
                            text=True, timeout=60, check=True, env=env)
    assert result.stdout.strip() == "20"
    assert result.stderr.splitlines() == []

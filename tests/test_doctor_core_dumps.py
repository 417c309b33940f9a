"""`edge-agent doctor` reads a camera frame: like `run`, `demo` and `attention calibrate`, it allows no core
file, which would hold that frame."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from tests.test_doctor import _class_video, write_config

# doctor as the command line runs it, then what its process allows once it has read the frame
DOCTOR_THEN_LIMITS = """
import ctypes, json, resource, sys
from edge_agent.cli import main
code = main(["doctor", "--json", "--config", sys.argv[1]])
dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
print(json.dumps({"core": resource.getrlimit(resource.RLIMIT_CORE), "dumpable": dumpable}))
"""


def test_doctor_reading_a_camera_frame_allows_no_core_file(tmp_path: Path) -> None:
    # A review: a SIGABRT while doctor waited on the broker's TLS handshake, after its camera check, left a
    # 100 MB core from which the class frame was carved, faces readable.
    # Started with cores allowed where this process may allow them: a doctor command run in this process
    # before (the CLI tests of test_doctor.py) forbade them here for good. A new program is dumpable
    # whatever this process is (execve sets it again), so that tells the fix apart in any order.
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    video = _class_video(tmp_path / "class.avi")
    config = write_config(tmp_path)
    camera = f'[camera]\nsource = "{video}"'
    config.write_text(config.read_text().replace("[camera]\nenabled = false", camera))
    allow = lambda: resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # noqa: E731
    done = subprocess.run([sys.executable, "-c", DOCTOR_THEN_LIMITS, str(config)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path,
                          preexec_fn=allow)
    *printed, last = done.stdout.strip().splitlines()
    camera = next(r for r in json.loads("\n".join(printed)) if r["name"] == "camera")
    assert camera["detail"].endswith("delivered a 160x120 frame"), (camera, done.stderr[-2000:])
    assert json.loads(last) == {"core": [0, 0], "dumpable": 0}

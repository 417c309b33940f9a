"""Frame sources behind one small protocol: the only module that opens OpenCV captures.

``open_source`` understands a V4L2 index or /dev/videoN, a GStreamer pipeline (contains ``!``, e.g. a CSI
camera through nvarguscamerasrc), an rtsp:// or http(s):// URL, a video file, and a folder of images
(tests and demos). ``read`` returns a frame, an empty array for a frame that could not be decoded, or None
when the source has ended or dropped (the camera thread then reconnects). A video file and a folder loop:
at its end a file plays again from its start (before, its end was taken for a dropped camera: "camera
unstable", and ever longer waits between plays).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_agent.config import without_credentials
from edge_agent.errors import CameraError
from edge_agent.image_files import jpeg_file_complete, opencv_file_name, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# An image folder is listed again at most this often (a review: listed at every frame, 66 ms of CPU each
# at 10,000 images); a picture that is gone makes the next read list it again at once
FOLDER_RESCAN_S = 2.0


def folder_images(folder: Path) -> list[Path]:
    """The images an image-folder source shows, subfolders included, in name order."""
    try:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError:
        return []


class FrameSource(Protocol):
    description: str

    def read(self) -> np.ndarray | None: ...

    def release(self) -> None: ...


def classify(source: str) -> str:
    """'v4l2', 'gstreamer', 'url', 'folder' or 'file'."""
    text = source.strip()
    # /dev/v4l/by-id/... too: the name IT gives a USB camera so that it keeps it when plugged in elsewhere
    device = text.startswith("/dev/") and not Path(text).is_file() and not Path(text).is_dir()  # /dev/shm
    if re.fullmatch(r"\d+", text) or device:
        return "v4l2"
    # the scheme first: a camera's password may hold a "!" (rtsp://admin:Secret!1@...), or a space (it
    # was taken for a file name, and the "not an existing file" message showed the password: a review)
    if re.match(r"^(rtsp|rtsps|http|https)://", text, re.IGNORECASE) and not re.search(r"\s!\s", text):
        return "url"
    # a folder or file first: a path may hold a "!" ("lesson!1.mp4", a review), a pipeline never exists
    if _is(Path.is_dir, text):
        return "folder"
    if _is(Path.is_file, text) or "!" not in text:
        return "file"
    return "gstreamer"


def _is(test: Callable[[Path], bool], text: str) -> bool:
    try:
        return test(Path(text))
    except (OSError, ValueError):  # a long pipeline is too long a name (ENAMETOOLONG), a NUL in it
        return False


class _Pacer:
    """Releases frames no faster than ``fps`` so files and folders behave like a live camera."""

    def __init__(self, fps: float, stop: threading.Event | None) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next = time.monotonic()
        self.stop = stop or threading.Event()

    def wait(self) -> None:
        delay = self.next - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        self.next = max(self.next + self.period, time.monotonic())


class ImageFolderSource:
    """Loops over the images of a folder (and subfolders) in path order; a deleted folder ends it."""

    def __init__(self, folder: Path, fps: float = 30.0, stop: threading.Event | None = None) -> None:
        self.folder = folder
        self.description = f"image folder {folder}"
        self._pacer = _Pacer(fps, stop)
        self._index = 0
        # images found damaged, with their mtime: not decoded again (libjpeg wrote a line to stderr, so to
        # the journal, at every decode: 451 lines in 30 s from one truncated JPEG, a review)
        self._damaged: dict[Path, int] = {}
        self._listed: list[Path] = []
        self._listed_at: float | None = None  # monotonic; None: list the folder at the next read
        if not self._files():
            raise CameraError(f"image folder {folder} holds no .jpg/.png images; check camera.source")

    def _files(self) -> list[Path]:
        now = time.monotonic()
        if self._listed_at is None or now - self._listed_at >= FOLDER_RESCAN_S:
            self._listed, self._listed_at = folder_images(self.folder), now
        return self._listed

    def read(self) -> np.ndarray | None:
        self._pacer.wait()
        files = self._files()
        if not files:
            return None
        path = files[self._index % len(files)]
        self._index += 1
        unusable = np.zeros((0, 0, 3), np.uint8)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            self._listed_at = None  # deleted or moved: a deleted folder ends the source at the next read
            return unusable
        if self._damaged.get(path) == stamp:
            return unusable
        try:
            # a JPEG without its end marker is cut short: libjpeg decodes it grey below the cut, and
            # complains (only its tail is read, unless data follows the picture: a phone's motion photo)
            truncated = path.suffix.lower() in (".jpg", ".jpeg") and not jpeg_file_complete(path)
        except OSError:
            return unusable
        image = None if truncated else read_image(path)
        if image is None:
            self._damaged[path] = stamp
            return unusable
        return image

    def release(self) -> None:
        self._index = 0
        self._listed_at = None


class OpenCvSource:
    """cv2.VideoCapture for devices, pipelines, URLs and files (files paced to their frame rate)."""

    def __init__(
        self, source: str, kind: str, *, width: int, height: int, stop: threading.Event | None = None,
        open_timeout_s: float = 10.0, min_fps: float = 0.0,
    ) -> None:
        """``min_fps``: a file plays at least this fast (the camera's 2 frames a stall timeout)."""
        self.description = _describe(source, kind)
        self._capture = _open_capture(source, kind, width, height, open_timeout_s)
        self._pacer: _Pacer | None = None
        if kind == "file":
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self._pacer = _Pacer(max(fps if 0 < fps <= 240 else 30.0, min_fps), stop)

    def read(self) -> np.ndarray | None:
        if self._pacer is not None:
            self._pacer.wait()
        try:
            ok, frame = self._capture.read()
            if not ok and self._pacer is not None:  # a file's end: it plays again from its first frame
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._capture.read()
        except cv2.error:
            return np.zeros((0, 0, 3), np.uint8)
        if not ok:
            return None  # a file with no frame to read from its start either: ended
        return frame  # type: ignore[no-any-return]

    def release(self) -> None:
        self._capture.release()


def _describe(source: str, kind: str) -> str:
    """The source as status, logs and errors show it: never a user or password it holds, in whatever form
    (rtsp://user:pw@, XMEye's /user=admin&password=, rtspsrc user-pw=, an rtmp:// URL taken for a file)."""
    if kind == "url":
        return "stream " + without_credentials(source)
    if kind == "gstreamer":
        return "GStreamer pipeline"
    return f"{kind} {without_credentials(source)}"


def _v4l2_index(source: str) -> int:
    """The N of /dev/videoN that ``source`` (an index, the device, or a link to it) names."""
    if source.isdigit():
        return int(source)
    match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(source))
    if match is not None:
        return int(match.group(1))
    if not os.path.lexists(source):
        raise CameraError(f"{source} does not exist: check that the camera is plugged in "
                          "(ls -l /dev/v4l/by-id/ lists the cameras this board sees)")
    raise CameraError(f"{source} is not a video device: name /dev/videoN or a link to one "
                      "(/dev/v4l/by-id/...)")


def _open_capture(source: str, kind: str, width: int, height: int, timeout_s: float) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC,
              int(timeout_s * 1000)]
    if kind == "v4l2":
        capture = cv2.VideoCapture(_v4l2_index(source), cv2.CAP_V4L2)
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        hint = (f"check that {source} exists, the service user is in group 'video', "
                "and no other program uses it")
    elif kind == "gstreamer":
        capture = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        hint = ("check the pipeline with gst-launch-1.0 and that OpenCV was built with GStreamer "
                "(JetPack's is)")
    elif kind == "url":
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        hint = "check the camera's address, credentials and that it is on the network"
    else:
        if not Path(source).is_file():
            raise CameraError(
                f"camera source {without_credentials(source)!r} is neither a device, URL, folder nor an "
                "existing file")
        capture = cv2.VideoCapture(opencv_file_name(source))
        hint = "check that the file is a readable video"
    if not capture.isOpened():
        capture.release()
        raise CameraError(f"cannot open {_describe(source, kind)}: {hint}")
    return capture


def open_source(
    source: str, width: int = 640, height: int = 480, stop: threading.Event | None = None,
    *, folder_fps: float = 30.0, min_fps: float = 0.0, open_timeout_s: float = 10.0,
) -> FrameSource:
    """Open a source by its config string; raises CameraError with a fix when it cannot be opened. Files
    and folders play at least ``min_fps`` frames a second; a URL's open and reads give up after
    ``open_timeout_s``."""
    source = source.strip()
    kind = classify(source)
    if kind == "folder":
        return ImageFolderSource(Path(source), max(folder_fps, min_fps), stop)
    return OpenCvSource(source, kind, width=width, height=height, stop=stop, min_fps=min_fps,
                        open_timeout_s=open_timeout_s)

"""Picture files read and written without crashing on their names.

OpenCV 5.1's ``imread``, ``imwrite`` and ``VideoCapture`` pass the name on as UTF-8, and a name that is not
(a folder copied from a camera's SD card or an old Windows share: ``cl\\xe9.jpg`` in Latin-1 reaches Python as
a lone surrogate) crashed the whole process with SIGSEGV, not an exception: one such photo in the camera's
image folder stopped the daemon, answers and all (a review). Such a picture is decoded from its bytes
(``cv2.imdecode``: EXIF orientation applied the same as ``imread``); any other through its name, which
holds no copy of the file in memory (a 4K PNG's bytes, 15-20 MB, were one more frame's worth).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge_agent.errors import CameraError

_JPEG_EOI = b"\xff\xd9"


def read_image(path: Path) -> np.ndarray | None:
    """The BGR picture in ``path``; None when it cannot be read or decoded."""
    name = str(path)
    if _utf8(name):
        return cv2.imread(name, cv2.IMREAD_COLOR)  # type: ignore[no-any-return]
    try:
        data = path.read_bytes()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    if not data:  # imdecode asserts on an empty buffer
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # type: ignore[no-any-return]


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_image(path: Path, image: np.ndarray) -> None:
    """``image`` in the format ``path``'s suffix names; cv2.error for a suffix OpenCV has no encoder for."""
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise cv2.error(f"OpenCV could not encode a {path.suffix} picture")
    path.write_bytes(encoded.tobytes())


def opencv_file_name(path: Path | str) -> str:
    """``path`` as a name OpenCV's video capture can be given; CameraError where it would crash on it."""
    name = str(path)
    if not _utf8(name):
        raise CameraError(
            f"{name.encode('utf-8', 'backslashreplace').decode()}: OpenCV cannot open a file whose name is "
            "not UTF-8 (it was named on a system with another encoding): rename it"
        )
    return name


def jpeg_file_complete(path: Path) -> bool:
    """jpeg_complete of the file, reading only its tail where its end marker is there (the usual case)."""
    with path.open("rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - 64))  # the file's own size: no second stat
        if _ends_with_the_picture(file.read()):
            return True
        file.seek(0)
        return _walks_to_the_end(file.read())


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's bytes hold the whole picture: its end-of-image marker after the last scan.

    The marker usually ends the file (padding after it allowed), but phones append their own data after it
    (a "motion photo" carries a video there), so where it does not, the file's segments are walked to the
    marker that ends the picture; an EXIF thumbnail's own end marker, inside a segment, does not count.
    """
    return _ends_with_the_picture(data[-64:]) or _walks_to_the_end(data)


def _ends_with_the_picture(tail: bytes) -> bool:
    return tail.rstrip(b"\0\r\n ").endswith(_JPEG_EOI)  # padding after the end marker allowed


def _walks_to_the_end(data: bytes) -> bool:
    pos = 2  # after the start-of-image marker
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xD9:
            return True
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
                pos = _next_marker(data, pos)
    return False


def _next_marker(data: bytes, pos: int) -> int:
    """Where the first marker at or after ``pos`` in entropy-coded data starts (0xFF00 is a stuffed byte,
    0xFFD0-D7 a restart marker inside the scan); len(data) when there is none."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        follower = data[pos + 1]
        if follower != 0x00 and not 0xD0 <= follower <= 0xD7 and follower != 0xFF:
            return pos
        pos += 1 if follower == 0xFF else 2

"""Signed KT model packages for update tests, and the https server a fleet would fetch them from.

Packages are the shipped default KT package, copied, changed where a test needs it, and signed with a
test key. :func:`shift_output_bias` makes a package whose answers differ measurably from the shipped one,
and :func:`first_step_mastery` says what a package answers, so a test can tell which version served it.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edge_agent.kt.package import DEFAULT_PACKAGE_DIR, load_package
from edge_agent.provisioning.ca import FleetCA
from edge_agent.provisioning.model_package import extract_tar, sign_package


def make_package(
    base: Path,
    key: Path,
    version: str,
    change: Callable[[Path], None] | None = None,
    *,
    sign: bool = True,
    model: str = "kt",
) -> Path:
    """The default KT package as a signed tar (signed after ``change``, so only the content differs),
    named ``model`` in its signed manifest."""
    folder = base / f"build-{version}"
    shutil.copytree(DEFAULT_PACKAGE_DIR, folder)  # metadata.json keeps the trainer's version, as a school's
    if change is not None:
        change(folder)
    if sign:
        sign_package(folder, key, model, version)
    archive = base / f"kt-{version}.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def drop(archive: Path, inbox: Path) -> Path:
    """As an IT person would: copy under a hidden name, then rename into place."""
    inbox.mkdir(parents=True, exist_ok=True)
    hidden = inbox / f".{archive.name}.copying"
    shutil.copy(archive, hidden)
    return hidden.rename(inbox / archive.name)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_after_signing(archive: Path) -> None:
    """Change one byte of kt_step.onnx inside the signed tar."""
    work = archive.with_suffix(".x")
    extract_tar(archive, work)
    flip_byte(work / "kt_step.onnx")
    with tarfile.open(archive, "w") as tar:
        for path in sorted(work.iterdir()):
            tar.add(path, arcname=path.name)


def shift_output_bias(delta: float) -> Callable[[Path], None]:
    """A package change: add ``delta`` to the step model's output bias (every mastery moves up)."""

    def change(folder: Path) -> None:
        model = onnx.load(str(folder / "kt_step.onnx"))
        for tensor in model.graph.initializer:
            if tensor.name == "out.bias":
                shifted = numpy_helper.to_array(tensor) + np.float32(delta)
                tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.float32), tensor.name))
                break
        else:
            raise AssertionError("kt_step.onnx has no out.bias initializer")
        onnx.save(model, str(folder / "kt_step.onnx"))

    return change


def slow_to_load(nodes: int) -> Callable[[Path], None]:
    """A package change: a chain of ``nodes`` Relu nodes on a side output of the step model, which ONNX
    Runtime takes seconds to load (100,000: about 7 s on a 2-core VM), as a TensorRT build takes minutes."""

    def change(folder: Path) -> None:
        model = onnx.load(str(folder / "kt_step.onnx"))
        previous = model.graph.input[2].name  # h: any input will do
        for n in range(nodes):
            model.graph.node.append(onnx.helper.make_node("Relu", [previous], [f"slow{n}"]))
            previous = f"slow{n}"
        model.graph.output.append(onnx.helper.make_tensor_value_info(previous, onnx.TensorProto.FLOAT, None))
        onnx.save(model, str(folder / "kt_step.onnx"))

    return change


def first_step_mastery(package_dir: Path, skill_id: str, correct: bool = True) -> float:
    """The mastery of ``skill_id`` the package gives a new student after one answer on it (as the API
    rounds it), computed directly with ONNX Runtime."""
    package = load_package(package_dir)
    k = package.skill_index[skill_id]
    session = ort.InferenceSession(str(package.step_model), providers=["CPUExecutionProvider"])
    feeds = {
        "skill": np.array([k], np.int64),
        "correct": np.array([int(correct)], np.int64),
        "h": np.zeros((1, package.hidden), np.float32),
        "c": np.zeros((1, package.hidden), np.float32),
    }
    probs = session.run(["probs"], feeds)[0]
    return round(float(probs[0][k]), 4)


class HttpsFileServer:
    """An https file server on loopback with a certificate from ``ca`` (the update server)."""

    def __init__(self, root: Path, ca: FleetCA, handler_class: type[QuietHandler] | None = None) -> None:
        key, cert = ca.issue_server("127.0.0.1")
        (root / "server.key").write_bytes(key)
        (root / "server.pem").write_bytes(cert)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(root / "server.pem", root / "server.key")
        handler = lambda *a: (handler_class or QuietHandler)(*a, directory=str(root))  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-https", daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

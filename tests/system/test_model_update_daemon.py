"""Signed KT model updates in the real daemon (``build(config)`` in-process, real files and models).

Packages are the shipped default KT package, copied, changed where a test needs it, and signed with a
test key; the daemon trusts only that key. Delivery is the inbox folder and the model_update command's
download (https on loopback with a test CA, and file URLs for the downloader alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.assembly import Assembly, build
from edge_agent.config import Config
from edge_agent.errors import CommandRefused
from edge_agent.kt.component import KTComponent
from edge_agent.kt.package import DEFAULT_PACKAGE_DIR, KTPackage, load_package
from edge_agent.kt.service import KTService
from edge_agent.provisioning.ca import FleetCA
from edge_agent.provisioning.model_package import generate_signing_key
from edge_agent.sync.commands import CommandDispatcher
from edge_agent.telemetry import metrics
from edge_agent.updates import DownloadFailed, download, file_away
from tests.system.harness import answer, local_config, post_answers
from tests.system.harness import http as http_request
from tests.system.model_packages import (
    HttpsFileServer,
    QuietHandler,
    drop,
    first_step_mastery,
    make_package,
    shift_output_bias,
    slow_to_load,
    tamper_after_signing,
)

pytestmark = pytest.mark.timeout(120)


# -- packages ----------------------------------------------------------------------------------------


def set_hidden(size: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        (folder / "metadata.json").write_text(json.dumps(meta | {"hidden": size}))

    return change


def rename_first_skill(folder: Path) -> None:
    skills = json.loads((folder / "skills.json").read_text())
    old = skills["skills"][0]["id"]
    for name in ("skills.json", "items.json"):
        text = (folder / name).read_text().replace(f'"{old}"', '"renamed-skill"')
        (folder / name).write_text(text)


def corrupt_onnx(folder: Path) -> None:
    (folder / "kt_step.onnx").write_bytes(b"not an onnx model, but validly signed")


# -- the daemon ----------------------------------------------------------------------------------------


class Board:
    """One daemon run on its own event loop thread; ``restart`` runs a new one on the same state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.assembly: Assembly | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, kt_runs: bool = True) -> Board:
        self.assembly = assembly = build(self.config)

        async def run() -> int:
            self._loop = asyncio.get_running_loop()
            return await assembly.daemon.run()

        self._thread = threading.Thread(target=lambda: asyncio.run(run()), name="test-daemon", daemon=True)
        self._thread.start()
        wait_for(lambda: assembly.daemon.state == "running" and (self.service() is not None or not kt_runs),
                 30, "start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self.assembly is not None:
            self._loop.call_soon_threadsafe(self.assembly.daemon.request_stop)
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the daemon did not stop"
        self._loop = self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.web.port}"

    @property
    def inbox(self) -> Path:
        return self.config.paths.state_dir / "inbox"

    def service(self) -> KTService | None:
        inner = self.assembly.kt.inner if self.assembly and self.assembly.kt else None
        return inner.get_service() if isinstance(inner, KTComponent) else None

    def running_version(self) -> str | None:
        assert self.assembly is not None and self.assembly.updates is not None
        return self.assembly.updates.versions().get("kt")

    def package(self) -> KTPackage:
        service = self.service()
        assert service is not None
        return service.package


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("keys")
    generate_signing_key(base / "signing.key", base / "signing.pub")
    return base / "signing.key", base / "signing.pub"


def board_config(base: Path, public_key: Path, **updates: Any) -> Config:
    data = local_config(base, faces=None)
    data["updates"] = {"public_key_file": str(public_key), "poll_interval_s": 0.2, **updates}
    return Config.model_validate(data)


class AnswerStream:
    """Posts one answer every 20 ms from another thread; every one must be applied."""

    def __init__(self, url: str, package: KTPackage, student: str) -> None:
        self.url, self.package, self.student = url, package, student
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="answer-stream", daemon=True)

    def _run(self) -> None:
        items = self.package.items
        while not self._stop.is_set():
            item = items[self.sent % len(items)]
            try:
                [result] = post_answers(
                    self.url, [answer(self.student, item.id, item.skill_id, True, f"stream-{self.sent}")]
                )
                if result["status"] != "applied":
                    self.errors.append(str(result["status"]))
            except AssertionError as exc:
                self.errors.append(str(exc))
            self.sent += 1
            time.sleep(0.02)

    def __enter__(self) -> AnswerStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)


def simulate_crash_while_trying(model_dir: Path, running: str, tried: str) -> None:
    """What a process killed inside the new model's load leaves: ``current`` on it, ``trial`` present."""
    shutil.copytree(model_dir / "versions" / running, model_dir / "versions" / tried)
    (model_dir / "trial").write_text(running)
    (model_dir / "current").unlink()
    (model_dir / "current").symlink_to(Path("versions") / tried)


def answers_for(package: KTPackage, student: str, prefix: str, n: int) -> list[dict[str, Any]]:
    items = package.items[:n]
    return [answer(student, i.id, i.skill_id, k % 2 == 0, f"{prefix}-{k}") for k, i in enumerate(items)]


def mastery(service: KTService, student: str) -> list[float]:
    found = service.student_mastery(service.pseudonymize(student))
    assert found is not None
    return [s["mastery"] for s in found["skills"]]


# -- tests -------------------------------------------------------------------------------------------------


def test_signed_update_runs_keeps_student_states_and_survives_a_restart(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    board = Board(board_config(tmp_path, keys[1])).start()
    try:
        package = board.package()
        assert package.path == DEFAULT_PACKAGE_DIR.resolve() and board.running_version() is None
        post_answers(board.url, answers_for(package, "student-a", "before", 4))
        before = mastery(board.service(), "student-a")  # type: ignore[arg-type]

        archive = make_package(tmp_path, keys[0], "2.0")
        with AnswerStream(board.url, package, "student-d") as stream:  # the class keeps answering
            drop(archive, board.inbox)
            wait_for(
                lambda: board.running_version() == "2.0" and board.package().path.name == "2.0",
                20,
                "version 2.0 to run",
            )
            time.sleep(0.3)
        assert stream.errors == [] and stream.sent >= 5
        wait_for((board.inbox / "done" / "kt-2.0.tar").is_file, 5, "kt-2.0.tar filed under done/")
        assert not (board.inbox / "kt-2.0.tar").exists()
        service = board.service()
        assert service is not None and service.package.metadata["version"] == "2.0"
        assert mastery(service, "student-a") == before  # the state carried over untouched

        results = post_answers(board.url, answers_for(package, "student-a", "after", 3))
        assert [r["status"] for r in results] == ["applied"] * 3
        found = service.student_mastery(service.pseudonymize("student-a"))
        assert found is not None and found["answers"] == 7

        assert metrics.sample("edge_model_version_info", {"model": "kt", "version": "2.0"}) == 1
        live = board.assembly.live  # type: ignore[union-attr]
        wait_for(
            lambda: {r["name"]: r for r in live.get("health")["engines"]}["kt-step"].get("version") == "2.0",
            10,
            "the health section to show version 2.0",
        )
        health = live.get("health")
        updates = next(c for c in health["components"] if c["name"] == "model-updates")
        assert updates["ok"] and "kt 2.0" in updates["detail"]
        status, body = http_request("GET", f"{board.url}/api/v1/status")
        assert status == 200 and body["models"] == {"kt": "2.0"}
        # every component, the healthy ones too: the store's detail says what it holds and dropped
        store = next(c for c in body["components"] if c["name"] == "store")
        assert store["ok"] and "waiting" in store["detail"]
    finally:
        board.stop()

    simulate_crash_while_trying(board.config.paths.state_dir / "models" / "kt", "2.0", "2.1")
    rollbacks = metrics.sample("edge_alerts_total", {"kind": "model_rollback"})
    again = Board(board.config).start()
    try:
        assert metrics.sample("edge_alerts_total", {"kind": "model_rollback"}) == rollbacks + 1
        assert not (board.config.paths.state_dir / "models" / "kt" / "versions" / "2.1").exists()
        assert again.running_version() == "2.0"
        assert again.package().path.name == "2.0" and again.package().metadata["version"] == "2.0"
        service = again.service()
        assert service is not None
        found = service.student_mastery(service.pseudonymize("student-a"))
        assert found is not None and found["answers"] == 7
        results = post_answers(again.url, answers_for(again.package(), "student-b", "restart", 2))
        assert [r["status"] for r in results] == ["applied"] * 2
    finally:
        again.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Board]:
    base = tmp_path_factory.mktemp("board")
    ca = FleetCA.create(base / "ca", "test update server CA")
    (base / "ca.pem").write_bytes(ca.ca_pem())
    board = Board(board_config(base, keys[1], download_ca_file=str(base / "ca.pem"))).start()
    board.ca = ca  # type: ignore[attr-defined]
    drop(make_package(base, keys[0], "1.1"), board.inbox)
    wait_for(lambda: board.running_version() == "1.1", 20, "version 1.1 to run")
    try:
        yield board
    finally:
        board.stop()


def _tampered(base: Path, key: Path) -> Path:
    archive = make_package(base, key, "9.1")
    tamper_after_signing(archive)
    return archive


BAD_PACKAGES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "tampered": (_tampered, "sha256 does not match"),
    "unsigned": (lambda base, key: make_package(base, key, "9.2", sign=False), "unsigned"),
    "wrong-hidden": (lambda base, key: make_package(base, key, "9.3", set_hidden(32)), "hidden size"),
    # names the way in for such a package (a review followed "retrain with the same hidden size" and was
    # refused again, for the skills)
    "other-skills": (lambda base, key: make_package(base, key, "9.4", rename_first_skill),
                     "skills differ from the running one's (ids or order); a package of other skills or size "
                     "is installed with kt.package_dir"),
    "corrupt-onnx": (lambda base, key: make_package(base, key, "9.5", corrupt_onnx), "failed to load"),
    "other-model": (lambda base, key: make_package(base, key, "9.6", model="headpose"), "only the 'kt'"),
}


def test_a_school_package_in_kt_package_dir_runs_its_own_step_model(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    # Found by a review: the package's files were loaded but the engine ran the shipped kt_step.onnx, so
    # the school's model never answered (and one of another hidden size was refused as a mismatch).
    custom = tmp_path / "school-kt"
    shutil.copytree(DEFAULT_PACKAGE_DIR, custom)
    shift_output_bias(2.0)(custom)
    data = board_config(tmp_path, keys[1]).model_dump(mode="json")
    data["kt"]["package_dir"] = str(custom)
    board = Board(Config.model_validate(data)).start()
    try:
        item = board.package().items[0]
        [result] = post_answers(board.url, [answer("student-p", item.id, item.skill_id, True, "p-1")])
        assert result["mastery"][0]["mastery"] == first_step_mastery(custom, item.skill_id)
        assert result["mastery"][0]["mastery"] != first_step_mastery(DEFAULT_PACKAGE_DIR, item.skill_id)
    finally:
        board.stop()


def test_kt_package_dir_changed_after_a_signed_update_runs_instead_of_it(
    tmp_path: Path, keys: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # A review: a package of other skills is refused as an update "installed with kt.package_dir and a
    # restart"; IT set kt.package_dir and restarted, and the board ran the old update on, without a word
    # (answers on the new package's items scored on the old skills; doctor all green)
    board = Board(board_config(tmp_path, keys[1])).start()
    try:
        drop(make_package(tmp_path, keys[0], "2.0"), board.inbox)
        wait_for(lambda: board.running_version() == "2.0", 20, "version 2.0 to run")
    finally:
        board.stop()
    again = Board(board.config).start()  # the setting unchanged: the update goes on
    try:
        assert again.package().path.name == "2.0"
    finally:
        again.stop()
    custom = tmp_path / "school-kt"
    shutil.copytree(DEFAULT_PACKAGE_DIR, custom)
    rename_first_skill(custom)
    data = board.config.model_dump(mode="json")
    data["kt"]["package_dir"] = str(custom)
    with caplog.at_level(logging.WARNING):
        changed = Board(Config.model_validate(data)).start()
    try:
        assert changed.package().path == custom and changed.running_version() is None
        assert f"kt.package_dir is now {custom}: it runs instead of the installed update 2.0" in caplog.text
    finally:
        changed.stop()
    kept = Board(Config.model_validate(data)).start()  # and stays so at the next start
    try:
        assert kept.package().path == custom
    finally:
        kept.stop()


def test_an_update_still_loading_at_a_stop_neither_holds_the_stop_nor_is_thrown_away(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A review (a step model ONNX Runtime took 21 s to load, as a TensorRT build takes minutes): a stop
    # meanwhile took 30.05 s (the updater's join, left in asyncio's executor, held the exit), and once the
    # load ended after knowledge tracing had stopped, the good package was refused, moved to .rejected and
    # never reported. The daemon's stop budget is cut to 1 s here so that the load outlasts the stop.
    from edge_agent import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "STOP_BUDGET_S", 1.0)
    board = Board(board_config(tmp_path, keys[1])).start()
    archive = make_package(tmp_path, keys[0], "3.0", slow_to_load(100_000))
    caplog.set_level(logging.INFO)
    try:
        drop(archive, board.inbox)
        wait_for((board.config.paths.state_dir / "models" / "kt" / "trial").exists, 20,
                 "the update's trial to begin")
    finally:
        board.stop()
    # ONNX Runtime 1.32 (Python 3.11) releases the GIL while it loads: the stop ends first, and the
    # package, refused as knowledge tracing stopped, stays in the inbox. 1.23 (the newest for Python 3.10)
    # holds it, so the event loop waits for the load and the update runs before knowledge tracing stops.
    # Either way it is not thrown away. (The thread loading it is left running by this in-process board;
    # a real daemon leaves it with the process.)
    wait_for(lambda: "did not finish before the stop" in caplog.text or "now runs version 3.0" in caplog.text,
             90, "the load to end")
    assert not list(board.inbox.glob("*.rejected"))
    again = Board(board.config).start()
    try:
        wait_for(lambda: again.running_version() == "3.0", 90, "version 3.0 to run after the restart")
    finally:
        again.stop()


def test_answers_to_a_board_whose_model_could_not_load_say_so_instead_of_retry_shortly(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    # A review: every answer got 503 "not running (starting or stopping); retry shortly", so clickers
    # retried until someone happened to look at the board.
    broken = tmp_path / "school-kt"
    shutil.copytree(DEFAULT_PACKAGE_DIR, broken)
    corrupt_onnx(broken)
    data = board_config(tmp_path, keys[1]).model_dump(mode="json")
    data["kt"]["package_dir"] = str(broken)
    board = Board(Config.model_validate(data)).start(kt_runs=False)
    try:
        status, body = http_request("POST", f"{board.url}/api/v1/answers",
                                    {"answers": [answer("student-q", "x", "y", True, "q-1")]})
        assert status == 503 and body["error"].startswith("knowledge tracing failed to start: "), body
        assert "until the school's IT fixes it" in body["error"] and "retry shortly" not in body["error"]
    finally:
        board.stop()


def test_refused_and_failing_packages_leave_the_running_version(
    running: Board, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    version = running.running_version()
    service = running.service()
    assert service is not None and version is not None
    post_answers(running.url, answers_for(service.package, "student-c", "pre", 3))
    before = mastery(service, "student-c")
    archives = {case: make(tmp_path, keys[0]) for case, (make, _) in BAD_PACKAGES.items()}
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage, not a tar archive")
    for archive in [*archives.values(), junk]:
        drop(archive, running.inbox)
    names = [a.name for a in archives.values()] + [junk.name]
    wait_for(
        lambda: all((running.inbox / f"{n}.rejected.reason").is_file() for n in names),
        40,
        "every bad package to be refused",
    )
    # every reason stays; of the refused packages themselves only the newest two (each may be 512 MiB).
    # Waited for, not read at once: the last reason is written just before its package is moved and the
    # older ones pruned (CI once counted 3 in that window)
    wait_for(
        lambda: not any((running.inbox / n).exists() for n in names)
        and len(list(running.inbox.glob("*.rejected"))) == 2,
        10,
        "every refused package moved aside and the older ones pruned to 2",
    )

    for case, (_, reason) in BAD_PACKAGES.items():
        text = (running.inbox / f"{archives[case].name}.rejected.reason").read_text()
        assert reason in text, (case, text)
    junk = (running.inbox / "junk.tar.rejected.reason").read_text()
    assert "not a readable tar" in junk and "then mv it into the inbox" in junk
    versions_dir = running.config.paths.state_dir / "models" / "kt" / "versions"
    assert not any(p.name.startswith("9.") for p in versions_dir.iterdir())  # rolled back and removed
    assert running.running_version() == version and running.package().path.name == version
    assert mastery(service, "student-c") == before
    results = post_answers(running.url, answers_for(service.package, "student-c", "post", 2))
    assert [r["status"] for r in results] == ["applied"] * 2
    assert metrics.sample("edge_alerts_total", {"kind": "model_update_refused"}) >= len(names)
    updates = running.assembly.updates  # type: ignore[union-attr]
    assert updates is not None
    health = updates.health()  # refused updates are reported, but the board stays ready
    assert health.ok and f"kt {version}" in health.detail and "REFUSED" in health.detail


def first_read(path: Path, seen: list[str], stop: threading.Event) -> None:
    """Read ``path`` the moment it exists (or stop)."""
    while not stop.is_set():
        if path.is_file():
            seen.append(path.read_text())
            return


def test_a_refusal_reason_is_never_seen_empty(tmp_path: Path) -> None:
    # CI once read junk.tar.rejected.reason between its creation and its first byte; with a plain
    # write_text a reader polling like IT's `watch cat` saw it empty in 233 of 300 tries here
    empty = 0
    for i in range(100):
        package = tmp_path / f"p{i}.tar"
        package.write_bytes(b"not a tar")
        reason = tmp_path / f"p{i}.tar.rejected.reason"
        seen: list[str] = []
        stop = threading.Event()
        poller = threading.Thread(target=first_read, args=(reason, seen, stop))
        poller.start()
        file_away(package, False, "refused: not a readable tar archive")
        stop.set()
        poller.join()
        empty += seen == [""]
    assert empty == 0
    assert (tmp_path / "p0.tar.rejected.reason").read_text() == "refused: not a readable tar archive\n"


def test_a_copy_under_a_hidden_name_is_left_alone_until_renamed(
    running: Board, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # rsync writes .kt-1.2.tar.XXXXXX and renames it when complete; a plain copy that stalls is taken as is
    version = running.running_version()
    archive = make_package(tmp_path, keys[0], "1.2")
    data = archive.read_bytes()
    hidden = running.inbox / f".{archive.name}.Xy12ab"
    stalled = running.inbox / "kt-1.3.tar"
    hidden.write_bytes(data[: len(data) // 2])
    stalled.write_bytes(data[: len(data) // 2])
    wait_for(stalled.with_name(stalled.name + ".rejected.reason").is_file, 10, "the stalled copy refused")
    assert "not a readable tar" in stalled.with_name(stalled.name + ".rejected.reason").read_text()
    time.sleep(1.0)  # five more polls of the inbox (0.2 s)
    assert hidden.exists() and not list(running.inbox.glob(f".{archive.name}*.reason"))
    assert running.running_version() == version
    with hidden.open("ab") as out:
        out.write(data[len(data) // 2 :])
    hidden.rename(running.inbox / archive.name)
    wait_for(lambda: running.running_version() == "1.2", 20, "version 1.2 to run")


def test_a_slow_copy_is_taken_only_once_complete_however_close_together_commands_come(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # every command brings a scan of the inbox: two a few ms apart passed the "held still for one poll"
    # check in the middle of a slow scp, and the package was refused half-written
    config = board_config(tmp_path, keys[1], poll_interval_s=2.0, allowed_hosts=["updates.example"])
    board = Board(config).start()
    updates = board.assembly.updates  # type: ignore[union-attr]
    assert updates is not None
    archive = make_package(tmp_path, keys[0], "2.0")
    data = archive.read_bytes()
    step = len(data) // 6 + 1
    try:
        with (board.inbox / archive.name).open("wb") as copy:
            for start in range(0, len(data), step):
                copy.write(data[start : start + step])
                copy.flush()
                for n in range(2):  # refused at once: the host is not allowed
                    url = "https://elsewhere.example/kt.tar"
                    updates.handle_command(command(board, url, "0" * 64, f"9.{start}.{n}"))
                done = f"req-9.{start}.1"
                wait_for(lambda done=done: done in (updates.last_download or ""), 5, "both commands refused")
        wait_for(
            lambda: board.running_version() == "2.0" or any(board.inbox.glob("*.reason")), 20, "the package"
        )
        assert [p.read_text() for p in board.inbox.glob("*.reason")] == []
        assert board.running_version() == "2.0"
    finally:
        board.stop()


@pytest.mark.parametrize("installed", [True, False], ids=["done", "rejected"])
def test_the_last_packages_handled_stay_whatever_date_they_carry(tmp_path: Path, installed: bool) -> None:
    # cp -p, rsync -a, scp -p and tar keep a file's date: a package built in 2020 and copied in today must
    # count as the newest handled, not be deleted the moment it is filed
    dates = [time.time() - 60, time.time() - 30, 1_577_836_800.0]  # the last one carries 2020-01-01
    for n, date in enumerate(dates):
        package = tmp_path / f"kt-{n}.tar"
        package.write_bytes(b"a package")
        os.utime(package, (date, date))
        file_away(package, installed, "refused: not a readable tar archive")
        time.sleep(0.05)  # handled one after the other (the kernel's file times tick every few ms)
    kept = tmp_path / "done" if installed else tmp_path
    suffix = "" if installed else ".rejected"
    assert sorted(p.name for p in kept.glob(f"*.tar{suffix}")) == [f"kt-1.tar{suffix}", f"kt-2.tar{suffix}"]


def command(board: Board, url: str, sha256: str, version: str, model: str = "kt") -> Any:
    dispatcher = CommandDispatcher(board.config.device)
    body = {
        "type": "model_update",
        "request_id": f"req-{version}",
        "model": model,
        "version": version,
        "url": url,
        "sha256": sha256,
        "signature": "c2lnbmVkLWluLXRoZS1wYWNrYWdl",
    }
    parsed = dispatcher.parse(dispatcher.topic, json.dumps(body).encode())
    assert parsed is not None
    return parsed


def test_model_update_command_downloads_checks_sha256_and_activates(
    running: Board, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = make_package(served, keys[0], "3.0")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    server = HttpsFileServer(served, running.ca)  # type: ignore[attr-defined]
    updates = running.assembly.updates  # type: ignore[union-attr]
    assert updates is not None
    try:
        with pytest.raises(CommandRefused, match="does not update 'headpose'"):  # the heartbeat says so
            updates.handle_command(command(running, server.url(archive.name), sha, "3.0", model="headpose"))
        assert "does not update 'headpose'" in (updates.last_download or "")
        updates.handle_command(command(running, server.url(archive.name), "0" * 64, "3.0"))
        # the outcome, not last_download: that is set first, and the headpose refusal above already left an
        # outcome naming req-3.0
        wait_for(lambda: "sha256" in str(updates.last_outcome()["result"]), 20, "the sha256 mismatch")
        assert not any(running.inbox.glob("kt-3.0*")) and running.running_version() != "3.0"
        assert updates.last_outcome()["ok"] is False and "req-3.0" in str(updates.last_outcome()["result"])
        assert "REFUSED: request req-3.0" in updates.health().detail  # a failed download is visible too

        updates.handle_command(command(running, server.url(archive.name), sha, "3.0"))
        wait_for(
            lambda: running.running_version() == "3.0" and running.package().path.name == "3.0",
            20,
            "version 3.0 from the command to run",
        )
        # filed after the activation, on the updater thread: a moment after the version flips
        wait_for((running.inbox / "done" / "kt-3.0.tar").is_file, 5, "kt-3.0.tar filed under done/")
        wait_for(lambda: updates.last_outcome() == {"ok": True, "result": "kt 3.0 running"}, 5, "the outcome")
    finally:
        server.close()


class _Endless(QuietHandler):
    """An update server on a slow uplink: the package would take minutes to come."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        with contextlib.suppress(OSError):  # until the board hangs up
            while True:
                self.wfile.write(b"x" * 16384)
                self.wfile.flush()
                time.sleep(0.01)


def test_a_stop_ends_a_download_in_progress_and_deletes_its_part_file(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # the model-inbox thread is a daemon thread: a stop that left it downloading let the process exit
    # under it, and the .part (up to 512 MiB) stayed in the inbox for good
    ca = FleetCA.create(tmp_path / "ca", "test update server CA")
    (tmp_path / "ca.pem").write_bytes(ca.ca_pem())
    served = tmp_path / "served"
    served.mkdir()
    server = HttpsFileServer(served, ca, _Endless)
    board = Board(board_config(tmp_path, keys[1], download_ca_file=str(tmp_path / "ca.pem")))
    updates = build(board.config).updates
    assert updates is not None
    part = board.inbox / ".kt-2.0.tar.part"
    try:
        asyncio.run(updates.start())
        updates.handle_command(command(board, server.url("kt-2.0.tar"), "0" * 64, "2.0"))
        wait_for(lambda: part.is_file() and part.stat().st_size > 1 << 20, 20, "the download to be under way")
        started = time.monotonic()
        asyncio.run(updates.stop())
        assert time.monotonic() - started < 2.0  # it waited 5 s for the thread, then gave up on it
        assert list(board.inbox.iterdir()) == []
        # and the outcome says so: the command was "accepted", and the cloud heard nothing more (a review)
        said = "request req-2.0: not downloaded, the board stopped; send it again"
        assert updates.last_download == said and updates.last_outcome() == {"ok": False, "result": said}
    finally:
        server.close()


def test_downloads_a_killed_run_left_unfinished_are_deleted_at_the_next_start(
    keys: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a download stuck waiting on the server still dies with the process; nothing else ever deletes the
    # hidden .part it leaves (the inbox skips hidden files), and each may be 512 MiB
    config = board_config(tmp_path, keys[1])
    inbox = config.paths.state_dir / "inbox"
    inbox.mkdir(parents=True)
    left = [inbox / ".kt-2.0.tar.part", inbox / ".kt-2.1.tar.part"]
    for path in left:
        path.write_bytes(b"x" * 50_000)
    copying = inbox / ".kt-2.2.tar.Xy12ab"  # rsync at work: not a download, not ours to delete
    copying.write_bytes(b"x" * 50_000)
    updates = build(config).updates
    assert updates is not None
    with caplog.at_level(logging.INFO, logger="edge_agent.updates"):
        asyncio.run(updates.start())
    try:
        assert sorted(p.name for p in inbox.iterdir()) == [copying.name]
        assert "(100000 bytes)" in caplog.text
    finally:
        asyncio.run(updates.stop())


# -- the downloader alone ------------------------------------------------------------------------------


def test_download_takes_file_urls_and_refuses_plain_http_wrong_sha_and_oversize(tmp_path: Path) -> None:
    source = tmp_path / "pkg.tar"
    source.write_bytes(b"x" * 5000)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "inbox" / "kt-1.tar"
    dest.parent.mkdir()
    assert download(source.as_uri(), dest, sha, timeout_s=5, max_bytes=10_000).read_bytes() == b"x" * 5000
    dest.unlink()
    with pytest.raises(DownloadFailed, match="only https"):
        download("http://127.0.0.1:9/pkg.tar", dest, sha, timeout_s=5, max_bytes=10_000)
    with pytest.raises(DownloadFailed, match="sha256"):
        download(source.as_uri(), dest, "0" * 64, timeout_s=5, max_bytes=10_000)
    with pytest.raises(DownloadFailed, match="max_download_bytes"):
        download(source.as_uri(), dest, sha, timeout_s=5, max_bytes=4096)
    with pytest.raises(DownloadFailed, match="failed"):
        download((tmp_path / "missing.tar").as_uri(), dest, sha, timeout_s=5, max_bytes=10_000)
    assert list(dest.parent.iterdir()) == []  # no partial files left behind


class _RedirectToPlainHttp(QuietHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.end_headers()


class _StallBeforeTheDeadline(QuietHandler):
    """Silent for most of the deadline, one byte, then silent again: no read times out before it."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.flush()
        time.sleep(0.9)
        self.wfile.write(b"x")
        self.wfile.flush()
        time.sleep(5)


class _Stall(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.write(b"x" * 100)
        self.wfile.flush()
        time.sleep(1.5)


class _Trickle(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        for _ in range(50):  # one byte every 0.1 s: every socket read succeeds, the whole takes 5 s
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)


class _TrickleHeaders(QuietHandler):
    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(50):  # one header line every 0.1 s: the reply never gets past its head in time
            self.wfile.write(f"X-Wait-{n}: 1\r\n".encode())
            self.wfile.flush()
            time.sleep(0.1)


class _CountingPlain(QuietHandler):
    hits = 0

    def do_GET(self) -> None:
        _CountingPlain.hits += 1
        super().do_GET()


class _Garbled(QuietHandler):
    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.1 2OO OK\r\n\r\n")
        self.close_connection = True


def test_download_refuses_a_redirect_to_plain_http_a_garbled_reply_and_slow_servers(
    tmp_path: Path,
) -> None:
    import http.server
    import ssl

    served = tmp_path / "served"
    served.mkdir()
    (served / "pkg.tar").write_bytes(b"x" * 5000)
    sha = hashlib.sha256(b"x" * 5000).hexdigest()
    ca = FleetCA.create(tmp_path / "ca", "test fleet")
    trust = ssl.create_default_context(cadata=ca.ca_pem().decode())
    plain = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _CountingPlain(*a, directory=str(served))
    )
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    _RedirectToPlainHttp.target = f"http://127.0.0.1:{plain.server_address[1]}/pkg.tar"
    redirecting = HttpsFileServer(served, ca, _RedirectToPlainHttp)
    stalling = HttpsFileServer(served, ca, _Stall)
    garbled = HttpsFileServer(served, ca, _Garbled)
    trickling = HttpsFileServer(served, ca, _Trickle)
    trickling_head = HttpsFileServer(served, ca, _TrickleHeaders)
    dest = tmp_path / "inbox" / "kt-1.tar"
    dest.parent.mkdir()
    try:
        with pytest.raises(DownloadFailed, match="redirected away from https"):
            download(redirecting.url("pkg.tar"), dest, sha, timeout_s=5, max_bytes=10_000, context=trust)
        assert _CountingPlain.hits == 0  # refused before the plain-http request went out (it used to go)
        with pytest.raises(DownloadFailed, match=r"model download failed: the update server") as garbling:
            download(garbled.url("pkg.tar"), dest, sha, timeout_s=5, max_bytes=10_000, context=trust)
        assert "2OO" in garbling.value.detail and "2OO" not in str(garbling.value)  # the log, not the status
        started = time.monotonic()
        with pytest.raises(DownloadFailed, match=r"timed out|took longer than 0\.5 s"):
            download(stalling.url("pkg.tar"), dest, sha, timeout_s=0.5, max_bytes=10_000, context=trust)
        assert time.monotonic() - started < 1.4  # gave up, did not wait for the server
        started = time.monotonic()
        with pytest.raises(DownloadFailed, match=r"longer than 1 s \(updates.download_timeout_s; \d+ bytes"):
            download(trickling.url("pkg.tar"), dest, sha, timeout_s=1.0, max_bytes=10_000, context=trust)
        assert time.monotonic() - started < 2.5  # the deadline held although no single read timed out
        started = time.monotonic()
        with pytest.raises(DownloadFailed, match=r"took longer than 1 s"):
            download(trickling_head.url("pkg.tar"), dest, sha, timeout_s=1.0, max_bytes=10_000, context=trust)
        assert time.monotonic() - started < 2.5  # also while the head trickles in (it held 300 s)
        late = HttpsFileServer(served, ca, _StallBeforeTheDeadline)
        started = time.monotonic()
        with pytest.raises(DownloadFailed, match=r"took longer than 1 s"):
            download(late.url("pkg.tar"), dest, sha, timeout_s=1.0, max_bytes=10_000, context=trust)
        late.close()
        # and while the body comes (a review: the timer was cancelled once the headers were in, and a body
        # silent from just before the deadline was waited on for another whole timeout: 0.9 + 1 s at least)
        assert time.monotonic() - started < 1.8
    finally:
        trickling_head.close()
        redirecting.close()
        stalling.close()
        garbled.close()
        trickling.close()
        plain.shutdown()
        plain.server_close()
    assert list(dest.parent.iterdir()) == []  # no partial files left behind


class _CountingHttps(QuietHandler):
    hits = 0

    def do_GET(self) -> None:
        _CountingHttps.hits += 1
        super().do_GET()


def test_download_goes_only_to_the_allowed_update_hosts_redirects_included(tmp_path: Path) -> None:
    import ssl

    served = tmp_path / "served"
    served.mkdir()
    (served / "pkg.tar").write_bytes(b"x" * 5000)
    sha = hashlib.sha256(b"x" * 5000).hexdigest()
    ca = FleetCA.create(tmp_path / "ca", "test fleet")
    trust = ssl.create_default_context(cadata=ca.ca_pem().decode())
    server = HttpsFileServer(served, ca, _CountingHttps)
    redirecting = HttpsFileServer(served, ca, _RedirectToPlainHttp)
    # the same server under a name that is not allowed ("localhost" reaches it, the list says 127.0.0.1)
    _RedirectToPlainHttp.target = server.url("pkg.tar").replace("127.0.0.1", "localhost")
    dest = tmp_path / "inbox" / "kt-1.tar"
    dest.parent.mkdir()
    _CountingHttps.hits = 0
    try:
        with pytest.raises(DownloadFailed, match=r"127\.0\.0\.1 is not in updates\.allowed_hosts"):
            download(server.url("pkg.tar"), dest, sha, timeout_s=5, max_bytes=10_000, context=trust,
                     allowed_hosts=["updates.district.example"])
        with pytest.raises(DownloadFailed, match=r"localhost is not in updates\.allowed_hosts"):
            download(redirecting.url("pkg.tar"), dest, sha, timeout_s=5, max_bytes=10_000, context=trust,
                     allowed_hosts=["127.0.0.1"])
        assert _CountingHttps.hits == 0  # neither request went out
        download(server.url("pkg.tar"), dest, sha, timeout_s=5, max_bytes=10_000, context=trust,
                 allowed_hosts=["updates.district.example", "127.0.0.1"])
        assert dest.read_bytes() == b"x" * 5000 and _CountingHttps.hits == 1
    finally:
        server.close()
        redirecting.close()


def test_service_refuses_a_swap_to_an_incompatible_package(tmp_path: Path) -> None:
    from edge_agent.errors import ModelError
    from edge_agent.kt.service import check_compatible

    current = load_package()
    folder = tmp_path / "pkg"
    shutil.copytree(DEFAULT_PACKAGE_DIR, folder)
    set_hidden(32)(folder)
    with pytest.raises(ModelError, match=r"hidden size 32, the running one 64: .* kt\.package_dir"):
        check_compatible(current, load_package(folder))


def test_updates_are_off_without_a_signing_key_and_say_why_when_forced_on(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key.pub"
    assert build(board_config(tmp_path, missing)).updates is None  # default: on only with a key
    forced = build(board_config(tmp_path, missing, enabled=True)).updates
    assert forced is not None
    asyncio.run(forced.start())
    health = forced.health()
    assert not health.ok and str(missing) in health.detail
    asyncio.run(forced.stop())


def test_a_signing_key_file_that_is_not_an_ed25519_key_turns_updates_off_naming_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    other = tmp_path / "ec.pub"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key, expected in ((garbage, "cannot read model signing public key"), (other, "not an ed25519")):
        updates = build(board_config(tmp_path, key)).updates
        assert updates is not None
        asyncio.run(updates.start())
        health = updates.health()
        assert not health.ok and str(key) in health.detail and expected in health.detail
        asyncio.run(updates.stop())

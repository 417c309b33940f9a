"""Signed model updates in the daemon: the inbox folder, the ``model_update`` command, and status.

Delivery is one path: a package tar lands in the inbox (copied there by an IT person, or downloaded there
by the command handler after checking the sha256 the command names), the ``model-inbox`` thread hands it
to :class:`~edge_agent.provisioning.model_update.ModelUpdater`, and after the attempt the file is moved
aside: ``inbox/done/`` when the version runs, ``<name>.rejected`` plus ``<name>.rejected.reason`` when it
was refused or rolled back. Files are taken only once their size and mtime held still for a poll interval,
so a slow copy is not read half-written, oldest (by mtime) first; downloads are written under a hidden name
and renamed when complete, beside a hidden ``.<name>.command`` note of the model and version the command asked
for: a package signed as another version is refused. A package whose load killed the daemon (a crash, the
out-of-memory killer) is rolled back at the next start, reported, and filed away as refused, so that it does
not stop the daemon again at every start.

The command's ``signature`` field is not relied on: every package carries its own ``manifest.sig``, which
the store verifies against the installed key whatever the delivery path. The outcome of the latest attempt,
whichever step ended it (a command for another model, a failed download or sha256 mismatch, a refused or
rolled-back package), is this component's health detail and the ``model_update`` entry of the status
summary (``/api/v1/status`` and the MQTT heartbeat). A refusal is counted in
``edge_alerts{kind="model_update_refused"}`` but does not make the board unready: the previous version keeps
answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from edge_agent.config import UpdateSettings
from edge_agent.errors import CommandRefused, ProvisioningError
from edge_agent.lifecycle import Health
from edge_agent.provisioning.files import write_public
from edge_agent.provisioning.model_package import BOARD_DISK_ERRNOS, BoardDiskError, load_public_key
from edge_agent.provisioning.model_update import Loader, ModelStore, ModelUpdater, Rollback, Sanity
from edge_agent.sync.commands import BOARD_STOPPING
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

PACKAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
KEEP_DONE = 2
KEEP_REJECTED = 2
DOWNLOAD_QUEUE_MAX = 4
# a package the board's full or failing disk could not take is tried again after this long (each try may
# write 512 MiB), or at once when copied in again
DISK_RETRY_S = 300.0
_CHUNK = 1 << 16
# an inbox file's (inode, size, mtime_ns): another file copied in under the same name differs
FileId = tuple[int, int, int]


def file_id(path: Path) -> FileId | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class DownloadFailed(ProvisioningError):
    """The package named by a model_update command could not be fetched or did not match its sha256.

    ``str()`` is what the status and the MQTT heartbeat publish; ``detail`` (the network error itself)
    goes only to the board's log: published, it told a command sender which internal ports answered."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


def updates_enabled(settings: UpdateSettings) -> bool:
    """On when asked for, or by default when the signing key is installed."""
    return settings.public_key_file.is_file() if settings.enabled is None else settings.enabled


def update_dirs(settings: UpdateSettings, state_dir: Path) -> tuple[Path, Path]:
    """(models root, inbox)."""
    return settings.models_dir or state_dir / "models", settings.inbox_dir or state_dir / "inbox"


def startup_package(settings: UpdateSettings, state_dir: Path, name: str) -> Path | None:
    """The installed version of ``name`` to run at start, after rolling back an interrupted update and
    checking its files against its signed manifest again (they live in the writable state directory)."""
    models, _ = update_dirs(settings, state_dir)
    if not updates_enabled(settings) or not models.is_dir():
        return None
    try:
        key = load_public_key(settings.public_key_file)
    except ProvisioningError as exc:
        log.error("installed model updates are not used: %s", exc)
        return None
    store = ModelStore(models, [key])
    for _rolled in store.recover():  # logged there; reported (and its package filed away) by ModelUpdates
        metrics.ALERTS.labels(kind="model_rollback").inc()
    problem = store.verify_current(name)
    if problem is not None:
        metrics.ALERTS.labels(kind="model_rollback").inc()
        log.error("model update: %s; reinstall the signed package", problem)
    return store.current_path(name)


def next_startup_package(settings: UpdateSettings, state_dir: Path, name: str) -> Path | None:
    """What :func:`startup_package` will give at the next start, found without its side effects (rolling an
    unfinished install back, re-pointing ``current`` away from a version that fails its check)."""
    models, _ = update_dirs(settings, state_dir)
    if not updates_enabled(settings) or not models.is_dir():
        return None
    try:
        key = load_public_key(settings.public_key_file)
    except ProvisioningError:
        return None
    return ModelStore(models, [key]).path_at_next_start(name)


def set_aside_installed(settings: UpdateSettings, state_dir: Path, name: str) -> None:
    models, _ = update_dirs(settings, state_dir)
    ModelStore(models, []).set_aside(name)


def is_package(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.endswith(PACKAGE_SUFFIXES)


def command_note(package: Path) -> Path:
    """Beside a downloaded package: the model and version its model_update command asked for."""
    return package.with_name(f".{package.name}.command")


def check_host(url: str, allowed_hosts: Collection[str]) -> None:
    """DownloadFailed unless ``url``'s host is one of ``allowed_hosts`` (empty: any host)."""
    host = (_split(url).hostname or "").lower()
    if allowed_hosts and host not in allowed_hosts:
        raise DownloadFailed(f"model download refused: {host or 'no host'} is not in updates.allowed_hosts")


def _split(url: str) -> SplitResult:
    """``urlsplit``, whose ValueError (``https://[::1/kt.tar``: "Invalid IPv6 URL") ended the inbox thread's
    turn with a traceback and no outcome the cloud could read (a review)."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise DownloadFailed(f"model download refused: the URL does not read ({exc})") from exc


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses a redirect away from https before it is followed: urllib's default sent the plain-http
    request first, and only then did the scheme check see it (security audit: an internal server hit).
    Refuses a redirect to a host outside ``allowed_hosts`` the same way."""

    def __init__(self, allowed_hosts: Collection[str]) -> None:
        super().__init__()
        self.allowed_hosts = allowed_hosts

    def redirect_request(  # noqa: PLR0917 (urllib's signature)
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urlsplit(newurl).scheme != "https":
            raise DownloadFailed("model download refused: the server redirected away from https")
        check_host(newurl, self.allowed_hosts)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _DeadlineConnection(http.client.HTTPSConnection):
    """An https connection whose socket is shut at ``deadline`` (monotonic): a server trickling its
    header lines kept each read under the timeout and held the inbox for 300 s against a 60 s limit."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True

    def connect(self) -> None:
        super().connect()
        # The socket itself, and the timer runs on past close(): http.client closes the connection once
        # the headers are in (the response holds the socket from then), and the timer was cancelled or
        # found no socket while the body came (a review: a body stalled at the deadline took 1.9x as long).
        # Shut after the download, the socket is closed already: nothing happens.
        self._deadline_sock = self.sock
        if self._timer.ident is None:  # http.client may connect again on the same object
            self._timer.start()

    def _expire(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._deadline_sock.shutdown(socket.SHUT_RDWR)


class _DeadlineHttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext | None, deadline: float) -> None:
        super().__init__(context=context)
        self._deadline = deadline
        self._tls = context

    def https_open(self, req: Any) -> Any:
        return self.do_open(_DeadlineConnection, req, context=self._tls, deadline=self._deadline)  # type: ignore[arg-type]


def download(
    url: str,
    dest: Path,
    sha256: str,
    *,
    timeout_s: float,
    max_bytes: int,
    context: ssl.SSLContext | None = None,
    allowed_hosts: Collection[str] = (),
    stop: threading.Event | None = None,
) -> Path:
    """Fetch ``url`` (https or file only) into ``dest`` if its sha256 matches; a hidden .part until then.
    With ``allowed_hosts``, an https URL, and every redirect, must name one of them. Setting ``stop``
    ends it between chunks."""
    scheme = _split(url).scheme
    if scheme not in ("https", "file"):
        raise DownloadFailed(f"model download refused: only https:// or file:// URLs, not {scheme or 'none'}")
    if scheme == "https":
        check_host(url, allowed_hosts)
    part = dest.with_name(f".{dest.name}.part")
    digest, size = hashlib.sha256(), 0
    deadline = time.monotonic() + timeout_s
    try:
        opener = urllib.request.build_opener(
            _HttpsOnlyRedirects(allowed_hosts), _DeadlineHttpsHandler(context, deadline)
        )
        opened = opener.open(url, timeout=timeout_s)
        with opened as response, part.open("wb") as out:
            if urlsplit(response.geturl()).scheme != scheme:
                raise DownloadFailed("model download refused: the server redirected away from https")
            # read1: what one recv gives, so a server trickling bytes meets the deadline below
            while chunk := response.read1(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadFailed(f"package larger than updates.max_download_bytes ({max_bytes})")
                if time.monotonic() > deadline:
                    raise _too_slow(timeout_s, size)
                # the agent is stopping: the thread must end while it can still delete the .part (a
                # daemon thread dies with the process and left up to max_download_bytes in the inbox)
                if stop is not None and stop.is_set():
                    raise DownloadFailed("model download stopped: the agent stopped; send the command again")
                digest.update(chunk)
                out.write(chunk)
        if time.monotonic() > deadline:  # the socket was shut at the deadline: what came is cut short
            raise _too_slow(timeout_s, size)
        if digest.hexdigest() != sha256:
            raise DownloadFailed("downloaded model package does not match the sha256 in the command")
        os.replace(part, dest)
    # OSError: URLError, timeouts, TLS failures, disk full; HTTPException: a garbled or cut-short reply
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if time.monotonic() > deadline:
            raise _too_slow(timeout_s, size) from exc
        status = f" (HTTP {exc.code})" if isinstance(exc, urllib.error.HTTPError) else ""
        raise DownloadFailed(
            f"model download failed{status}: the update server could not be reached or did not answer "
            "properly; the board's log has the details",
            f"model download failed: {exc}",
        ) from exc
    finally:
        part.unlink(missing_ok=True)
    return dest


def _too_slow(timeout_s: float, received: int) -> DownloadFailed:
    return DownloadFailed(
        f"model download took longer than {timeout_s:g} s (updates.download_timeout_s; {received} bytes "
        "had come): over a slow uplink, raise that setting"
    )


class _InboxUpdater(ModelUpdater):
    """ModelUpdater that files each inbox package away after its attempt, on the updater thread, and
    reports the outcome through ``on_result``."""

    def __init__(
        self,
        store: ModelStore,
        loader: Loader,
        sanity: Sanity,
        on_result: Callable[[bool, str], None],
        inbox: Path | None = None,
        *,
        on_retry: Callable[[Path, FileId | None], None] = lambda package, checked: None,
        retry_s: float = DISK_RETRY_S,
    ) -> None:
        super().__init__(store, loader, sanity, lambda manifest, engine: None)
        self.on_result = on_result
        self.inbox = inbox
        # told of a package kept in the inbox (the board's disk failed it) to be tried again in retry_s
        self.on_retry, self.retry_s = on_retry, retry_s

    def _rolled_back(self, rollback: Rollback) -> None:
        super()._rolled_back(rollback)
        if rollback.by_stop or rollback.source is None or self.inbox is None:
            return  # cut short by a stop: it stays in the inbox and is tried again
        package = Path(rollback.source)
        try:
            info = package.stat()
        except OSError:
            return  # removed meanwhile
        # the very file that was being installed, not another copied since under the same name
        if package.parent.absolute() == self.inbox.absolute() and rollback.source_id == (
            info.st_size, info.st_mtime_ns
        ):
            file_away(package, False, rollback.reason())
            self.last_result = f"{package.name}: {self.last_result}"

    def _expected(self, package: Path) -> tuple[str, str] | None:
        try:
            data = json.loads(command_note(package).read_text(encoding="utf-8"))
            return str(data["model"]), str(data["version"])
        except FileNotFoundError:
            return None  # copied in by hand: no command named a version
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # unreadable: what the command asked for cannot be checked, so it is not installed
            raise ProvisioningError(f"cannot read what the model_update command asked for: {exc}") from exc

    def _install(self, package: Path) -> None:
        # the file checked, as staging starts: only that one is filed away after (a review: one copied in
        # under the same name meanwhile, the right package, was filed as refused with the other's reason)
        checked = file_id(package)
        try:
            super()._install(package)
        except Exception as exc:  # disk errors and the like must not end the updater thread
            self.last_error = exc
            self.last_ok, self.last_result = False, f"model update failed: {exc}"
            log.error("model update of %s failed: %s", package.name, exc)
        if not self.last_ok and self.stopping.is_set():
            # Refused because the daemon stops meanwhile ("knowledge tracing is not running"), not for
            # what it holds: it stays in the inbox for the next start (a review: a good package was moved
            # to .rejected and the cloud never heard of it)
            log.warning("model update of %s did not finish before the stop (%s); it is tried again at the "
                        "next start", package.name, self.last_result)
            return
        error = self.last_error
        if isinstance(error, BoardDiskError) or (
            isinstance(error, OSError) and error.errno in BOARD_DISK_ERRNOS
        ):
            # the board's disk, not the package: a good package was filed as "not a readable tar archive"
            self.last_result = (f"{self.last_result}; {package.name} stays in the inbox and is tried again "
                                f"in {self.retry_s:g} s, or at once when copied in again")
            log.warning("model update of %s: %s", package.name, self.last_result)
            self.on_retry(package, checked)
        else:
            file_away(package, self.last_ok, self.last_result, checked)
        ok, result = self.last_ok, self.last_result
        self.on_result(ok, result if ok else f"{package.name}: {result}")


def _last_filed_first(paths: Iterable[Path]) -> list[Path]:
    # By the time each was moved here (a rename sets the inode change time), not by the file's date:
    # cp -p, rsync -a, scp -p and tar keep a package's old date, and it would have been deleted at once.
    return sorted(paths, key=lambda p: p.stat().st_ctime_ns, reverse=True)


def file_away(package: Path, ok: bool, result: str, checked: FileId | None = None) -> None:
    """Move a handled package to ``done/``, or to ``<name>.rejected`` beside its ``.reason``; with
    ``checked``, only if the file there is still the one checked (another is left for the next scan)."""
    if checked is not None and file_id(package) != checked:
        log.info("model inbox: %s was replaced while it was checked; the new file is checked next",
                 package.name)
        return
    try:
        if ok:
            done = package.parent / "done"
            done.mkdir(exist_ok=True)
            os.replace(package, done / package.name)
            for path in _last_filed_first(done.iterdir())[KEEP_DONE:]:
                path.unlink(missing_ok=True)
        else:
            rejected = package.with_name(package.name + ".rejected")
            # atomically: whoever waits for the reason (IT, a test) must never read it empty
            write_public(rejected.with_name(rejected.name + ".reason"), (result + "\n").encode())
            os.replace(package, rejected)
            # Each may be 512 MiB: a package refused again and again would fill the disk. The reasons
            # (a line each) stay; the newest KEEP_REJECTED packages stay for a look at what was sent.
            for path in _last_filed_first(package.parent.glob("*.rejected"))[KEEP_REJECTED:]:
                path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("could not move %s out of the model inbox: %s", package.name, exc)
    command_note(package).unlink(missing_ok=True)


NOT_STARTED = "not started"
NOT_DOWNLOADED = "not downloaded, the board stopped; send it again"


class ModelUpdates:
    """Daemon component: the model store, its updater thread, and the inbox/download thread."""

    essential = False

    def __init__(
        self,
        settings: UpdateSettings,
        state_dir: Path,
        loader: Loader,
        sanity: Sanity,
        *,
        accepted: frozenset[str] = frozenset({"kt"}),
        name: str = "model-updates",
    ) -> None:
        self.name = name
        self.accepted = accepted
        self.settings = settings
        self.models_dir, self.inbox = update_dirs(settings, state_dir)
        self._loader, self._sanity = loader, sanity
        self.updater: ModelUpdater | None = None
        self._downloads: queue.Queue[Any] = queue.Queue(maxsize=DOWNLOAD_QUEUE_MAX)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # each inbox file's identity and the monotonic time it was first seen with it
        self._seen: dict[Path, tuple[FileId, float]] = {}
        # submitted, by identity: a new file under the same name (the right package copied in after a
        # refusal) was skipped until a restart when these were paths (a review)
        self._taken: dict[Path, FileId] = {}
        self.disk_retry_s = DISK_RETRY_S
        self._retry_lock = threading.Lock()
        # kept for the board's disk: submitted again from the time given, if still the same file
        self._retry_at: dict[Path, tuple[FileId | None, float]] = {}
        self.download_drops = 0
        self.last_download: str | None = None
        self._downloading: Any = None  # the command whose download runs, on the model-inbox thread
        self._last: tuple[bool, str] = (True, "idle")  # the latest attempt's outcome, from either thread
        self._problem: str | None = NOT_STARTED

    async def start(self) -> None:
        if not updates_enabled(self.settings):
            self._problem = None
            self._end_queued("model updates are off")  # taken while starting: they end here, and say why
            return
        try:
            key = load_public_key(self.settings.public_key_file)
            self.inbox.mkdir(parents=True, exist_ok=True)
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except (ProvisioningError, OSError) as exc:
            self._problem = f"model updates off: {exc}"
            log.error("%s", self._problem)
            self._end_queued(self._problem)
            return
        self._remove_leftover_parts()
        store = ModelStore(self.models_dir, [key])
        self.updater = _InboxUpdater(store, self._loader, self._sanity, self._note, self.inbox,
                                     on_retry=self._retry_later, retry_s=self.disk_retry_s)
        await self.updater.start()
        self._note(self.updater.last_ok, self.updater.last_result)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-inbox", daemon=True)
        self._thread.start()
        self._problem = None

    async def stop(self) -> None:
        self._stop.set()
        if self.updater is not None:  # first: the daemon's stop budget may end this stop at any await
            self.updater.begin_stop()  # a load this stop cuts short is tried again at the next start
        # Before any await too: each command queued or downloading was "accepted", and the stop lost it
        # without a word (a review). Said in the outcome, which the heartbeat sent as sync stops carries.
        if (command := self._downloading) is not None:  # it ends at its next chunk, or dies with the process
            self._stopped_download(command)
        self._end_queued(NOT_DOWNLOADED)
        if self._thread is not None:
            # waited for on the event loop (a join in an executor thread held the process's exit); a
            # download ends at its next chunk, but one stuck waiting on the server is left to die with the
            # process (a daemon thread): its .part goes at the next start
            thread, deadline = self._thread, time.monotonic() + 5.0
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._thread = None
        if self.updater is not None:
            await self.updater.stop()

    def health(self) -> Health:
        if self._problem:
            return Health(False, self._problem)
        if self.updater is None:
            return Health(True, "off (no model signing key installed)")
        versions = ", ".join(f"{n} {v}" for n, v in self.versions().items() if v) or "shipped models"
        ok, result = self._last
        return Health(True, f"running {versions}; last update: {result if ok else 'REFUSED: ' + result}")

    def last_outcome(self) -> dict[str, object]:
        """The latest update attempt, for the status summary: ``{"ok": bool, "result": str}``."""
        ok, result = self._last
        return {"ok": ok, "result": result}

    def versions(self) -> dict[str, str | None]:
        return self.updater.versions() if self.updater is not None else {}

    def status(self) -> dict[str, object]:
        base = self.updater.status() if self.updater is not None else {"versions": {}}
        return base | {
            "download_drops": self.download_drops,
            "last_download": self.last_download,
            "last": self.last_outcome(),
        }

    def _note(self, ok: bool, result: str) -> None:
        self._last = (ok, result)

    def _end_queued(self, why: str) -> None:
        """End each queued download command with ``why`` in the outcome."""
        while True:
            try:
                command = self._downloads.get_nowait()
            except queue.Empty:
                return
            self.last_download = f"request {command.request_id}: {why}"
            self._note(False, self.last_download)
            log.warning("model update %s: %s", command.request_id, why)

    def _stopped_download(self, command: Any) -> None:
        """A download the stop cut short: no refusal to alert anyone about, but the cloud must hear of it."""
        self.last_download = f"request {command.request_id}: {NOT_DOWNLOADED}"
        self._note(False, self.last_download)
        log.info("model update %s: %s", command.request_id, NOT_DOWNLOADED)

    def _retry_later(self, package: Path, checked: FileId | None) -> None:
        """On the updater thread: ``package`` stays in the inbox (the board's disk failed it)."""
        with self._retry_lock:
            self._retry_at[package] = (checked, time.monotonic() + self.disk_retry_s)

    def _remove_leftover_parts(self) -> None:
        """Delete the downloads a killed run left half-written: is_package skips hidden files, so nothing
        else ever would, and each may be max_download_bytes."""
        freed = 0
        for part in self.inbox.glob(".*.part"):
            with contextlib.suppress(OSError):
                size = part.stat().st_size
                part.unlink()
                freed += size
        for note in self.inbox.glob(".*.command"):  # its download never completed
            if not note.with_name(note.name[1 : -len(".command")]).exists():
                note.unlink(missing_ok=True)
        if freed:
            log.info("model inbox: removed unfinished downloads (%d bytes)", freed)

    # -- the model_update command (publisher thread: only queue it) --------------------------------------

    def handle_command(self, command: Any) -> None:
        """Handler for CommandDispatcher.register("model_update", ...); takes a validated ModelUpdate."""
        # While starting (sync connects before the engines load) it is queued for the inbox thread: refused,
        # a command sent as the board came online was lost, with the reason "not started"
        if self._stop.is_set():  # sync stops after this component: nothing would read the queue any more
            raise CommandRefused(BOARD_STOPPING)
        if not updates_enabled(self.settings):
            raise CommandRefused("model updates are off on this board (no signing key installed, or "
                                 "updates.enabled = false)")
        if self.updater is None and self._problem != NOT_STARTED:
            raise CommandRefused(self._problem or "model updates are off on this board (no signing key)")
        if command.model not in self.accepted:
            metrics.ALERTS.labels(kind="model_update_refused").inc()
            self.last_download = f"request {command.request_id}: this board does not update {command.model!r}"
            self._note(False, self.last_download)
            log.warning("model update %s refused: unknown model", command.request_id)
            raise CommandRefused(f"this board does not update {command.model!r}")
        try:
            self._downloads.put_nowait(command)
        except queue.Full:
            self.download_drops += 1
            self._note(False, f"request {command.request_id}: dropped, the download queue is full")
            metrics.ALERTS.labels(kind="model_update_dropped").inc()
            log.warning("model download queue full; dropped request %s", command.request_id)
            raise CommandRefused("the download queue is full: send it again later") from None

    # -- the model-inbox thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                command = self._downloads.get(timeout=self.settings.poll_interval_s)
            except queue.Empty:
                command = None
            try:
                if command is not None:
                    self._downloading = command
                    try:
                        self._download(command)
                    finally:
                        self._downloading = None
                self._scan()
            except Exception as exc:  # a bug must not end model updates silently: say it, keep polling
                log.exception("model update inbox failed")
                self._note(False, f"model update inbox failed: {exc}")

    def _download(self, command: Any) -> None:
        dest = self.inbox / f"{command.model}-{command.version}.tar"
        note = command_note(dest)
        try:
            # before the package can appear: whatever installs it must check it is the version asked for
            # (a URL serving a validly signed package of another version was installed as a success)
            write_public(note, json.dumps({
                "model": command.model, "version": command.version, "request_id": command.request_id,
            }).encode())
            context = None
            if self.settings.download_ca_file is not None:
                context = ssl.create_default_context()
                context.load_verify_locations(cafile=str(self.settings.download_ca_file))
            download(
                command.url,
                dest,
                command.sha256,
                timeout_s=self.settings.download_timeout_s,
                max_bytes=self.settings.max_download_bytes,
                context=context,
                allowed_hosts=self.settings.allowed_hosts,
                stop=self._stop,
            )
        except (DownloadFailed, OSError) as exc:
            if not dest.exists():
                note.unlink(missing_ok=True)
            if self._stop.is_set():
                self._stopped_download(command)
                return
            self.last_download = f"request {command.request_id}: {exc}"
            # counted before the outcome is published: whoever sees the refusal in the status (the
            # operator, a test reading both) must find it in edge_alerts too; counted after, a scrape
            # between the two missed it (with a 0.5 s sleep there, the MQTT update test did every time)
            metrics.ALERTS.labels(kind="model_update_refused").inc()
            self._note(False, self.last_download)
            log.warning("model update %s not downloaded: %s", command.request_id, getattr(exc, "detail", exc))
            return
        self.last_download = f"request {command.request_id}: downloaded {dest.name}"
        log.info("model update %s downloaded into the inbox as %s", command.request_id, dest.name)

    def _scan(self) -> None:
        """Submit packages whose size and mtime held still for at least one poll interval."""
        assert self.updater is not None
        try:
            listed = [p for p in self.inbox.iterdir() if is_package(p)]
        except OSError as exc:
            log.error("cannot read the model inbox %s: %s", self.inbox, exc)
            return
        found = {p: ident for p in listed if (ident := file_id(p)) is not None}
        now = time.monotonic()
        with self._retry_lock:
            for path, (checked, due) in list(self._retry_at.items()):
                if now >= due:
                    del self._retry_at[path]
                    if self._taken.get(path) == checked:  # not another file, copied in and taken since
                        del self._taken[path]
        # filed away by the updater, removed by hand, or another file copied in under the name
        self._taken = {p: ident for p, ident in self._taken.items() if found.get(p) == ident}
        seen: dict[Path, tuple[FileId, float]] = {}
        # oldest first (then by name): two packages arriving together install in the order they came, not
        # in the directory's hash order (the board ended on whichever the listing gave last)
        for path, ident in sorted(found.items(), key=lambda item: (item[1][2], item[0].name)):
            previous, since = self._seen.get(path, (None, now))
            seen[path] = (ident, since if previous == ident else now)
            # by elapsed time, not by scans: every command brings a scan, and two commands a few ms apart
            # took a package still being copied
            if path in self._taken or now - seen[path][1] < self.settings.poll_interval_s:
                continue
            if self.updater.submit(path):
                self._taken[path] = ident
        self._seen = seen

"""Installing signed model packages on the board: verify, stage, flip ``current``, roll back on failure.

Layout under the models root (e.g. /var/lib/edge-agent/models)::

    <name>/versions/<version>/...   verified package contents (read-only once installed)
    <name>/current -> versions/<version>
    <name>/trial                     previous and new version (and the package file), present only while
                                     a new one is being installed and tried
    <name>/rolled-back               what recover() rolled back, until the updater has reported it

The flip is one ``rename`` of a symlink, so a power cut leaves either the old or the new version current.
The trial marker is written before the new version is moved into ``versions/``: if the daemon dies while
installing or trying a new version (a TensorRT crash, the OOM killer, kill -9), ``trial`` is still there at
the next start and :meth:`ModelStore.recover` puts the previous version back and deletes the new one's files.
The updater then reports the rollback, and the inbox files the package away as refused, so that a package
which kills the daemon is not installed again at every start (a crash loop). A package whose load was cut
short by the daemon's own stop (``.stopping``, written as a stop begins) is tried again instead.

Thread affinity: :class:`ModelUpdater` runs installs on its own worker thread fed by a bounded queue; the
``loader``, ``sanity`` and ``on_activated`` callables the daemon passes are called on that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import ProvisioningError
from edge_agent.lifecycle import Health
from edge_agent.provisioning.files import sync_folder, sync_tree, write_public
from edge_agent.provisioning.model_package import (
    Manifest,
    PackageRejected,
    disk_error,
    stage_and_verify,
    verify_package,
)
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

Loader = Callable[[Path], Any]
Sanity = Callable[[Any], bool]
KEEP_VERSIONS = 2
TRIAL = "trial"
ROLLED_BACK = "rolled-back"
# in the models root: the daemon began to stop (a load cut short then is not the package's fault)
STOPPING = ".stopping"


@dataclass(frozen=True)
class Trial:
    """The trial marker: the version to go back to, the one being installed, and the package it came from
    (with its size and mtime_ns then, so that another file of the same name is never blamed)."""

    previous: str | None
    version: str | None
    source: str | None = None
    source_id: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rollback:
    """An install that never finished (the daemon died or stopped meanwhile), rolled back at a start."""

    name: str
    version: str | None
    previous: str | None
    source: str | None
    source_id: tuple[int, int] | None
    by_stop: bool

    def reason(self) -> str:
        kept = self.previous or "the built-in model"
        if self.by_stop:
            return (f"{self.name} {self.version}: the daemon stopped before it finished loading; rolled back "
                    f"to {kept}; the package is tried again")
        return (f"{self.name} {self.version}: the daemon stopped while loading it (a crash, the "
                f"out-of-memory killer or a power cut); rolled back to {kept}. The package is refused so "
                "that it cannot stop the daemon at every start: send it again to retry")


def _read_trial(path: Path) -> Trial:
    """The marker as written by install(); an older marker holds only the previous version's name."""
    text = path.read_text(encoding="utf-8")
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            source_id = data.get("source_id")
            return Trial(
                data.get("previous") or None,
                data.get("version") or None,
                data.get("source") or None,
                (int(source_id[0]), int(source_id[1])) if isinstance(source_id, list) and len(source_id) == 2
                else None,
            )
    return Trial(text.strip() or None, None)


class ModelUpdateFailed(ProvisioningError):
    """The new version was installed but failed to load or its sanity check; the previous one runs again."""


class ModelStore:
    def __init__(self, root: Path, trusted: list[Ed25519PublicKey]) -> None:
        self.root = root
        self.trusted = trusted

    def current_version(self, name: str) -> str | None:
        link = self.root / name / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def running_version(self, name: str) -> str | None:
        """The version that answers: ``current``, except while a new version is on trial (loading and
        its sanity check), when the previous one still runs and ``current`` already names the new one."""
        trial = self.root / name / TRIAL
        try:
            return _read_trial(trial).previous
        except (OSError, UnicodeDecodeError):  # none, or unreadable: the health page must still be drawn
            return self.current_version(name)

    def current_path(self, name: str) -> Path | None:
        link = self.root / name / "current"
        return link.resolve() if link.is_symlink() else None

    def set_aside(self, name: str) -> None:
        """No installed version of ``name`` runs from now on (its files stay; a later update installs as
        usual)."""
        self._flip(name, None)

    def stage(self, package: Path) -> tuple[Manifest, Path]:
        """Copy or unpack ``package`` into a private staging folder and verify it there (not at the source,
        which a sender could still change)."""
        staging = self.root / ".staging" / uuid.uuid4().hex
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            manifest = stage_and_verify(package, staging, self.trusted)
            # on the disk before the switch: a power cut after "2.0 running" left its files empty, and the
            # next start went back to 1.0 (safely: they no longer verified) without the fleet knowing why
            sync_tree(staging)
            return manifest, staging
        except OSError as exc:  # a folder package's copy, or the fsync, on a full or failing disk
            shutil.rmtree(staging, ignore_errors=True)
            if (on_board := disk_error(exc, f"stage {package.name} under {self.root}")) is not None:
                raise on_board from exc
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _flip(self, name: str, version: str | None) -> None:
        link = self.root / name / "current"
        if version is None:
            link.unlink(missing_ok=True)
            return
        tmp = link.with_name(f".current-{uuid.uuid4().hex}")
        tmp.symlink_to(Path("versions") / version)
        os.replace(tmp, link)

    def install(
        self, package: Path, loader: Loader, sanity: Sanity, *, expected: tuple[str, str] | None = None
    ) -> tuple[Manifest, Any]:
        """Verify, flip, load and check; on any failure after the flip, flip back. With ``expected``
        (the model and version a model_update command named), a package signed as anything else is refused.

        Returns (manifest, engine)."""
        manifest, staging = self.stage(package)
        name = manifest.name
        if expected is not None and (name, manifest.version) != expected:
            shutil.rmtree(staging, ignore_errors=True)
            raise PackageRejected(
                f"the package is signed as {name} {manifest.version}, but the model_update command asked for "
                f"{expected[0]} {expected[1]}: refused (check the command's url and version)"
            )
        versions = self.root / name / "versions"
        target = versions / manifest.version
        previous = self.current_version(name)
        if previous == manifest.version:
            shutil.rmtree(staging, ignore_errors=True)
            raise PackageRejected(f"{name} {manifest.version} is already running")
        trial = self.root / name / TRIAL
        try:
            versions.mkdir(parents=True, exist_ok=True)
            # Written, and fsynced, before the new version enters versions/: killed after that move but before
            # the flip, its never-run files stayed, a later prune kept them and deleted the version that ran
            # (a review). Left empty by a power cut, it would read "no previous version", and the next start
            # would run the built-in model and delete the one that ran.
            write_public(trial, self._trial_record(previous, manifest.version, package))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        except OSError as exc:
            # current still names the previous version: undo what this install made, now, not at the next
            # start's recover() (a review: up to 512 MiB of staging stayed on a full disk)
            shutil.rmtree(staging, ignore_errors=True)
            trial.unlink(missing_ok=True)
            if previous is None:  # made for this install alone; rmdir leaves a folder with anything in it
                for folder in (versions, versions.parent):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            on_board = disk_error(exc, f"install {name} {manifest.version} under {self.root}")
            if on_board is not None:
                raise on_board from exc
            raise
        self._flip(name, manifest.version)
        try:
            engine = loader(target)
            if sanity(engine) is False:
                raise ModelUpdateFailed(f"{name} {manifest.version} failed its sanity check")
        except Exception as exc:
            self._flip(name, previous)
            shutil.rmtree(target, ignore_errors=True)  # before the marker goes: it is what names them
            trial.unlink(missing_ok=True)
            # made by this install alone: a package for a model the board does not run stayed in every status
            if previous is None and not any(versions.iterdir()):
                shutil.rmtree(self.root / name, ignore_errors=True)
            if isinstance(exc, ModelUpdateFailed):
                raise
            raise ModelUpdateFailed(
                f"{name} {manifest.version} failed to load ({exc}); kept {previous or 'no model'}"
            ) from exc
        trial.unlink(missing_ok=True)
        # before "running" is reported: a power cut within the journal's commit interval left the trial
        # marker, and the next start rolled back to the previous version and deleted this one
        sync_folder(trial.parent)
        self._prune(name)
        return manifest, engine

    @staticmethod
    def _trial_record(previous: str | None, version: str, package: Path) -> bytes:
        source: dict[str, object] = {}
        with contextlib.suppress(OSError):
            info = package.stat()
            source = {"source": str(package.absolute()), "source_id": [info.st_size, info.st_mtime_ns]}
        return json.dumps({"previous": previous, "version": version} | source).encode()

    def note_stopping(self) -> None:
        """The daemon begins to stop: an install it cuts short is rolled back at the next start but not
        blamed on its package (tried again)."""
        if self.root.is_dir():
            with contextlib.suppress(OSError):
                write_public(self.root / STOPPING, b"")

    def recover(self) -> list[str]:
        """Roll back any version whose install or trial never finished (the daemon died or stopped while
        installing or loading it): ``current`` goes back to the previous version and the new version's files
        are deleted. Each rollback is left in ``<name>/rolled-back`` for :meth:`take_rollbacks`."""
        stopping = self.root / STOPPING
        by_stop = stopping.exists()
        rolled = []
        for trial in sorted(self.root.glob(f"*/{TRIAL}")):
            name = trial.parent.name
            try:
                record = _read_trial(trial)
            except (OSError, UnicodeDecodeError) as exc:
                log.error("model %s: cannot read its trial marker (%s); current is kept", name, exc)
                trial.unlink(missing_ok=True)
                continue
            current = self.current_version(name)
            tried = record.version or current  # an older marker named only the previous version
            if current != record.previous:
                self._flip(name, record.previous)
            if tried and tried != record.previous:
                shutil.rmtree(trial.parent / "versions" / tried, ignore_errors=True)
            rollback = Rollback(name, tried, record.previous, record.source, record.source_id, by_stop)
            with contextlib.suppress(OSError):
                write_public(trial.parent / ROLLED_BACK, json.dumps(rollback.__dict__).encode())
            trial.unlink()
            rolled.append(name)
            log.warning(
                "model %s: version %s never finished %s; rolled back to %s", name, tried,
                "loading before the daemon stopped" if by_stop else "loading (the daemon died meanwhile)",
                record.previous or "the built-in model",
            )
        stopping.unlink(missing_ok=True)
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        return rolled

    def take_rollbacks(self) -> list[Rollback]:
        """The rollbacks recover() made (at this start, maybe by another ModelStore), each returned once."""
        found = []
        for path in sorted(self.root.glob(f"*/{ROLLED_BACK}")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                source_id = data.get("source_id")
                found.append(Rollback(
                    str(data["name"]), data.get("version"), data.get("previous"), data.get("source"),
                    (int(source_id[0]), int(source_id[1])) if isinstance(source_id, list) else None,
                    bool(data.get("by_stop")),
                ))
            except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
                log.error("model %s: cannot read what was rolled back (%s)", path.parent.name, exc)
            path.unlink(missing_ok=True)
        return found

    def verify_current(self, name: str) -> str | None:
        """At start: check the installed version's files against its signed manifest again. One that fails
        (changed on disk since it was installed) is dropped for the newest version that passes, or for
        none (the built-in model then runs); returns what happened, or None when it passed."""
        current = self.current_version(name)
        if current is None:
            return None
        try:
            verify_package(self.root / name / "versions" / current, self.trusted)
            return None
        except PackageRejected as exc:
            problem = f"{name} {current} no longer matches its signed manifest ({exc})"
        for other in self._others_newest_first(name):
            try:
                verify_package(other, self.trusted)
            except PackageRejected:
                continue
            self._flip(name, other.name)
            return f"{problem}; runs {other.name} instead"
        self._flip(name, None)
        return f"{problem}; runs the built-in model instead"

    def path_at_next_start(self, name: str) -> Path | None:
        """The version folder :meth:`recover` and :meth:`verify_current` will leave ``current`` naming at the
        next start (None: the built-in model), found without changing anything: for `edge-agent engines`,
        which must build and check the model the daemon will load."""
        version = self.running_version(name)  # ``current`` once an unfinished install is rolled back
        if version is None:
            return None
        try:  # those others than ``current``, which names the version on trial that recover() deletes
            others = [p for p in self._others_newest_first(name) if p.name != version]
        except OSError:
            others = []
        for candidate in (self.root / name / "versions" / version, *others):
            try:
                verify_package(candidate, self.trusted)
            except PackageRejected:
                continue
            return candidate.resolve()
        return None

    def _prune(self, name: str) -> None:
        for old in self._others_newest_first(name)[KEEP_VERSIONS - 1 :]:
            shutil.rmtree(old, ignore_errors=True)

    def _others_newest_first(self, name: str) -> list[Path]:
        """The installed versions of ``name`` other than ``current``, the latest installed first."""
        current = self.current_version(name)
        return sorted(
            (p for p in (self.root / name / "versions").iterdir() if p.name != current),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )


_STOP = object()


class ModelUpdater:
    """Daemon component: installs packages submitted by the command handler or dropped into ``inbox``."""

    essential = False

    def __init__(
        self,
        store: ModelStore,
        loader: Loader,
        sanity: Sanity,
        on_activated: Callable[[Manifest, Any], None],
        *,
        name: str = "model-updater",
        queue_max: int = 4,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.store = store
        self._loader, self._sanity, self._on_activated = loader, sanity, on_activated
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None
        self._stop_timeout_s = stop_timeout_s
        self.stopping = threading.Event()  # set by stop(): an install failing now may be the stop's doing
        self.dropped = 0
        self.last_result = "idle"
        self.last_ok = True
        self.last_error: Exception | None = None  # what ended the latest install, None when it ran

    async def start(self) -> None:
        for _name in self.store.recover():
            metrics.ALERTS.labels(kind="model_rollback").inc()
        # made here or already by the daemon's startup_package (which runs first): reported either way
        for rollback in self.store.take_rollbacks():
            self._rolled_back(rollback)
        self._publish_versions()
        self._thread = threading.Thread(target=self._run, name="model-updater", daemon=True)
        self._thread.start()

    def begin_stop(self) -> None:
        """The stop's first, synchronous step (an install cut short from here is tried again at the next
        start); once, whoever calls it first."""
        if not self.stopping.is_set():
            self.store.note_stopping()
            self.stopping.set()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self.begin_stop()
        while True:
            try:
                self._queue.put_nowait(_STOP)
                break
            except queue.Full:  # drop pending work: an update is re-sent, not needed at shutdown
                self._queue.get_nowait()
        # Waited for on the event loop, not joined in an executor thread: an install in progress must not
        # freeze the loop, and the daemon's wait_for ends this wait at its stop budget, where a join left
        # behind held asyncio.run's exit for its whole 30 s (a review: a stop took 30.05 s, past the unit's
        # TimeoutStopSec). The updater thread is a daemon thread; the process leaves it (daemon.leave).
        thread, deadline = self._thread, time.monotonic() + self._stop_timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._thread = None

    def health(self) -> Health:
        return Health(self.last_ok, self.last_result)

    def submit(self, package: Path) -> bool:
        """Queue a package (tar file or directory); False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(package)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("model update queue full; dropped a package (%d dropped so far)", self.dropped)
            return False

    def wait_idle(self, timeout_s: float) -> bool:
        """For tests and the CLI: True once every submitted package has been handled."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, name="model-updater-wait", daemon=True).start()
        return done.wait(timeout_s)

    def versions(self) -> dict[str, str | None]:
        """The running version of each model (the status and ``edge_model_version_info`` report these)."""
        root = self.store.root
        names = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if root.is_dir()
            else []
        )
        return {name: self.store.running_version(name) for name in names}

    def status(self) -> dict[str, object]:
        """For the health page and the MQTT status message."""
        return {
            "versions": self.versions(),
            "last_result": self.last_result,
            "ok": self.last_ok,
            "dropped": self.dropped,
        }

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Path)
                self._install(item)
            finally:
                self._queue.task_done()

    def _rolled_back(self, rollback: Rollback) -> None:
        """Report an install that the daemon's death or stop cut short (rolled back at this start)."""
        self.last_ok, self.last_result = False, rollback.reason()

    def _expected(self, package: Path) -> tuple[str, str] | None:
        """The (model, version) that ``package`` must be signed as, when something asked for it."""
        return None

    def _install(self, package: Path) -> None:
        self.last_error = None
        try:
            manifest, engine = self.store.install(
                package, self._loader, self._sanity, expected=self._expected(package)
            )
        except ProvisioningError as exc:
            self.last_error = exc
            self.last_ok, self.last_result = False, str(exc)
            metrics.ALERTS.labels(kind="model_update_refused").inc()
            log.warning("model update refused: %s", exc)
            return
        self._on_activated(manifest, engine)
        self.last_ok, self.last_result = True, f"{manifest.name} {manifest.version} running"
        log.info("model %s now runs version %s", manifest.name, manifest.version)
        self._publish_versions()

    def _publish_versions(self) -> None:
        samples = [s for family in metrics.MODEL_VERSION.collect() for s in family.samples]
        for name, version in self.versions().items():
            for sample in samples:
                if sample.labels.get("model") == name and sample.labels.get("version") != version:
                    metrics.MODEL_VERSION.remove(name, sample.labels["version"])
            if version:
                metrics.MODEL_VERSION.labels(model=name, version=version).set(1)

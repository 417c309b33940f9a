"""Wiring: which components the daemon runs, in which order, and what each one is given.

Order is dependency order (the daemon stops in reverse): store → metrics → sync → web view (and the
files it watches) → engines → knowledge tracing → model updates → attention → telemetry. The web view
comes before the engines so that it answers (status, 503 for answers) during a TensorRT build.
Components that need an object another one makes at start-up (an engine, the store) are built when
their turn comes, by :class:`Deferred`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import Config, KTSettings, read_token_file, start_problems
from edge_agent.daemon import Daemon
from edge_agent.errors import CommandRefused, ConfigError, EdgeAgentError, ModelError
from edge_agent.inference.engine_set import EngineSet
from edge_agent.inference.manifest import (
    ENGINES_DIR,
    FACE_MODEL,
    KT_MODEL,
    POSE_MODELS,
    board_model_names,
    load_manifests,
)
from edge_agent.inference.manifest import Manifest as EngineManifest
from edge_agent.kt.component import KTComponent
from edge_agent.kt.roster import Roster, watch_roster
from edge_agent.kt.service import KTService
from edge_agent.kt.updates import MODEL_NAME as KT_PACKAGE_NAME
from edge_agent.kt.updates import KTModelActivator, step_manifest_for
from edge_agent.lifecycle import Component, Health, HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.component import StoreComponent
from edge_agent.sync.commands import BOARD_STOPPING, CommandDispatcher, ModelUpdate
from edge_agent.sync.component import SyncComponent
from edge_agent.systemd import Notifier
from edge_agent.telemetry import metrics
from edge_agent.telemetry.component import TelemetryComponent
from edge_agent.telemetry.exporter import MetricsServer
from edge_agent.updates import (
    ModelUpdates,
    next_startup_package,
    set_aside_installed,
    startup_package,
    updates_enabled,
)
from edge_agent.vision.camera_hours import board_clock
from edge_agent.vision.component import AttentionComponent
from edge_agent.watched_file import WatchedFile
from edge_agent.web.answers import answer_routes, switched_off_routes
from edge_agent.web.camera_pause import camera_routes
from edge_agent.web.erase import erase_routes
from edge_agent.web.health import health_routes
from edge_agent.web.server import WebComponent

log = logging.getLogger(__name__)


class Deferred:
    """A component built at its start, from objects earlier components made."""

    def __init__(self, name: str, factory: Callable[[], Component], essential: bool = False) -> None:
        self.name = name
        self.essential = essential
        self._factory = factory
        self.inner: Component | None = None

    async def start(self) -> None:
        self.inner = self._factory()
        await self.inner.start()

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()

    def health(self) -> Health:
        return self.inner.health() if self.inner is not None else Health(False, "not started")


class WatchedFileComponent:
    """A file the daemon re-reads (the roster, the clicker tokens) among the components: nothing to start
    or stop; unhealthy while the file cannot be read (:meth:`WatchedFile.health`)."""

    essential = False

    def __init__(self, watched: WatchedFile[Any]) -> None:
        self.name = watched.key
        self._watched = watched

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        return self._watched.health()


class Disabled:
    """A component switched off in the config: shown as such, never degrading the daemon."""

    essential = False

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self._why = why

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        return Health(True, f"off ({self._why})")


def _say_switched_off(live: LiveBoard, *, sync: bool, camera: bool, kt: bool) -> None:
    """What the page shows of a part switched off in the config: a choice, not a problem (a review: "cannot
    reach the sync server" for ever with mqtt.enabled = false; "No data yet" with camera.enabled = false;
    "No answers yet" with kt.enabled = false, for a teacher waiting for answers that could never come)."""
    if kt:
        live.publish("learning", {"enabled": False})
    if sync:
        live.publish("sync", {"enabled": False, "connected": False, "backlog": 0, "oldest_age_s": None,
                              "last_success": None, "drops": {},
                              "detail": "MQTT sync is switched off in the config"})
    if camera:
        live.publish("attention", {"current_share": None, "faces": 0, "low_attention": False, "timeline": [],
                                   "camera": {"state": "disabled", "fps": 0.0,
                                              "detail": "the camera is switched off in the config"}})


@dataclass
class Assembly:
    """The daemon and the parts tests and the demo want to reach."""

    daemon: Daemon
    config: Config
    live: LiveBoard
    store: StoreComponent
    engines: EngineSet
    kt: Deferred | None = None
    web: WebComponent | None = None
    metrics_server: MetricsServer | None = None
    sync: SyncComponent | None = None
    updates: ModelUpdates | None = None
    attention: Deferred | None = None


def build(config: Config, *, notifier: Notifier | None = None, config_path: Path | None = None) -> Assembly:
    """Everything the daemon runs for ``config``; nothing starts until ``daemon.run()``. ``config_path``:
    the file it came from, checked again before a reload restarts the daemon onto it."""
    live = LiveBoard()
    heartbeats = HeartbeatRegistry()
    token = read_token_file(config.web.token_file) if config.web.enabled else None

    store = StoreComponent(config, heartbeats=heartbeats, live=live)
    manifests = load_manifests()
    names = board_model_names(config)
    missing = [name for name in names if name not in manifests]
    if missing:
        raise ModelError(f"no engine manifest for {missing} in {ENGINES_DIR}; reinstall edge-agent")
    kt_settings = _installed_kt(config, manifests)
    engines = EngineSet(
        [manifests[n] for n in names],
        config.inference,
        config.paths,
        nice_by_role={"face": config.attention.nice, "pose": config.attention.nice},
    )
    components: list[Component] = [store, engines]

    kt: Deferred | None = None
    if config.kt.enabled:
        kt = Deferred(
            "kt",
            lambda: KTComponent(
                kt_settings, config.device, engines.get(KT_MODEL), store.db, store.outbox, live, heartbeats
            ),
        )
        components.append(kt)
    else:
        components.append(Disabled("kt", "kt.enabled = false"))

    updates, activator = _model_updates(config, kt, manifests[KT_MODEL])
    if updates is not None:
        components.append(updates)

    attention = _attention(config, engines, store, live, heartbeats) if config.camera.enabled else None
    components.append(attention or Disabled("attention", "camera.enabled = false"))

    sync: SyncComponent | None = None
    if config.mqtt.enabled:
        commands = CommandDispatcher(config.device)
        if updates is not None:
            commands.register("model_update", lambda command: _update(daemon, updates, command))
        # the config is read at start: a reload is a clean restart (Daemon.request_restart)
        commands.register("config_reload", lambda command: _reload(daemon, command.request_id))
        sync = SyncComponent(
            store.outbox,
            config.device,
            config.mqtt,
            live=live,
            commands=commands,
            heartbeats=heartbeats,
            health_summary=lambda: _health_summary(daemon, updates, clock_synced=store.clock_synced),
        )
        # Started right after the store and so stopped just before it: the backlog goes out while the
        # engines load, and the last, partial windows KT and attention write as they stop still go out.
        components.insert(components.index(store) + 1, sync)
    else:
        components.insert(components.index(store) + 1, Disabled("sync", "mqtt.enabled = false"))
    _say_switched_off(live, sync=sync is None, camera=attention is None, kt=kt is None)

    components.append(TelemetryComponent(config.metrics.telemetry_interval_s, live, heartbeats,
                                         certificate_files=config.required_files()))

    web: WebComponent | None = None
    if config.web.enabled:
        # The lambdas bind `daemon` late: it is made below, from these components.
        routes = [health_routes(lambda: daemon.readiness())]  # noqa: PLW0108
        roster = _roster(config) if kt is not None else None
        routes.extend([switched_off_routes()] if kt is None else [answer_routes(
            lambda: _kt_service(kt), config.kt, roster, failure=lambda: daemon.failure_of(kt.name)),
            erase_routes(lambda: _kt_service(kt))])
        routes.append(camera_routes(lambda: _attention_component(attention)))
        web = WebComponent(config.web, live, token, routes,
                           status=lambda: _web_status(daemon, updates, store.clock_synced),
                           timezone=config.device.timezone,
                           board_name=config.device.display_name or config.device.class_id)
        # Before the engines: a TensorRT build takes minutes (after a TensorRT update, or a precision
        # change), and meanwhile the teacher view and /api/v1/status say what is starting instead of
        # refusing connections; answers get 503 "starting" until knowledge tracing runs.
        components[components.index(engines):components.index(engines)] = [
            web, *(WatchedFileComponent(f) for f in (roster, web.clients) if f is not None)
        ]

    metrics_server: MetricsServer | None = None
    if config.metrics.enabled:
        metrics_server = MetricsServer(
            config.metrics.host,
            config.metrics.port,
            token=read_token_file(config.metrics.token_file, "metrics.token_file"),
            tls_cert_file=config.metrics.tls_cert_file,
            tls_key_file=config.metrics.tls_key_file,
        )
        # Right after the store: a board whose engines take minutes to build shows which component is
        # still starting instead of a scrape target that is simply down.
        components.insert(components.index(store) + 1, metrics_server)

    daemon = Daemon(
        components,
        live=live,
        heartbeats=heartbeats,
        notifier=notifier,
        ready_after=store.name,
        engine_status=lambda: _engine_rows(engines, activator, updates),
        restart_check=None if config_path is None else lambda: start_problems(config_path),
    )
    return Assembly(daemon, config, live, store, engines, kt, web, metrics_server, sync, updates, attention)


def _roster(config: Config) -> Roster | None:
    return None if config.kt.roster_file is None else watch_roster(config.kt.roster_file)


def _kt_service(kt: Deferred) -> KTService | None:
    return kt.inner.get_service() if isinstance(kt.inner, KTComponent) else None


def _attention(
    config: Config, engines: EngineSet, store: StoreComponent, live: LiveBoard, heartbeats: HeartbeatRegistry
) -> Deferred:
    return Deferred(
        "attention",
        lambda: AttentionComponent(
            config.camera,
            config.attention,
            engines.get(FACE_MODEL),
            [engines.get(n) for n in POSE_MODELS] if config.attention.pose_method == "fsanet" else [],
            outbox=store.outbox,
            heartbeats=heartbeats,
            class_id=config.device.class_id,
            live=live,
            history=store.history,
            local_now=board_clock(config.device.timezone),
            pause_file=config.paths.state_dir / "camera-pause",
            lesson_gap_s=config.kt.lesson_gap_s,
            db=store.db,
            clock_synced=store.clock_synced,
        ),
    )


def _attention_component(attention: Deferred | None) -> AttentionComponent | None:
    inner = None if attention is None else attention.inner
    return inner if isinstance(inner, AttentionComponent) else None  # not started yet: its pause() says so


def _kt_component(kt: Deferred) -> KTComponent | None:
    return kt.inner if isinstance(kt.inner, KTComponent) else None


KT_PACKAGE_DIR_SEEN = "kt-package-dir"  # in the state directory: kt.package_dir at the last start


def _kt_package_dir_changed(config: Config) -> bool:
    """Whether kt.package_dir differs from its value at the last start: then it is the newer choice and
    runs instead of an installed signed update (a review: after any signed update the setting was passed
    over without a word, though a refused update's message sends IT to it). Not known: False."""
    try:
        before = (config.paths.state_dir / KT_PACKAGE_DIR_SEEN).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return str(config.kt.package_dir or "") != before


def next_kt_package_dir(config: Config) -> Path | None:
    """The KT package folder whose step model the daemon runs at its next start (None: the shipped one):
    the signed update installed last, unless kt.package_dir changed since the last start, else
    kt.package_dir. Decided as :func:`_installed_kt` decides, changing nothing: for `edge-agent engines`,
    which must build and check the model the daemon will load."""
    installed = next_startup_package(config.updates, config.paths.state_dir, KT_PACKAGE_NAME)
    if installed is not None and not _kt_package_dir_changed(config):
        return installed
    return config.kt.package_dir


def _installed_kt(config: Config, manifests: dict[str, EngineManifest]) -> KTSettings:
    """KT settings (and the kt-step manifest, in place) for the signed update installed last, else for
    ``kt.package_dir``: the engine runs that package's step model, not the shipped one."""
    if not config.kt.enabled:
        return config.kt
    installed = startup_package(config.updates, config.paths.state_dir, KT_PACKAGE_NAME)
    configured = config.kt.package_dir
    seen = config.paths.state_dir / KT_PACKAGE_DIR_SEEN
    if installed is not None and _kt_package_dir_changed(config):
        with contextlib.suppress(OSError):  # not set aside (a read-only state folder): the update runs on
            log.warning("kt.package_dir is now %s: it runs instead of the installed update %s, set aside (a "
                        "later update installs over it as usual)", configured or "the shipped package",
                        installed.name)
            set_aside_installed(config.updates, config.paths.state_dir, KT_PACKAGE_NAME)
            installed = None
    with contextlib.suppress(OSError):  # whole or not at all: an empty one read as a change (round 3)
        written = seen.with_name(seen.name + ".new")
        written.write_text(str(configured or ""), encoding="utf-8")
        os.replace(written, seen)
    if installed is not None:
        log.info("knowledge tracing runs the installed update %s (kt.package_dir, if set, is passed over "
                 "until it is changed)", installed.name)
    package_dir = installed or configured
    if package_dir is None:
        return config.kt
    manifests[KT_MODEL] = step_manifest_for(manifests[KT_MODEL], package_dir)
    return config.kt.model_copy(update={"package_dir": package_dir})


def _model_updates(
    config: Config, kt: Deferred | None, step_manifest: EngineManifest
) -> tuple[ModelUpdates | None, KTModelActivator | None]:
    if kt is None or not updates_enabled(config.updates):
        return None, None
    activator = KTModelActivator(step_manifest, config.inference, config.paths, lambda: _kt_component(kt))
    updates = ModelUpdates(
        config.updates,
        config.paths.state_dir,
        activator.load,
        activator.sanity,
    )
    return updates, activator


def _engine_rows(
    engines: EngineSet, activator: KTModelActivator | None, updates: ModelUpdates | None
) -> list[dict[str, object]]:
    """EngineSet's rows; the KT row shows the model version (and the updated engine after a swap)."""
    rows = engines.status()
    if activator is None or updates is None:
        return rows
    version = updates.versions().get(KT_PACKAGE_NAME) or "shipped"
    kt_row = activator.engine_row
    return [({**(kt_row or r), "version": version} if r.get("name") == KT_MODEL else r) for r in rows]


def _health_summary(
    daemon: Daemon,
    updates: ModelUpdates | None = None,
    components: list[dict[str, object]] | None = None,
    *,
    clock_synced: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    ready, reasons = daemon.readiness(components)
    summary = {"state": daemon.state, "ready": ready, "reasons": reasons, "at": time.time()}
    if clock_synced is not None:  # False: "at", and the times the board stamps, may be off (by days)
        summary["clock_synced"] = clock_synced()
    if updates is not None:
        summary["models"] = updates.versions()
        summary["model_update"] = updates.last_outcome()
    return summary


def _web_status(
    daemon: Daemon, updates: ModelUpdates | None, clock_synced: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """The status API: the health summary, and every component's health, the healthy ones too (their
    details say e.g. what the store dropped while the board was offline, also after a restart)."""
    components = daemon.component_health()
    summary = _health_summary(daemon, updates, components, clock_synced=clock_synced)
    return {**summary, "components": components}


def _reload(daemon: Daemon, request_id: str) -> None:
    """The config_reload command (the publisher's thread): refused, with why, when the config on disk
    would not start; it was "accepted" and the board went down, the cloud never told why (a review).
    Refused while the board stops or a restart is asked for already: it was "accepted", then ignored, and
    the outcomes are kept in memory, so after the restart the cloud had no word of it (a review)."""
    why = f"config_reload command {request_id}"
    if daemon.restart_asked == why:  # the same command delivered again (a QoS 1 resend)
        raise CommandRefused(f"request {request_id} is under way already (this is a repeated delivery of "
                             "it): the board restarts to read the config on disk")
    if daemon.stopping or daemon.restart_asked:
        raise CommandRefused(BOARD_STOPPING)
    if said := daemon.restart_problems():
        raise CommandRefused(f"the config on disk would not start, so the board runs on with the one it "
                             f"started with: {said}")
    daemon.request_restart_soon(why)


def _update(daemon: Daemon, updates: ModelUpdates, command: ModelUpdate) -> None:
    """The model_update command: refused while the board stops (updates stop before sync, which still
    takes commands); "accepted", it went into a queue nobody read any more (a review)."""
    if daemon.stopping:
        raise CommandRefused(BOARD_STOPPING)
    updates.handle_command(command)


async def run_daemon(config: Config, config_path: Path | None = None) -> int:
    try:
        assembly = build(config, config_path=config_path)
    except ConfigError as exc:
        for where, message in exc.problems:
            log.error("config problem: %s: %s", where, message)
        return 1
    except EdgeAgentError as exc:  # e.g. a damaged or missing engine manifest in the installed package
        log.error("cannot start: %s", exc)
        return 1
    metrics.ALERTS.labels("start").inc(0)
    return await assembly.daemon.run()

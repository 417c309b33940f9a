"""The daemon: starts components in dependency order, watches them, stops them in reverse.

One asyncio loop owns signals, the watchdog and the health summary. Components run their own worker
threads; those threads prove they are alive through heartbeats, and the systemd watchdog is fed only
while the loop turns and every heartbeat is fresh, so a hung worker gets the service restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.heap import freeze_startup_objects, time_collections
from edge_agent.lifecycle import Component, Health, HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.systemd import Notifier
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

# A reload (SIGHUP: systemctl kill --kill-who=main -s HUP; the fleet's config_reload command) is a clean stop
# with this exit status (EX_TEMPFAIL), which the unit's RestartForceExitStatus= starts again: the config is
# read at start.
RESTART_EXIT = 75
# A start is normally seconds. A component whose start may take longer (the engines: a TensorRT build after
# a config change takes minutes) sets ``start_timeout_s = None``: READY went out with the store, the
# watchdog is fed meanwhile, and its health says what it is doing.
START_TIMEOUT_S = 120.0
STOP_BUDGET_S = 9.0  # shared by the components, each 0.5 s at least; the unit kills after 30 s
HEALTH_PERIOD_S = 1.0
RETRY_START_S = 300.0  # a component that failed to start (and the models that failed to load) tried again
RETRY_START_MAX_S = 3600.0
RECHECK_CONFIG_S = 30.0  # a config a reload refused, while it is said in the health


EXECUTOR_WAIT_S = 5.0


def run_to_exit(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)`` less its wait for every executor thread, which has no limit: a thread stuck in
    a component's stop (asyncio.to_thread around a pose pool joined while an engine call hung) held the
    process after SIGTERM until systemd's SIGKILL (a review). The threads get EXECUTOR_WAIT_S; one still
    running then is left to leave(). (loop.shutdown_default_executor cannot be bounded before Python 3.12:
    cancelled, it joins its helper thread anyway.)"""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            # Closing the loop gives SIGHUP back its default, which ends the process: a second reload
            # signal while the threads were waited for killed it by SIGHUP, which Restart=on-failure takes
            # for a clean end, and the board stayed off (a review). It is leaving with its code anyway.
            # (close() would set it to SIG_DFL after a SIG_IGN: the loop lets it go first)
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (tests)
                loop.remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            loop.close()
            waiting = threading.Thread(target=executor.shutdown, name="executor-shutdown", daemon=True)
            waiting.start()
            waiting.join(EXECUTOR_WAIT_S)
            if waiting.is_alive():
                log.error("a worker thread still busy %.0f s after the stop is left behind", EXECUTOR_WAIT_S)


def leave(code: int) -> int:
    """``code``, or the process ends here with it (os._exit, the logs flushed) while a thread of ours is
    still running: a stop during the start leaves the engine-load thread inside ONNX Runtime (TensorRT on
    a board), and the interpreter's exit around it ended in "terminate called without an active
    exception", SIGABRT, 5 times in 6 (a review): systemd took that stop for a failure. What could be
    written is by then: the store's close waited for its writer and failed, counted and logged, the writes
    it could not run (a database held by another program, a stalled disk)."""
    # any thread but this one: a non-daemon one stuck (an executor's, in a hung engine call) is joined by the
    # interpreter's exit for ever, as systemd's SIGKILL ends it
    running = [t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
    if not running:
        return code
    log.info("leaving %s behind (exit status %s)", ", ".join(running), code)
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class EssentialComponentFailed(EdgeAgentError):
    pass


@dataclass
class ComponentState:
    component: Component
    started: bool = False
    starting: bool = False  # its start() is running: its own health says what it is doing
    failure: str | None = None
    # a start that raised may be tried again; one that timed out may still be running (its threads)
    retry: bool = False

    def health(self) -> Health:
        if self.failure:
            return Health(False, self.failure)
        if not self.started and not self.starting:
            return Health(False, "not started")
        try:
            return self.component.health()
        except Exception as exc:  # a broken health() must not break the daemon
            return Health(False, f"health check failed: {exc}")


class Daemon:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        live: LiveBoard,
        heartbeats: HeartbeatRegistry,
        notifier: Notifier | None = None,
        ready_after: str | None = None,
        engine_status: Callable[[], list[dict[str, object]]] | None = None,
        restart_check: Callable[[], list[tuple[str, str]]] | None = None,
    ) -> None:
        """``ready_after`` names the component after whose start READY=1 is sent (the store).
        ``restart_check``: what would stop the config on disk from starting (config.start_problems), asked
        before a reload; a reload onto a broken config left the board down until someone edited it."""
        self._states = [ComponentState(c) for c in components]
        self.live = live
        self.heartbeats = heartbeats
        self.notifier = notifier or Notifier()
        self._ready_after = ready_after
        self._stop = asyncio.Event()
        self._last_status = ""
        self.state = "starting"
        self._engine_status = engine_status or (lambda: [])
        self._restart_check = restart_check or (lambda: [])
        # set by a refused reload: the broken file stays on disk, and the next restart for any reason (the
        # night's power-off, an upgrade) would start on it; said in the health until then (round 2)
        self.config_refused: str | None = None
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health_error_logged = -float("inf")
        self._restart_checks: set[asyncio.Task[None]] = set()
        # why a restart was asked for, from the moment it is asked (its config is checked on a thread
        # first): a config_reload delivered twice was "accepted" twice, and the second only ignored
        self.restart_asked: str | None = None

    # -- public -----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        # A stop wins over a reload already under way: exit 75 in systemd's stop job failed the unit, and
        # OnFailure='s retry timer started the daemon the admin had stopped 15 minutes later (a review)
        if self.exit_code == RESTART_EXIT:
            self.exit_code = 0
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """The daemon stops (an admin's stop, a reload under way): a command taken now would never run."""
        return self._stop.is_set()

    def restart_problems(self) -> str | None:
        """Why the config on disk would not start ("key: message; ..."); None when a restart may go ahead.
        Kept in ``config_refused`` for the health until the next check. Where a listener that failed at
        start cannot listen (its host or port) is no reason: the restart leaves it no worse, and the
        reload may be the fix of something else."""
        listeners_down = {f"{name}.{key}" for name in ("web", "metrics") if self.failure_of(name)
                          for key in ("host", "port")}
        problems = [problem for problem in self._restart_check() if problem[0] not in listeners_down]
        self.config_refused = "; ".join(f"{key}: {message}" for key, message in problems) or None
        return self.config_refused

    def request_restart(self, why: str) -> None:
        """On the loop: stop cleanly and exit with RESTART_EXIT, so that systemd starts the daemon again
        and it reads its config anew (nothing is reloaded in place). Not while the config on disk would
        not start: the board runs on as it is, and the log says why. The config is checked on a thread:
        the check writes a file in the state folder, and on the loop a disk stall froze the teacher view,
        the answers and the watchdog's pings for as long as it lasted (a review: 8 s)."""
        if self._stop.is_set():  # stopping already (an admin's stop, a reload): that stop stands
            log.warning("%s: ignored, the daemon is already stopping", why)
            return
        self.restart_asked = why
        task = asyncio.get_running_loop().create_task(self._restart_if_startable(why))
        self._restart_checks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._restart_checks.discard)

    async def _restart_if_startable(self, why: str) -> None:
        said = await asyncio.to_thread(self.restart_problems)
        if self._stop.is_set():  # an admin's stop while the config was checked: that stop stands
            log.warning("%s: ignored, the daemon is already stopping", why)
            return
        if said:
            log.error("%s: not restarting, the config on disk would not start (%s); running on with the "
                      "config read at the start", why, said)
            self.restart_asked = None
            return
        log.warning("%s: stopping cleanly to start again with the config on disk", why)
        self.exit_code = RESTART_EXIT
        self._stop.set()

    def request_restart_soon(self, why: str) -> None:
        """:meth:`request_restart` from any thread (the MQTT command handler's). ``restart_asked`` says it
        at once, before the loop takes it up."""
        if self._loop is not None:
            self.restart_asked = why
            self._loop.call_soon_threadsafe(self.request_restart, why)

    def failure_of(self, name: str) -> str | None:
        """Why component ``name`` is not running when it failed to start (None: started, or starting)."""
        return next((s.failure for s in self._states if s.component.name == name), None)

    @property
    def component_names(self) -> list[str]:
        return [s.component.name for s in self._states]

    def readiness(self, components: list[dict[str, object]] | None = None) -> tuple[bool, list[str]]:
        """(ready, reasons): ready when running and nothing is degraded; reasons name what is not.
        ``components``: :meth:`component_health` when the caller has it already (each costs store reads)."""
        components = self.component_health() if components is None else components
        reasons = [f"{c['name']}: {c['detail']}" for c in components if not c["ok"]]
        reasons += [f"worker {name} not responding" for name in self.heartbeats.stale()]
        if self.config_refused:
            reasons.append(f"the config on disk would not start ({self.config_refused}): a reload was "
                           "refused, and a restart would take the board down; mend the file and reload")
        if self.state != "running":
            reasons.insert(0, f"daemon is {self.state}")
        return (not reasons, reasons)

    def status_line(self, components: list[dict[str, object]] | None = None) -> str:
        ready, reasons = self.readiness(components)
        if self.state == "running" and ready:
            return "running: all components healthy"
        return f"{self.state}: " + "; ".join(reasons) if reasons else self.state

    async def run(self) -> int:
        time_collections()
        loop = self._loop = asyncio.get_running_loop()
        self.live.bind_loop(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # SIGHUP's default killed it uncleanly
            loop.add_signal_handler(signal.SIGHUP, self.request_restart, "SIGHUP (a reload)")
        # Supervise (and ping the watchdog) from the start: READY goes out once the store is open, and
        # systemd's watchdog counts from READY, while the engines may still take minutes to load.
        watchdog = asyncio.create_task(self._supervise())
        try:
            await self._start_all()
        except EssentialComponentFailed as exc:
            watchdog.cancel()
            log.error("essential component failed, not starting: %s", exc)
            self.notifier.status(f"failed: {exc}")
            await self._stop_all()
            return 1
        if self._stop.is_set():  # stopped while starting: never "running"
            watchdog.cancel()
            return await self._stopping()
        self.state = "running"
        freeze_startup_objects()
        self._publish_health()
        if self._ready_after is None:
            self.notifier.ready(self.status_line())
        log.info("daemon running: %s", self.status_line())
        helpers = [asyncio.create_task(self._retry_failed_starts()),
                   asyncio.create_task(self._recheck_refused_config())]
        await self._stop.wait()
        watchdog.cancel()
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return await self._stopping()

    async def _stopping(self) -> int:
        self.state = "stopping"
        self.notifier.stopping("stopping: flushing pending writes")
        log.info("stopping")
        try:  # the health loop has ended: the page said "ok" (all healthy) through the whole stop
            self._publish_health()
        except Exception as exc:
            self._log_health_error(exc)
        await self._stop_all()
        self.notifier.close()
        return self.exit_code

    # -- internals --------------------------------------------------------------------------------
    async def _start_all(self) -> None:
        for state in self._states:
            if self._stop.is_set():
                return
            component = state.component
            began = time.monotonic()
            state.starting = True
            try:
                done = await self._started(component)
            except Exception as exc:
                state.retry = not isinstance(exc, asyncio.TimeoutError)
                if isinstance(exc, asyncio.TimeoutError):  # its message is empty
                    exc = TimeoutError(f"did not start within {START_TIMEOUT_S:g} s")
                state.failure = f"failed to start: {exc}"
                metrics.COMPONENT_UP.labels(component.name).set(0)
                if component.essential:
                    raise EssentialComponentFailed(f"{component.name}: {exc}") from exc
                # What it took before it failed goes: a worker heartbeat left registered withheld the
                # watchdog's pings for good, and systemd killed the whole board 30 s later (a review: the
                # knowledge tracing's, its start failing on a locked database)
                await self._release(component)
                log.warning("component %s failed to start, continuing degraded: %s", component.name, exc)
                self.notifier.status(f"degraded: {component.name} failed to start: {exc}")
                continue
            finally:
                state.starting = False
            if not done:
                log.info("stop requested while %s was starting", component.name)
                return
            state.started = True
            metrics.COMPONENT_UP.labels(component.name).set(1)
            log.info("component %s started in %.2fs", component.name, time.monotonic() - began)
            if component.name == self._ready_after:
                self.notifier.ready(f"starting: {component.name} ready, starting the rest")

    @staticmethod
    async def _release(component: Component) -> None:
        """Stop what a failed start left half made (its stop copes with that; a failure is logged)."""
        try:
            await asyncio.wait_for(component.stop(), STOP_BUDGET_S)
        except Exception as exc:
            log.debug("component %s: stop after its failed start: %r", component.name, exc)

    async def _started(self, component: Component) -> bool:
        """Start ``component``; False when a stop was requested first (SIGTERM must not wait for a start
        that may take minutes: systemd kills the daemon 30 s after it, before the store is closed)."""
        start = asyncio.ensure_future(component.start())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            limit = getattr(component, "start_timeout_s", START_TIMEOUT_S)
            done, _ = await asyncio.wait({start, stop}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if start in done:
            start.result()
            return True
        start.cancel()  # its worker threads are daemon threads: they do not hold up the exit
        if self._stop.is_set():
            return False
        raise asyncio.TimeoutError

    async def _recheck_refused_config(self) -> None:
        """While a refused reload is said in the health, the file on disk is checked again every
        RECHECK_CONFIG_S: mended, /readyz said "not ready" until someone sent another reload (a review)."""
        while True:
            await asyncio.sleep(RECHECK_CONFIG_S)
            if self.config_refused and await asyncio.to_thread(self.restart_problems) is None:
                log.info("the config on disk would start again: a reload (or the next restart) takes it")

    async def _retry_failed_starts(self) -> None:
        """Every RETRY_START_S, the models that failed to load (``reload_failed``) and then the components
        that failed to start are tried again: a cache disk full at start left the board without class
        attention until someone restarted it, 150 s after the space was freed and for the rest of the term
        (a review)."""
        delay = RETRY_START_S
        while True:
            await asyncio.sleep(delay)
            failed = [state for state in self._states if state.failure and state.retry
                      and not hasattr(state.component, "reload_failed")]
            # twice as long after each try that changed nothing, to an hour: a model missing for good
            # logged 4 lines every 5 minutes for the rest of the term (a round-2 review)
            delay = min(delay * 2, RETRY_START_MAX_S) if failed else RETRY_START_S
            if not failed:
                continue
            for state in self._states:
                reload = getattr(state.component, "reload_failed", None)
                if state.started and reload is not None:
                    await reload()
            for state in failed:
                component = state.component
                await self._release(component)
                state.starting = True
                try:
                    done = await self._started(component)
                except Exception as exc:
                    state.retry = not isinstance(exc, asyncio.TimeoutError)
                    state.failure = f"failed to start: {exc or 'did not start in time'}"
                    log.info("component %s still cannot start: %s", component.name, exc)
                    await self._release(component)
                    continue
                finally:
                    state.starting = False
                if not done:
                    return
                state.failure, state.started = None, True
                metrics.COMPONENT_UP.labels(component.name).set(1)
                log.warning("component %s started on a later try (it had failed to start)", component.name)

    async def _stop_all(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET_S
        for state in reversed(self._states):
            if not state.started:
                continue
            remaining = max(0.5, deadline - time.monotonic())
            try:
                await asyncio.wait_for(state.component.stop(), remaining)
                log.info("component %s stopped", state.component.name)
            except Exception as exc:  # keep stopping the rest: the store must still flush
                # A timeout's message is empty: say what happened instead of "did not stop cleanly: ".
                timed_out = isinstance(exc, asyncio.TimeoutError)
                why = f"still busy after {remaining:.1f} s" if timed_out else str(exc)
                log.error("component %s did not stop cleanly: %s", state.component.name, why or repr(exc))
            state.started = False
            metrics.COMPONENT_UP.labels(state.component.name).set(0)

    async def _supervise(self) -> None:
        interval = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        withheld: list[str] = []
        while True:
            try:
                components = self.component_health()  # on the event loop: no health may wait on the disk
                self._publish_health(components)
                status = self.status_line(components)
                if status != self._last_status:
                    self.notifier.status(status)
                    self._last_status = status
            except Exception as exc:  # this loop feeds the watchdog: a failing health check must not end it
                self._log_health_error(exc)
            stale = self.heartbeats.stale()
            if interval is not None and time.monotonic() >= next_ping:
                if stale:
                    # Withholding the ping is the point: systemd restarts a daemon whose worker hung. It is
                    # tried again at the next tick: due only an interval later, it came at WatchdogSec, and
                    # a worker 1 s late that beat again got the daemon killed 14 s later (a review)
                    if stale != withheld:  # said once, not at every tick
                        log.error("watchdog ping withheld: workers not responding: %s", ", ".join(stale))
                    withheld = stale
                else:
                    self.notifier.watchdog()
                    next_ping, withheld = time.monotonic() + interval, []
            sleep = HEALTH_PERIOD_S if interval is None else min(HEALTH_PERIOD_S, interval)
            await asyncio.sleep(sleep)

    def component_health(self) -> list[dict[str, object]]:
        """Every component's health, the healthy ones too (their detail says e.g. what the store dropped)."""
        out: list[dict[str, object]] = []
        for state in self._states:
            health = state.health()
            out.append({"name": state.component.name, "ok": health.ok, "detail": health.detail})
        return out

    def _publish_health(self, components: list[dict[str, object]] | None = None) -> None:
        components = self.component_health() if components is None else components
        for c in components:
            metrics.COMPONENT_UP.labels(c["name"]).set(1 if c["ok"] else 0)
        ready, _ = self.readiness(components)
        shown = self.state if self.state != "running" else ("ok" if ready else "degraded")
        self.live.publish("health", {"state": shown, "components": components, "engines": self._engines()})

    def _engines(self) -> list[dict[str, object]]:
        try:
            return self._engine_status()
        except Exception as exc:  # e.g. an I/O error reading the model versions: the health page goes on
            self._log_health_error(exc)
            return []

    def _log_health_error(self, exc: Exception) -> None:
        if time.monotonic() - self._health_error_logged >= 60.0:
            self._health_error_logged = time.monotonic()
            log.error("health check failed (said once a minute while it fails)", exc_info=exc)

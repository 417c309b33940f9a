"""The end-to-end lesson scenario: the whole daemon under a classroom's load, measured from outside.

Three processes, so the daemon's CPU and memory are its own:

* the daemon (``python benchmarks/lesson.py serve ...``): the demo configuration (every model loaded,
  the camera reading an image folder at 5 analysed frames/s, sync to a private Mosquitto);
* the load generator (``python benchmarks/lesson.py load ...``): 50 students answering each question
  within a few seconds of it over the real HTTP answer API, timing answer-to-feedback per request;
* this process: the broker, the reference cloud receiver (sync lag = receive time - created time), and a
  sampler reading /proc/PID and /metrics.

    .venv/bin/python benchmarks/lesson.py run --seconds 60 [--out artifacts/bench]

``run_lesson`` returns raw series; lesson_figures.py turns them into figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _entry in (str(REPO), str(REPO / "benchmarks")):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from lesson_figures import (  # noqa: E402
    LessonRun,
    Sample,
    answer_stage_buckets,
    cpu_seconds,
    engines_up,
    error_counts,
    histogram,
    metric_sum,
    parse_metrics,
    rss_mib,
    run_from_json,
    soak_summary,
    stage_totals,
    summarize,
)

from edge_agent.demo import SHARED, LocalBroker, _free_port, demo_config  # noqa: E402

__all__ = ["LessonRun", "run_from_json", "run_lesson", "soak_summary", "summarize"]

DEVICE_ID = "demo-board"


# -- the run ------------------------------------------------------------------------------------------


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


# The daemon's start, each stage: seconds on ONNX Runtime (startup_s in the results), but where TensorRT
# imports, its first start builds every plan into a fresh cache (YuNet's profile reaches 1088x1920), which
# the loader warns "can take minutes" (not timed: no Jetson here), longer than the 120 s this waited before.
# A daemon that exits ends the wait at once.
STARTUP_S = 900.0


def _wait_until(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sample(pid: int, metrics_url: str) -> Sample:
    """CPU and RSS from /proc, frames, answers applied and error counters from /metrics: None for those
    three where the scrape failed (refused, timed out, not 200), never zeros, which read as counters that
    did not move, or moved backwards."""
    now = time.time()
    cpu = cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    rss = rss_mib(Path(f"/proc/{pid}/status").read_text()) or float("nan")
    status, text = _http_get(metrics_url)
    if status != 200:
        return now, cpu, rss, None, None, None
    samples = parse_metrics(text)
    frames = metric_sum(samples, "edge_camera_frames_analysed_total", {})
    applied = metric_sum(samples, "edge_answers_total", {"outcome": "applied"})
    return now, cpu, rss, frames, applied, error_counts(samples)


def _written(pid: int) -> tuple[float, int] | None:
    """(epoch, bytes ``pid`` has caused to be written to storage), or None where the kernel does not say."""
    try:
        fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return time.time(), int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return None


def _scrape(metrics_url: str) -> list[tuple[str, dict[str, str], float]]:
    return parse_metrics(_http_get(metrics_url)[1])


def _buckets(samples: list[tuple[str, dict[str, str], float]]) -> dict[float, float]:
    return histogram(samples, "edge_answer_feedback_seconds")


def _sync_lags(db_path: Path) -> list[float]:
    conn = sqlite3.connect(str(db_path))
    try:
        rows = conn.execute("SELECT received_at - created_at FROM items WHERE device = ?", (DEVICE_ID,))
        return [float(r[0]) for r in rows]
    finally:
        conn.close()


def _child(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """This script in another process (the daemon or the load generator)."""
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], **popen)


def _drive(
    run: LessonRun,
    daemon: subprocess.Popen[bytes],
    load: subprocess.Popen[bytes],
    metrics_url: str,
    *,
    sample_every_s: float,
    log: Any,
) -> None:
    """Sample the daemon until the load generator is done."""
    run.window = (time.time(), time.time() + run.seconds)
    first = _scrape(metrics_url)
    written = _written(daemon.pid)
    next_log = time.monotonic() + 60
    while load.poll() is None:
        run.samples.append(_sample(daemon.pid, metrics_url))
        if time.monotonic() >= next_log:
            next_log += 60
            log(f"lesson: {(time.time() - run.window[0]) / 60:.0f} min, rss {run.samples[-1][2]:.0f} MiB")
        time.sleep(sample_every_s)
    run.window = (run.window[0], time.time())
    run.samples.append(_sample(daemon.pid, metrics_url))
    last = _scrape(metrics_url)
    if written is not None and (written_last := _written(daemon.pid)) is not None:
        applied = (metric_sum(first, "edge_answers_total", {"outcome": "applied"}),
                   metric_sum(last, "edge_answers_total", {"outcome": "applied"}))
        run.disk_written = ((*written, applied[0]), (*written_last, applied[1]))
    run.feedback_buckets = (_buckets(first), _buckets(last))
    run.stages = (stage_totals(first), stage_totals(last))
    run.stage_buckets = (answer_stage_buckets(first), answer_stage_buckets(last))
    run.load_avg = os.getloadavg()


def _stop(daemon: subprocess.Popen[bytes], load: subprocess.Popen[bytes] | None) -> int:
    if load is not None and load.poll() is None:
        load.kill()
        load.wait(5)
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        return daemon.wait(5)


def fresh_work_dir(work: Path) -> None:
    """Empty ``work`` but for the model cache, so every run starts as a newly provisioned board.

    A reused state dir would hold the last run's device secret and applied-event keys: the students'
    client event ids repeat from run to run, so every answer would come back as a duplicate, never
    reaching the model step or SQLite, and the run would time the wrong path.
    """
    work.mkdir(parents=True, exist_ok=True)
    for path in work.iterdir():
        if path.name == "state" and path.is_dir():
            for inner in path.iterdir():
                if inner.name != "cache":
                    shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_lesson(
    seconds: float,
    work: Path | None = None,
    *,
    students: int = 50,
    question_every_s: float = 8.0,
    sample_every_s: float = 5.0,
    camera: Path | None = None,
    log: Any = print,
) -> LessonRun:
    """Run the scenario for ``seconds`` of load; raises RuntimeError when the daemon cannot start."""
    from edge_agent.config import MqttSettings
    from edge_agent.sync.receiver import Receiver

    work = Path(work or tempfile.mkdtemp(prefix="lesson-"))
    fresh_work_dir(work)
    port, metrics_port = _free_port(), _free_port()
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    broker = LocalBroker(work)
    broker.start()
    receiver = Receiver(
        work / "cloud-receiver.db", MqttSettings(host="127.0.0.1", port=broker.port, tls=False)
    )
    receiver.start()
    run = LessonRun(seconds=seconds, students=students)
    t_start = time.monotonic()
    with (work / "daemon.log").open("wb") as daemon_log:
        daemon = _child(
            "serve",
            "--state-dir",
            str(work / "state"),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--camera",
            str(camera or SHARED / "data" / "faces"),
            "--broker-port",
            str(broker.port),
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
        )
    load: subprocess.Popen[bytes] | None = None
    try:
        mastery = base + "/api/v1/class/mastery"
        _wait_until(lambda: _http_get(mastery)[0] == 200, STARTUP_S, "knowledge tracing", daemon)
        first_frame = "the first analysed frame"
        _wait_until(lambda: (_sample(daemon.pid, metrics_url)[3] or 0) > 0, STARTUP_S, first_frame, daemon)
        run.startup_s = time.monotonic() - t_start
        run.engines = engines_up(_scrape(metrics_url))
        log(f"lesson: daemon pid {daemon.pid} ready in {run.startup_s:.1f} s; {students} students")
        result = work / "load.json"
        load = _child(
            "load",
            "--url",
            base + "/api/v1/answers",
            "--seconds",
            str(seconds),
            "--students",
            str(students),
            "--every",
            str(question_every_s),
            "--result",
            str(result),
        )
        _drive(run, daemon, load, metrics_url, sample_every_s=sample_every_s, log=log)
        run.answers = [
            (float(t), float(lat), int(code), str(st)) for t, lat, code, st in json.loads(result.read_text())
        ]
        time.sleep(2.0)  # the last attention window reaches the receiver
    finally:
        run.daemon_exit = _stop(daemon, load)
        time.sleep(1.0)
        run.receiver = receiver.report(DEVICE_ID)
        receiver.stop()
        broker.stop()
    run.sync_lags_s = _sync_lags(work / "cloud-receiver.db")
    return run


# -- the child processes ------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """The daemon on the demo configuration (what `edge-agent demo` runs, without its classroom)."""
    from edge_agent.assembly import build
    from edge_agent.logs import configure_logging

    config = demo_config(
        Path(args.state_dir),
        port=args.port,
        metrics_port=args.metrics_port,
        camera=args.camera,
        broker_port=args.broker_port,
    )
    configure_logging("WARNING", config.logging.format)
    return asyncio.run(build(config).daemon.run())


def load(args: argparse.Namespace) -> int:
    """Open-loop classroom: each question, every student answers at a random moment within ~3 s."""
    import aiohttp

    from edge_agent.kt.package import load_package

    package = load_package()
    rng = np.random.default_rng(11)
    ability = rng.normal(0.0, 1.0, args.students)
    by_skill: dict[str, list[Any]] = {}
    for item in package.items:
        by_skill.setdefault(item.skill_id, []).append(item)
    skills = list(by_skill)
    records: list[tuple[float, float, int, str]] = []

    async def answer(session: aiohttp.ClientSession, at: float, body: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        body["answered_at"] = time.time()
        sent, t0 = time.time(), time.perf_counter()
        try:
            async with session.post(args.url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                reply = await resp.json(content_type=None)
                status = str(reply.get("status", "")) if isinstance(reply, dict) else ""
                records.append((sent, time.perf_counter() - t0, resp.status, status))
        except asyncio.TimeoutError:  # told apart from a refused connection in the report
            records.append((sent, time.perf_counter() - t0, 0, "timeout"))
        except (aiohttp.ClientError, ValueError):
            records.append((sent, time.perf_counter() - t0, 0, "error"))

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=args.students)
        async with aiohttp.ClientSession(connector=connector) as session:
            start, tasks, q = time.monotonic(), [], 0
            while (at := start + q * args.every) < start + args.seconds:
                items = by_skill[skills[(q * 7) % len(skills)]]
                for s in range(args.students):
                    item = items[int(rng.integers(len(items)))]
                    correct = bool(rng.random() < 1 / (1 + np.exp(item.difficulty - ability[s] - 0.05 * q)))
                    body = {
                        "student_id": f"lesson-student-{s:02d}",
                        "item_id": item.id,
                        "correct": correct,
                        "client_event_id": f"lesson-{q}-{s}",
                    }
                    tasks.append(asyncio.create_task(answer(session, at + 0.2 + 2.8 * rng.random(), body)))
                q += 1
                await asyncio.sleep(max(0.0, at + args.every - time.monotonic()))
            await asyncio.gather(*tasks)

    asyncio.run(main())
    Path(args.result).write_text(json.dumps(records))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--state-dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--metrics-port", type=int, required=True)
    s.add_argument("--camera", required=True)
    s.add_argument("--broker-port", type=int, required=True)
    g = sub.add_parser("load")
    g.add_argument("--url", required=True)
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--students", type=int, default=50)
    g.add_argument("--every", type=float, default=8.0)
    g.add_argument("--result", required=True)
    r = sub.add_parser("run", help="run the scenario and print its figures")
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument(
        "--soak", action="store_true", help="also print the soak summary (per minute, slope, drift)"
    )
    r.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args)
    if args.mode == "load":
        return load(args)
    args.out.mkdir(parents=True, exist_ok=True)
    run = run_lesson(args.seconds, args.out / ("soak-work" if args.soak else "lesson-work"))
    figures = soak_summary(run) if args.soak else summarize(run)
    name = "soak" if args.soak else "lesson"
    (args.out / f"{name}-raw.json").write_text(json.dumps(asdict(run)))
    (args.out / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Knowledge-tracing benchmark: one run, printing medians, p99s and ratios.

1. step inference at batch 1 on ONNX Runtime CPU (Engine.infer, i.e. with the input checks), back to back
   and at a lesson's pace (a call every 20 ms, when the CPU's caches no longer hold the model);
2. answer-to-feedback over HTTP on loopback at a paced 200 answers/s (p50/p99);
3. sustained answers/s through the service (micro-batching, real SQLite persistence);
4. the usual deployment side by side: PyTorch eager re-running each student's last 10 answers per new
   answer (one thread), its per-answer latency and answers/s;
5. the same service (validation, pseudonyms, micro-batching, SQLite persistence, recommendations) with that
   eager model in place of the step engine (:class:`EagerWindowEngine`), in-process and over HTTP, so the
   ratio isolates the model choice; with each side's per-answer time inside and outside the model, which
   bounds the end-to-end ratio any model could give (Amdahl).

Each comparison alternates its sides in short rounds (which side goes first alternating too) and reports
the median of the rounds' ratios with their 10th-90th percentile (``*_ratio_p10`` / ``*_ratio_p90``).

Usage: .venv/bin/python benchmarks/bench_kt.py [--quick]   (needs the train extra for part 4)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.config import KTSettings, StoreSettings
from edge_agent.inference.bench import time_calls
from edge_agent.inference.engine import Engine, TensorSpec
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.kt.answers import Answer
from edge_agent.kt.component import SAVE_LESSON_EVERY_S, save_records
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.persistence import StatePersistence
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService
from edge_agent.store.db import Database

WAIT_MS = [2.0]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _step_feeds(package: KTPackage, batch: int) -> dict[str, np.ndarray]:
    return {
        "skill": np.arange(batch, dtype=np.int64) % len(package.skills),
        "correct": np.arange(batch, dtype=np.int64) % 2,
        "h": np.zeros((batch, package.hidden), np.float32),
        "c": np.zeros((batch, package.hidden), np.float32),
    }


def _eager_window10(package: KTPackage) -> tuple[Callable[[], object], Callable[[], object]] | None:
    """The usual deployment's model call at batch 1 and at batch 64 (64 students' windows in one call):
    PyTorch eager re-running the last 10 answers and the new one. None without torch. Call them inside
    ``torch.inference_mode()`` (entered once by the caller, as the earlier baseline did: entering it per
    call cost 5 % more, 155 against 147 µs)."""
    try:
        import torch

        from edge_agent.kt.model import DKT
    except ImportError:
        return None
    torch.set_num_threads(1)
    model = DKT(len(package.skills), package.hidden, 32).eval()  # same shapes; weights do not change speed
    rng = np.random.default_rng(0)
    one, many = (
        [torch.from_numpy(rng.integers(0, high, size=(batch, 11))) for high in (len(package.skills), 2)]
        for batch in (1, 64)
    )
    return (lambda: model(*one)[:, -1]), (lambda: model(*many)[:, -1])


def bench_models(package: KTPackage, scale: float, rounds: int = 20) -> dict[str, float]:
    """The step engine (Engine.infer, with its input checks) and the eager window-10 baseline, alternated
    in short rounds so that both see the same machine, which side goes first changing from round to round:
    each round gives a ratio, and the ratios reported are the medians over the rounds. (Timed one after
    the other, 40 s apart, two runs of 2026-12-02 gave batch-1 ratios of 7.2x and 12.0x.)"""
    engine = OnnxRuntimeEngine(package.step_model)
    one, many = _step_feeds(package, 1), _step_feeds(package, 64)
    sides: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "step": ((lambda: engine.infer(one)), (lambda: engine.infer(many)))
    }
    eager = _eager_window10(package)
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if eager is not None:
        import torch

        sides["torch"] = eager
        context = torch.inference_mode()
    calls = {
        "step": {"b1": max(20, int(5000 * scale) // rounds), "b64": max(5, int(500 * scale) // rounds)},
        "torch": {"b1": max(10, int(2000 * scale) // rounds), "b64": max(2, int(200 * scale) // rounds)},
    }
    b1_times: dict[str, list[float]] = {side: [] for side in sides}
    rates: dict[str, list[float]] = {f"{side}_{key}": [] for side in sides for key in ("b1", "b64")}
    with context:
        for pair in sides.values():
            for call in pair:
                time_calls(call, 0, warmup=50)
        for n in range(rounds):
            order = list(sides) if n % 2 == 0 else list(reversed(sides))
            for i, (key, batch) in enumerate((("b1", 1), ("b64", 64))):
                for side in order:
                    # one untimed call: the first after the other model ran is cold (118-222 against 17.6 µs)
                    times = time_calls(sides[side][i], calls[side][key], warmup=1)
                    rates[f"{side}_{key}"].append(batch * len(times) / sum(times))
                    if batch == 1:
                        b1_times[side] += times
        paced = bench_paced({side: pair[0] for side, pair in sides.items()}, max(10, int(50 * scale)))
        paced |= bench_paced({"floor": _cold_floor()}, max(10, int(50 * scale)), rounds=1)
    out = paced | {
        "step_b1_median_ms": pct(b1_times["step"], 50) * 1e3,
        "step_b1_p99_ms": pct(b1_times["step"], 99) * 1e3,
        "step_b1_answers_per_s": float(np.median(rates["step_b1"])),
        "step_b64_answers_per_s": float(np.median(rates["step_b64"])),
        "model_rounds": float(rounds),
    }
    if eager is None:
        return out
    ratio = {key: np.divide(rates[f"step_{key}"], rates[f"torch_{key}"]) for key in ("b1", "b64")}
    return out | {
        "torch_window10_median_ms": pct(b1_times["torch"], 50) * 1e3,
        "torch_window10_p99_ms": pct(b1_times["torch"], 99) * 1e3,
        "torch_answers_per_s": float(np.median(rates["torch_b1"])),
        "torch_b64_answers_per_s": float(np.median(rates["torch_b64"])),
    } | {  # with the spread of the rounds' ratios, so a reader sees how far the verdict could move
        name: value
        for key, values in ratio.items()
        for name, value in _spread_of(f"model_{key}_ratio", list(values)).items()
    }


PACE_S = 0.02  # a lesson's pace: the lesson scenario's answers came a median 40 ms apart (2026-12-06)


def _cold_floor() -> Callable[[], object]:
    """Not a model: one 64x256 matmul and a tanh (about 6 µs back to back), to tell at a lesson's pace
    how much of a model's time is the machine waking up (143 µs after 20 ms idle on the AMD VM)."""
    h, w = np.ones((1, 64), np.float32), np.ones((64, 256), np.float32)
    return lambda: np.tanh(h @ w)


def bench_paced(
    sides: Mapping[str, Callable[[], object]], calls: int, rounds: int = 4, pace_s: float = PACE_S
) -> dict[str, float]:
    """Each side's call at batch 1 after ``pace_s`` idle, as answers come in a classroom: its code and
    weights are no longer in the CPU's caches then (the AMD VM, 2026-12-06: the step took 12 µs back to
    back, 138 µs after 4 ms idle, 265 after 20 ms; eager window-10 150, 557 and 1,008 µs). Alternated
    rounds of ``calls`` calls; medians in µs, the ratio the median of the rounds' ratios."""
    times: dict[str, list[list[float]]] = {side: [] for side in sides}
    for n in range(rounds):
        for side in list(sides) if n % 2 == 0 else list(reversed(list(sides))):
            call, taken = sides[side], []
            for _ in range(calls):
                time.sleep(pace_s)
                t0 = time.perf_counter()
                call()
                taken.append(time.perf_counter() - t0)
            times[side].append(taken)
    out = {f"{side}_paced_median_us": pct([t for r in rounds_ for t in r], 50) * 1e6
           for side, rounds_ in times.items()}
    if "torch" in times:
        out |= _spread_of("model_paced_ratio", [float(np.median(t) / np.median(s))
                                                for s, t in zip(times["step"], times["torch"], strict=True)])
    return out


def _answers(package: KTPackage, pseudo: Pseudonymizer, count: int, students: int) -> list[Answer]:
    rng = np.random.default_rng(0)
    out = []
    for n in range(count):
        item = package.items[int(rng.integers(0, len(package.items)))]
        s = f"s{n % students}"
        out.append(
            Answer(
                pseudo(s),
                pseudo(f"e{n}"),
                f"e{n}",
                item.id,
                (package.skill_index[item.skill_id],),
                int(rng.integers(0, 2)),
                time.time(),
            )
        )
    return out


class EagerWindowEngine:
    """The usual deployment as an Engine: PyTorch eager re-running the student's last ``window`` answers.

    KTService keeps an opaque per-student state (h, c) and passes it back with the student's next answer.
    This engine keeps the last answers in h (skills, then correct flags, then their count) instead of an
    LSTM state, so the very same service runs on it: only the model differs. One eager forward per
    answer, as that deployment does (its windows differ in length per student).
    """

    backend = "pytorch-eager"
    precision = "fp32"
    model_name = "kt-eager-window10"

    def __init__(self, package: KTPackage, window: int = 10) -> None:
        import torch

        from edge_agent.kt.model import DKT

        if package.hidden < 2 * window + 1:
            raise ValueError(f"hidden size {package.hidden} cannot hold a window of {window} answers")
        torch.set_num_threads(1)
        self._torch = torch
        self._model = DKT(len(package.skills), package.hidden, 32).eval()  # same shapes as _eager_window10
        self._window = window
        self._skills = len(package.skills)
        state = TensorSpec("h", np.dtype(np.float32), (-1, package.hidden))
        self.inputs = [
            TensorSpec("skill", np.dtype(np.int64), (-1,)),
            TensorSpec("correct", np.dtype(np.int64), (-1,)),
            state,
            TensorSpec("c", state.dtype, state.shape),
        ]
        self.outputs = [
            TensorSpec("probs", np.dtype(np.float32), (-1, self._skills)),
            TensorSpec("h_out", state.dtype, state.shape),
            TensorSpec("c_out", state.dtype, state.shape),
        ]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, n = self._torch, self._window
        h = feeds["h"]
        probs = np.empty((len(feeds["skill"]), self._skills), np.float32)
        h_out = np.zeros_like(h)
        with torch.inference_mode():
            for i, (skill, correct) in enumerate(zip(feeds["skill"], feeds["correct"], strict=True)):
                count = int(h[i, 2 * n])
                skills = np.append(h[i, :count].astype(np.int64), skill)
                flags = np.append(h[i, n : n + count].astype(np.int64), correct)
                out = self._model(torch.from_numpy(skills[None]), torch.from_numpy(flags[None]))
                probs[i] = out[0, -1].numpy()
                keep = min(n, skills.size)
                h_out[i, :keep], h_out[i, n : n + keep] = skills[-keep:], flags[-keep:]
                h_out[i, 2 * n] = keep
        return {"probs": probs, "h_out": h_out, "c_out": feeds["c"]}

    def close(self) -> None:
        pass


class _TimedEngine:
    """Any engine, counting the time spent inside it (the service's only model call)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model_name, self.backend, self.precision = inner.model_name, inner.backend, inner.precision
        self.inputs, self.outputs = inner.inputs, inner.outputs
        self.seconds = 0.0
        self.rows = 0

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self.inner.infer(feeds)
        finally:
            self.seconds += time.perf_counter() - t0
            self.rows += len(feeds["skill"])

    def close(self) -> None:
        self.inner.close()


def bench_sustained(
    package: KTPackage, db_dir: Path, count: int, engine: Engine | None = None, prefix: str = "service"
) -> dict[str, float]:
    """Answers/s through the service, and per answer the microseconds inside and outside the model."""
    pseudo = Pseudonymizer(os.urandom(32))
    db = Database(db_dir / f"{prefix}.db", StoreSettings())
    db.open()
    timed = _TimedEngine(engine or OnnxRuntimeEngine(package.step_model))
    svc = KTService(
        package,
        timed,
        KTSettings(queue_max=4096, microbatch_wait_ms=WAIT_MS[0]),
        pseudo,
        persistence=StatePersistence(db),
    )
    svc.start()
    answers = _answers(package, pseudo, count, students=400)
    window = threading.Semaphore(2000)  # keep below queue_max: a well-behaved client fleet
    t0 = time.perf_counter()
    futures = []
    for a in answers:
        window.acquire()
        f = svc.submit([a])
        f.add_done_callback(lambda _f: window.release())
        futures.append(f)
    for f in futures:
        f.result(30)
    elapsed = time.perf_counter() - t0
    svc.stop()
    db.close()
    model_us = timed.seconds / max(timed.rows, 1) * 1e6
    return {
        f"{prefix}_answers_per_s": count / elapsed,
        f"{prefix}_us_per_answer": elapsed / count * 1e6,
        f"{prefix}_model_us_per_answer": model_us,
        f"{prefix}_outside_model_us_per_answer": elapsed / count * 1e6 - model_us,
    }


def _client(
    port: int, rate: float, concurrency: int, seconds: float, items: list[str]
) -> tuple[list[float], float]:
    """In its own process: open loop at ``rate`` answers/s, or closed loop with ``concurrency`` clients.
    Returns the latencies of the answers that got a 200 and the seconds from the first send to the last
    reply (a short round's rate must not carry the pool's hand-over)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/api/v1/answers"
    latencies: list[float] = []
    tag = f"{os.getpid()}-{time.time()}"
    elapsed = [0.0]

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

            async def one(n: int) -> None:
                body = {
                    "student_id": f"s{n % 300}",
                    "item_id": items[n % len(items)],
                    "correct": n % 3 != 0,
                    "answered_at": time.time(),
                    "client_event_id": f"{tag}-{n}",
                }
                t0 = time.perf_counter()
                async with session.post(
                    url, data=json.dumps(body), headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - t0)

            start = time.perf_counter()
            if rate > 0:
                tasks = []
                for n in range(int(rate * seconds)):  # send on schedule, whatever the replies do
                    delay = start + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(n)))
                await asyncio.gather(*tasks)
            else:
                counter = iter(range(10**9))

                async def worker() -> None:
                    while time.perf_counter() - start < seconds:
                        await one(next(counter))

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed[0] = time.perf_counter() - start

    asyncio.run(run())
    return latencies, elapsed[0]


class _ServerThread:
    def __init__(self, app: object) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)  # type: ignore[arg-type]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _spread_of(key: str, values: list[float]) -> dict[str, float]:
    """The median of per-round ratios, their 10th-90th percentile and how many rounds (bench_report._spread
    prints them)."""
    return {key: float(np.median(values)), f"{key}_p10": float(np.percentile(values, 10)),
            f"{key}_p90": float(np.percentile(values, 90)), f"{key}_rounds": float(len(values))}


def bench_services(
    package: KTPackage, tmp: Path, count: int, rounds: int, with_eager: bool
) -> dict[str, float]:
    """The service on the step engine and (``with_eager``) on eager window-10, in ``rounds`` alternated
    rounds of ``count // rounds`` answers each, each round in a fresh database: figures are the medians of
    the rounds, the ratio the median of the rounds' ratios. (Run once each, minutes apart, the ratio moved
    from run to run as the machine did.)"""
    sides: dict[str, Engine | None] = {"service": None}
    if with_eager:
        sides["service_eager"] = EagerWindowEngine(package)
    per_round: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    # As the daemon does and bench_http does: torch and the package leave ~186,000 long-lived objects here,
    # and a full collection (~100 ms) inside a 65-300 ms round cut that side's rate to a third (round 2:
    # the same-service ratio 2.76x with them, 3.82x frozen).
    gc.collect()
    gc.freeze()
    try:
        for n in range(rounds):
            for side in list(sides) if n % 2 == 0 else list(reversed(sides)):
                db_dir = tmp / f"service-round-{n}"
                db_dir.mkdir(parents=True, exist_ok=True)
                answers = max(200, count // rounds)
                per_round[side].append(bench_sustained(package, db_dir, answers, sides[side], side))
    finally:
        gc.unfreeze()
    out = {
        key: float(np.median([r[key] for r in per_round[side]]))
        for side in sides
        for key in per_round[side][0]
    }
    if with_eager:
        out |= _spread_of(
            "service_model_choice_ratio",
            [a["service_answers_per_s"] / b["service_eager_answers_per_s"]
             for a, b in zip(per_round["service"], per_round["service_eager"], strict=True)],
        )
    return out | {"service_rounds": float(rounds)}


def _service_app(
    package: KTPackage, db_dir: Path, engine: Engine | None, prefix: str
) -> tuple[object, Callable[[], None]]:
    """The daemon's answer API over our service, on the step engine unless ``engine`` is given."""
    from aiohttp import web

    from edge_agent.web.answers import answer_routes

    pseudo = Pseudonymizer(os.urandom(32))
    db = Database(db_dir / f"http-{prefix}.db", StoreSettings())
    db.open()
    settings = KTSettings(microbatch_wait_ms=WAIT_MS[0])
    svc = KTService(
        package,
        engine or OnnxRuntimeEngine(package.step_model),
        settings,
        pseudo,
        persistence=(persistence := StatePersistence(db)),
    )
    svc.start()
    app = web.Application()
    app.add_routes(answer_routes(svc, settings))
    # the lesson records saved every 15 s, as the daemon's KT component does: the answers each student's
    # state carries beside it until then grow without that (the rate fell by half in 60 s, 2026-12-04)
    stopping = threading.Event()

    def save_the_lesson() -> None:
        while not stopping.wait(SAVE_LESSON_EVERY_S):
            save_records(svc, persistence)

    saver = threading.Thread(target=save_the_lesson, daemon=True)
    saver.start()

    def close() -> None:
        stopping.set()
        saver.join()
        svc.stop()
        db.close()

    return app, close


def _torch_app(package: KTPackage, db_dir: Path) -> tuple[object, Callable[[], None]]:
    """The usual deployment: per answer, read the last 10 answers from SQLite, re-run the model eagerly on
    them plus the new one, store the answer. Same validation, web framework and store as ours."""
    import concurrent.futures

    import torch
    from aiohttp import web

    from edge_agent.kt.answers import parse_batch
    from edge_agent.kt.model import DKT

    torch.set_num_threads(1)
    model = DKT(len(package.skills), package.hidden, 32).eval()
    pseudo = Pseudonymizer(os.urandom(32))
    db = Database(db_dir / "torch.db", StoreSettings())
    db.open()
    db.write(
        lambda c: c.execute(
            "CREATE TABLE answers (id INTEGER PRIMARY KEY, student TEXT, skill INT, correct INT)"
        )
    ).result()
    db.write(lambda c: c.execute("CREATE INDEX answers_student ON answers(student, id)")).result()
    settings = KTSettings()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="torch")  # one model thread, as ours

    def infer(student: str, skill: int, correct: int) -> list[float]:
        rows = [
            *db.read(
                lambda c: c.execute(
                    "SELECT skill, correct FROM answers WHERE student = ? ORDER BY id DESC LIMIT 10",
                    (student,),
                ).fetchall()
            )[::-1],
            (skill, correct),
        ]
        sk = torch.tensor([[r[0] for r in rows]])
        co = torch.tensor([[r[1] for r in rows]])
        with torch.inference_mode():
            return model(sk, co)[0, -1].tolist()

    async def post(request: web.Request) -> web.Response:
        answers = parse_batch(await request.json(), package, settings, pseudo, time.time())
        a = answers[0]
        probs = await asyncio.get_running_loop().run_in_executor(
            pool, infer, a.student, a.skills[0], a.correct
        )
        await asyncio.wrap_future(
            db.write(
                lambda c: c.execute(
                    "INSERT INTO answers(student, skill, correct) VALUES (?, ?, ?)",
                    (a.student, a.skills[0], a.correct),
                )
            )
        )
        return web.json_response({"status": "applied", "p_next_correct": probs[a.skills[0]]})

    app = web.Application()
    app.router.add_post("/api/v1/answers", post)

    def close() -> None:
        pool.shutdown()
        db.close()

    return app, close


def bench_http(
    package: KTPackage, db_dir: Path, seconds: float, rounds: int, with_baselines: bool
) -> dict[str, float]:
    """The answer API over loopback: ours ("ours"), and (``with_baselines``) the usual deployment
    ("torch") and our service on eager window-10 ("eager_svc"), all serving at once.

    Each side first takes ``seconds`` at a paced 200 answers/s (p50/p99). Then 32 clients in a closed loop
    go to each side in turn for ``seconds / rounds`` per round, the order reversed every other round: the
    answers/s are the medians of the rounds, the ratios the medians of the rounds' ratios. (Run once each,
    one side after the other, the HTTP model-choice ratio came out 4.16x, 1.86x, 1.67x and 1.50-2.48x
    within 10 minutes.)"""
    import multiprocessing

    apps = {"ours": _service_app(package, db_dir, None, "ours")}
    if with_baselines:
        apps["torch"] = _torch_app(package, db_dir)
        apps["eager_svc"] = _service_app(package, db_dir, EagerWindowEngine(package), "eager_svc")
    # As the daemon does once it runs (edge_agent.heap.freeze_startup_objects), for every side: torch and
    # the earlier parts leave this process with far more long-lived objects than a daemon has, and each
    # full collection walked them all inside someone's answer (ours at 200 answers/s: p99 9.0 ms in the
    # full run against 2.2-3.4 ms alone).
    gc.collect()
    gc.freeze()
    servers = {side: _ServerThread(app) for side, (app, _) in apps.items()}
    items = [i.id for i in package.items]
    out: dict[str, float] = {"http_rounds": float(rounds)}
    rates: dict[str, list[float]] = {side: [] for side in servers}
    closed: dict[str, list[float]] = {side: [] for side in servers}
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            for side, server in servers.items():
                paced, _ = pool.apply(_client, (server.port, 200.0, 0, seconds, items))
                out |= {
                    f"{side}_http200_sent": int(200.0 * seconds),  # what _client sends at 200/s
                    f"{side}_http200_ok": len(paced),
                    f"{side}_http200_p50_ms": pct(paced, 50) * 1e3,
                    f"{side}_http200_p99_ms": pct(paced, 99) * 1e3,
                }
            for n in range(rounds):
                for side in list(servers) if n % 2 == 0 else list(reversed(servers)):
                    latencies, elapsed = pool.apply(
                        _client, (servers[side].port, 0.0, 32, seconds / rounds, items)
                    )
                    rates[side].append(len(latencies) / elapsed)
                    closed[side] += latencies
    finally:
        for server in servers.values():
            server.close()
        for _, close in apps.values():
            close()
        gc.unfreeze()
    for side in servers:
        out[f"{side}_http_sustained_answers_per_s"] = float(np.median(rates[side]))
        out[f"{side}_http_sustained_p99_ms"] = pct(closed[side], 99) * 1e3
    if with_baselines:
        for key, baseline in (("http_throughput_ratio", "torch"), ("http_model_choice_ratio", "eager_svc")):
            out |= _spread_of(key, list(np.divide(rates["ours"], rates[baseline])))
    return out


ROUNDS = 6  # alternated rounds of the service and HTTP comparisons (even: each side leads as often)


def run_parts(package: KTPackage, tmp: Path, scale: float) -> dict[str, float]:
    """Every part, in one process, side by side (PyTorch baselines only when torch is installed)."""
    results = bench_models(package, scale)
    with_torch = "torch_answers_per_s" in results
    results |= bench_services(package, tmp, int(20000 * scale), ROUNDS, with_torch)
    results |= bench_http(package, tmp, 10.0 * scale, ROUNDS, with_torch)
    if not with_torch:
        return results
    return results | ratios(results)


def ratios(r: dict[str, float]) -> dict[str, float]:
    """The ratios not measured in alternated rounds (those come from bench_models, bench_services and
    bench_http); ``service_amdahl_bound`` is the most any model could gain end to end: the eager
    service's time per answer over its time outside the model."""
    return {
        "service_vs_torch_model_only_ratio": r["service_answers_per_s"] / r["torch_answers_per_s"],
        "service_amdahl_bound": r["service_eager_us_per_answer"]
        / r["service_eager_outside_model_us_per_answer"],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller counts (CI smoke run)")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="kt.microbatch_wait_ms for the service")
    args = parser.parse_args()
    WAIT_MS[0] = args.wait_ms
    scale = 0.2 if args.quick else 1.0
    package = load_package()
    results: dict[str, float] = {"cpus": float(os.cpu_count() or 0)}
    with tempfile.TemporaryDirectory() as tmp:
        results |= run_parts(package, Path(tmp), scale)
    for key, value in results.items():
        print(f"{key:40s} {value:10.4f}")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

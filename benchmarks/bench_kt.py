"""Knowledge-tracing benchmark: one run, printing medians, p99s and ratios.

1. step inference at batch 1 on ONNX Runtime CPU (Engine.infer, i.e. with the input checks);
2. answer-to-feedback over HTTP on loopback at a paced 200 answers/s (p50/p99);
3. sustained answers/s through the service (micro-batching, real SQLite persistence);
4. the usual deployment side by side: PyTorch eager re-running each student's last 10 answers per new
   answer (one thread), its per-answer latency and answers/s.

Usage: .venv/bin/python benchmarks/bench_kt.py [--quick]   (needs the train extra for part 4)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.config import KTSettings, StoreSettings
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.kt.answers import Answer
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.persistence import StatePersistence
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService
from edge_agent.store.db import Database

WAIT_MS = [2.0]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_step(package: KTPackage, n: int) -> dict[str, float]:
    engine = OnnxRuntimeEngine(package.step_model)
    h = np.zeros((1, package.hidden), np.float32)
    feeds = {"skill": np.array([3], np.int64), "correct": np.array([1], np.int64), "h": h, "c": h.copy()}
    for _ in range(200):
        engine.infer(feeds)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        engine.infer(feeds)
        times.append(time.perf_counter() - t0)
    batch = {
        "skill": np.arange(64) % len(package.skills),
        "correct": np.arange(64) % 2,
        "h": np.zeros((64, package.hidden), np.float32),
        "c": np.zeros((64, package.hidden), np.float32),
    }
    t0 = time.perf_counter()
    for _ in range(n // 10):
        engine.infer(batch)
    per_answer = (time.perf_counter() - t0) / (n // 10 * 64)
    return {
        "step_b1_median_ms": pct(times, 50) * 1e3,
        "step_b1_p99_ms": pct(times, 99) * 1e3,
        "step_b64_answers_per_s": 1.0 / per_answer,
    }


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


def bench_sustained(package: KTPackage, db_dir: Path, count: int) -> dict[str, float]:
    pseudo = Pseudonymizer(os.urandom(32))
    db = Database(db_dir / "bench.db", StoreSettings())
    db.open()
    svc = KTService(
        package,
        OnnxRuntimeEngine(package.step_model),
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
    return {"service_answers_per_s": count / elapsed}


def _client(port: int, rate: float, concurrency: int, seconds: float, items: list[str]) -> list[float]:
    """In its own process: open loop at ``rate`` answers/s, or closed loop with ``concurrency`` clients."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/api/v1/answers"
    latencies: list[float] = []
    tag = f"{os.getpid()}-{time.time()}"

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
                return
            counter = iter(range(10**9))

            async def worker() -> None:
                while time.perf_counter() - start < seconds:
                    await one(next(counter))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())
    return latencies


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


def _measure_http(app: object, items: list[str], seconds: float, prefix: str) -> dict[str, float]:
    import multiprocessing

    server = _ServerThread(app)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        paced = pool.apply(_client, (server.port, 200.0, 0, seconds, items))
        t0 = time.perf_counter()
        closed = pool.apply(_client, (server.port, 0.0, 32, seconds, items))
        elapsed = time.perf_counter() - t0
    server.close()
    return {
        f"{prefix}_http200_ok": len(paced),
        f"{prefix}_http200_p50_ms": pct(paced, 50) * 1e3,
        f"{prefix}_http200_p99_ms": pct(paced, 99) * 1e3,
        f"{prefix}_http_sustained_answers_per_s": len(closed) / elapsed,
        f"{prefix}_http_sustained_p99_ms": pct(closed, 99) * 1e3,
    }


def bench_http(package: KTPackage, db_dir: Path, seconds: float) -> dict[str, float]:
    from aiohttp import web

    from edge_agent.web.answers import answer_routes

    pseudo = Pseudonymizer(os.urandom(32))
    db = Database(db_dir / "http.db", StoreSettings())
    db.open()
    settings = KTSettings(microbatch_wait_ms=WAIT_MS[0])
    svc = KTService(
        package, OnnxRuntimeEngine(package.step_model), settings, pseudo, persistence=StatePersistence(db)
    )
    svc.start()
    app = web.Application()
    app.add_routes(answer_routes(svc, settings))
    try:
        return _measure_http(app, [i.id for i in package.items], seconds, "ours")
    finally:
        svc.stop()
        db.close()


def bench_http_torch(package: KTPackage, db_dir: Path, seconds: float) -> dict[str, float]:
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
    try:
        return _measure_http(app, [i.id for i in package.items], seconds, "torch")
    finally:
        pool.shutdown()
        db.close()


def bench_torch(package: KTPackage, n: int) -> dict[str, float]:
    try:
        import torch

        from edge_agent.kt.model import DKT
    except ImportError:
        return {}
    torch.set_num_threads(1)
    model = DKT(len(package.skills), package.hidden, 32).eval()  # same shapes; weights do not change speed
    rng = np.random.default_rng(0)
    history = torch.from_numpy(rng.integers(0, len(package.skills), size=(1, 11)))
    correct = torch.from_numpy(rng.integers(0, 2, size=(1, 11)))
    times = []
    with torch.inference_mode():
        for _ in range(50):
            model(history, correct)
        for _ in range(n):
            t0 = time.perf_counter()
            model(history, correct)[0, -1]
            times.append(time.perf_counter() - t0)
    return {
        "torch_window10_median_ms": pct(times, 50) * 1e3,
        "torch_window10_p99_ms": pct(times, 99) * 1e3,
        "torch_answers_per_s": 1.0 / float(np.mean(times)),
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
        results |= bench_step(package, int(5000 * scale))
        results |= bench_sustained(package, Path(tmp), int(20000 * scale))
        results |= bench_http(package, Path(tmp), 10.0 * scale)
        results |= bench_torch(package, int(2000 * scale))
        if "torch_answers_per_s" in results:
            results |= bench_http_torch(package, Path(tmp), 10.0 * scale)
            results["model_throughput_ratio"] = (
                results["step_b64_answers_per_s"] / results["torch_answers_per_s"]
            )
            results["http_throughput_ratio"] = (
                results["ours_http_sustained_answers_per_s"] / results["torch_http_sustained_answers_per_s"]
            )
            results["service_vs_torch_model_only_ratio"] = (
                results["service_answers_per_s"] / results["torch_answers_per_s"]
            )
    for key, value in results.items():
        print(f"{key:40s} {value:10.4f}")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

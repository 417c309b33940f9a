"""The teacher view in headless Chromium against the FULL daemon: real models, KT, camera folder, broker.

One daemon serves the whole module (starting it costs seconds): ``build(demo_config(...))`` on its own
event loop in a thread, the simulated classroom posting answers to the real answer API, the shared face
photos as the camera, and a private Mosquitto when installed. Its web view listens on 0.0.0.0 with a
token file, as on a board, so the same daemon shows both loopback access and remote refusal.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.assembly import Assembly, build
from edge_agent.config import Config
from edge_agent.demo import LocalBroker, SimulatedClassroom, _mosquitto_available, demo_config
from edge_agent.kt.package import load_package
from edge_agent.telemetry import metrics
from edge_agent.vision.component import AttentionComponent
from tests.ports import free_port
from tests.web.harness import TeacherViewPage, non_loopback_ipv4

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
MAX_SKILL_ROWS = 8  # app.js shows this many skill rows; the rest sit in a collapsed list
PageFactory = Callable[..., TeacherViewPage]


@dataclass
class RunningDaemon:
    assembly: Assembly
    port: int
    token: str
    classroom: SimulatedClassroom

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def live(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/v1/live", timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data


def _write_secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _board_config(state_dir: Path, faces_dir: Path, port: int, broker_port: int | None) -> tuple[Config, str]:
    # A hex secret, not demo's raw random bytes: Pseudonymizer strips whitespace from the file, so a raw
    # secret that starts or ends with a whitespace byte is too short about one time in twenty.
    _write_secret(state_dir / "secrets" / "pseudonym.key", secrets.token_hex(32))
    token = secrets.token_hex(24)
    token_file = _write_secret(state_dir / "secrets" / "web.token", token + "\n")
    base = demo_config(state_dir, port=port, metrics_port=free_port(), camera=str(faces_dir),
                       broker_port=broker_port)
    data = base.model_dump()
    data["web"].update(host="0.0.0.0", token_file=token_file)  # as on a board: remote with the token
    data["camera"]["analysis_fps"] = 2.0  # enough for 15 s windows; the CI machine has two cores
    data["kt"]["lesson_gap_s"] = 1200.0  # not the default: the attention chart must take it from the config
    data["device"]["display_name"] = None  # the page must fall back to the class_id (the demo names it)
    return Config.model_validate(data), token


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, model_mirror: Path,
           monkeypatch_module: pytest.MonkeyPatch) -> Iterator[RunningDaemon]:
    monkeypatch_module.setenv("EDGE_AGENT_MODEL_MIRROR", str(model_mirror))
    state_dir = tmp_path_factory.mktemp("daemon") / "state"
    state_dir.mkdir(mode=0o700)
    broker = LocalBroker(state_dir) if _mosquitto_available() else None
    if broker is not None:
        broker.start()
    port = free_port()
    config, token = _board_config(state_dir, faces_dir, port, broker.port if broker else None)
    assembly = build(config)
    loop_box: dict[str, asyncio.AbstractEventLoop] = {}

    async def run() -> int:
        loop_box["loop"] = asyncio.get_running_loop()
        return await assembly.daemon.run()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="test-daemon", daemon=True)
    thread.start()
    classroom = SimulatedClassroom(f"http://127.0.0.1:{port}/api/v1/answers",
                                   load_package(config.kt.package_dir), students=30, question_every_s=2.0)
    try:
        _wait_for(lambda: assembly.daemon.state == "running", 30, "the daemon to start")
        classroom.start()
        running = RunningDaemon(assembly, port, token, classroom)
        _wait_for(lambda: bool((assembly.live.get("learning") or {}).get("skills")), 20,
                  "the first answers to reach knowledge tracing")
        yield running
    finally:
        classroom.stop()
        if "loop" in loop_box:
            loop_box["loop"].call_soon_threadsafe(assembly.daemon.request_stop)
        thread.join(20)
        if broker is not None:
            broker.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _pct(value: float) -> str:
    return f"{round(value * 100)}%"


def _expected_order(learning: dict[str, Any]) -> list[str]:
    """The board's skill order: weakest, then other practised skills by mastery, then the curriculum."""
    weakest = learning["weakest"]
    skills = list(enumerate(learning["skills"]))
    first = [s["id"] for w in weakest for _, s in skills if s["id"] == w]
    practised = sorted(((2 if s["assessed_mean"] is None else s["assessed_mean"], i, s["id"])
                        for i, s in skills if s["students"] > 0 and s["id"] not in weakest))
    rest = [s["id"] for _, s in skills if s["students"] == 0 and s["id"] not in weakest]
    return first + [sid for _, _, sid in practised] + rest


def _rows_shown(learning: dict[str, Any]) -> int:
    """The skill rows app.js lists: those practised this lesson, at most MAX_SKILL_ROWS; the skills not
    practised fold into one line (with none practised yet, the first MAX_SKILL_ROWS)."""
    practised = sum(1 for s in learning["skills"] if s["students"] > 0 or s["id"] in learning["weakest"])
    return min(practised, MAX_SKILL_ROWS) if practised else MAX_SKILL_ROWS


def _dom(view: TeacherViewPage) -> dict[str, Any]:
    return dict(view.page.evaluate("""() => {
        const text = (id) => document.getElementById(id).textContent.trim();
        const rows = (sel) => [...document.querySelectorAll(sel)];
        return {
          answers: text('learn-answers'), students: text('learn-students'),
          skills: rows('#learn-skills li').map((li) => ({id: li.dataset.skill, text: li.textContent})),
          more: rows('#learn-skills-more li').map((li) => li.dataset.skill),
          more_hidden: document.getElementById('learn-more').hidden, summary: text('learn-more-summary'),
          weakest: rows('#learn-weakest li').length, recommended: rows('#learn-recommended li').length,
          engines: rows('#health-engines tr').map((tr) => ({text: tr.innerText,
            reason: ((tr.querySelector('td.fallback details span') || {}).textContent) || ''})),
          sync: text('health-sync'), faces: text('att-faces'),
          bars: rows('#att-timeline rect:not(.hatch)').length,
          device: document.getElementById('health-device').hidden || !text('health-device')
            ? text('health-device-note') : text('health-device'),
        };
    }"""))


def _mismatches(dom: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """What the page shows differently from the daemon's own /api/v1/live (empty when they agree)."""
    learning, sections = live["sections"]["learning"], live["sections"]
    if learning["suppressed"] or not learning["skills"]:
        return ["a new lesson window has too few answers yet"]  # the demo's lessons last 60 s
    wrong = []
    if dom["answers"] != f"{learning['answers']:,}" or dom["students"] != str(learning["students"]):
        wrong.append(f"answers/students {dom['answers']}/{dom['students']} vs {learning['answers']}")
    order, shown = _expected_order(learning), [row["id"] for row in dom["skills"]]
    rows = _rows_shown(learning)
    if shown != order[:rows] or dom["more"] != order[rows:]:
        wrong.append(f"skill order {shown} vs {order[:rows]}")
    by_id = {s["id"]: s for s in learning["skills"]}
    for row in dom["skills"]:
        skill = by_id.get(row["id"])
        if skill is None:
            continue
        practised = f"本节课 {skill['students']} 人练习" if skill["students"] else "本节课未练习"
        mean = skill["assessed_mean"]
        below = (f"{skill['assessed']} 人中 {skill['assessed_below_threshold']} 人未掌握" if mean is not None
                 else f"{skill['assessed']} 人答过" if skill["assessed"] else "还没有人答过")
        if not all(part in row["text"] for part in ("—" if mean is None else _pct(mean), practised, below)):
            wrong.append(f"row {row['text']!r} vs {skill}")
    if dom["weakest"] != len(learning["weakest"]) or dom["recommended"] != len(learning["recommended"]):
        wrong.append("weakest/recommended counts")
    attention = sections["attention"]
    if dom["bars"] != len(attention["timeline"]) or f"{attention['faces']} 张人脸" not in dom["faces"]:
        wrong.append(f"attention {dom['bars']} bars, {dom['faces']!r} vs {attention['faces']} faces")
    return wrong


def test_page_matches_the_running_daemon_and_fits_one_screen(daemon: RunningDaemon,
                                                            teacher_page: PageFactory) -> None:
    view = teacher_page(daemon.url)
    view.open()
    entry = "performance.getEntriesByName('first-contentful-paint')[0]"
    view.page.wait_for_function(f"() => !!{entry}", timeout=5000)  # recorded shortly after 'load'
    # Printed only: the browser shares the CPU with this busy daemon here (1,088 ms once with both test
    # runs on one core); the 1 s target is asserted against a quiet server in test_teacher_view_browser.
    print(f"first contentful paint: {view.page.evaluate(f'() => {entry}.startTime'):.0f} ms")
    view.wait_live()
    # no device.display_name: the page names the class by its device.class_id (a review: two boards in
    # two tabs looked the same)
    class_id = daemon.assembly.config.device.class_id
    assert view.page.title() == f"{class_id} · 课堂实时视图" and view.text("#board-name") == class_id
    # The daemon changes every second (answers, camera frames): compare until one reading agrees.
    deadline, wrong = time.monotonic() + 12, ["not compared"]
    while wrong and time.monotonic() < deadline:
        live = daemon.live()
        wrong = _mismatches(_dom(view), live)
        if wrong:
            time.sleep(0.2)
    assert wrong == [], wrong
    learning = live["sections"]["learning"]
    dom = _dom(view)
    rows = _rows_shown(learning)
    assert len(learning["skills"]) == 30 and len(dom["skills"]) == rows
    assert dom["more_hidden"] is False and dom["summary"].startswith(f"其余 {30 - rows} 个知识点")
    engines = live["sections"]["health"]["engines"]
    assert len(dom["engines"]) == len(engines)
    for row, engine in zip(dom["engines"], engines, strict=True):
        if engine["fallback"]:
            assert len(row["text"]) < 60, row  # a short phrase on the board ...
            assert row["reason"] == engine["fallback"]  # ... the whole reason for IT folded under it
    sync = live["sections"]["sync"]
    if sync["connected"]:
        assert dom["sync"].startswith("已连接") and f"{sync['backlog']} 条待发送" in dom["sync"]
    if live["sections"]["device"]["source"] == "none":
        assert dom["device"] == "此班牌未提供硬件读数"
    size = view.page.evaluate("() => [document.documentElement.scrollHeight, window.innerHeight, "
                              "document.getElementById('health').getBoundingClientRect().bottom]")
    assert size[0] <= size[1] and size[2] <= 1080, f"page scrolls at 1920x1080: {size}"
    assert view.console_errors == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.page.screenshot(path=str(SCREENSHOTS / "daemon-zh-1920x1080.png"))
    view.page.click("#learn-more-summary")
    assert view.page.locator("#learn-skills-more li").first.is_visible()
    size = view.page.evaluate("() => [document.documentElement.scrollHeight, window.innerHeight]")
    assert size[0] <= size[1], f"opening the other skills made the page scroll: {size}"
    view.page.screenshot(path=str(SCREENSHOTS / "daemon-zh-more-skills-1920x1080.png"))


def test_the_attention_chart_starts_again_after_the_configured_lesson_gap(daemon: RunningDaemon) -> None:
    # The chart's break came from the component's own default (600 s), whatever kt.lesson_gap_s said
    attention = daemon.assembly.attention
    assert attention is not None and isinstance(attention.inner, AttentionComponent)
    assert attention.inner.lesson_gap_s == 1200.0


def test_answer_reaches_the_page_within_a_second_of_the_board(daemon: RunningDaemon,
                                                              teacher_page: PageFactory) -> None:
    view = teacher_page(daemon.url)
    view.open()
    view.wait_live()
    # Record when the page's count changes (page clock) and when the daemon's board changes (our clock);
    # both are this machine's wall clock.
    view.page.evaluate("""() => { window.__seen = [];
        const node = document.getElementById('learn-answers');
        new MutationObserver(() => window.__seen.push([node.textContent, Date.now() / 1000]))
          .observe(node, {childList: true, characterData: true, subtree: true}); }""")
    live = daemon.assembly.live
    before = live.get("learning")["answers"]
    board_changed: dict[int, float] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(board_changed) < 3:
        answers = live.get("learning")["answers"]
        if answers != before and answers not in board_changed:
            board_changed[answers] = time.time()
        time.sleep(0.002)
    assert board_changed, "the simulated classroom posted no answer within 15 s"
    time.sleep(1.0)
    seen: dict[str, float] = {}
    for text, at in view.page.evaluate("window.__seen"):
        seen.setdefault(text, at)  # the view re-renders every second; the first showing is what counts
    delays = {n: seen[f"{n:,}"] - at for n, at in board_changed.items() if f"{n:,}" in seen}
    print("board-to-page delays (s):", {n: round(d, 3) for n, d in delays.items()})
    assert delays, f"the page never showed {sorted(board_changed)}; it showed {sorted(seen)}"
    assert max(delays.values()) < 1.0


def test_the_demo_classroom_run_again_on_the_same_state_is_applied_not_taken_for_duplicates(
        daemon: RunningDaemon) -> None:
    # Same seed, so the same students answer the same first question as the classroom already running.
    again = SimulatedClassroom(daemon.classroom.url, daemon.classroom.package, students=5,
                               question_every_s=60.0)
    again.start()
    try:
        _wait_for(lambda: again.sent >= 5, 15, "the second classroom's first question")
    finally:
        again.stop()
    assert again.applied == again.sent >= 5


def test_language_switch_renders_the_daemon_data_in_english(daemon: RunningDaemon,
                                                            teacher_page: PageFactory) -> None:
    view = teacher_page(daemon.url)
    view.open()
    view.wait_live()
    view.switch_language()
    assert view.text("#learning-h") == "Class mastery"
    rows = view.text("#learn-skills")
    assert "practised this lesson" in rows and "below mastery" in rows
    assert "more skills" in view.text("#learn-more-summary")
    assert "本节课" not in view.text("#learning") + view.text("#health")
    engines = daemon.live()["sections"]["health"]["engines"]
    if any((e["fallback"] or "").startswith("TensorRT unavailable") for e in engines):
        assert "TensorRT unavailable" in view.text("#health-engines")
    size = view.page.evaluate("() => [document.documentElement.scrollHeight, window.innerHeight]")
    assert size[0] <= size[1], f"the English page scrolls at 1920x1080: {size}"
    assert view.console_errors == []
    view.page.screenshot(path=str(SCREENSHOTS / "daemon-en-1920x1080.png"))


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_remote_request_needs_the_token_file_token(daemon: RunningDaemon) -> None:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to arrive from")
    remote = f"http://{address}:{daemon.port}"
    assert _status(daemon.url + "/api/v1/live") == 200  # loopback: the board's own screen
    assert _status(remote + "/api/v1/live") == 401
    assert _status(remote + "/api/v1/live", {"Authorization": "Bearer " + "0" * 48}) == 401
    assert _status(remote + "/", {"Accept": "text/html"}) == 401  # the sign-in form, not the page
    assert _status(remote + "/api/v1/live", {"Authorization": "Bearer " + daemon.token}) == 200


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return int(exc.code), json.loads(raw) if raw.startswith(b"{") else {"error": raw.decode()}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b'{"minutes": 45}', "text/plain", 415, "application/json"),  # a cross-site form cannot send it
        (b"{minutes: 45}", "application/json", 400, "not valid JSON"),
        (b'{"minutes": 0}', "application/json", 400, "from 1 to 240"),
        (b'{"minutes": 241}', "application/json", 400, "camera.closed_dates"),
        (b'{"minutes": "45"}', "application/json", 400, "whole number"),
        (b'{"minutes": true}', "application/json", 400, "whole number"),
        (b'{"minutes": 4.5}', "application/json", 400, "whole number"),
        (b"[45]", "application/json", 400, "whole number"),
    ],
)
def test_a_malformed_camera_pause_is_refused_and_changes_nothing(
    daemon: RunningDaemon, body: bytes, content_type: str, status: int, says: str
) -> None:
    got, reply = _post(daemon.url + "/api/v1/camera/pause", body, content_type)
    assert got == status and says in reply["error"], reply
    assert daemon.live()["sections"]["attention"]["camera"]["state"] != "paused"


def test_a_web_page_cannot_reopen_a_camera_the_teacher_paused(daemon: RunningDaemon) -> None:
    def camera_state() -> str:
        return str(daemon.live()["sections"]["attention"]["camera"]["state"])

    assert _post(daemon.url + "/api/v1/camera/pause", b'{"minutes": 45}')[0] == 200
    _wait_for(lambda: camera_state() == "paused", 10, "the pause")
    # What any page in the board's browser can send to loopback without a preflight: a plain form post
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        got, reply = _post(daemon.url + "/api/v1/camera/resume", b"", content_type)
        assert got == 415 and "application/json" in reply["error"], reply
    time.sleep(1.0)
    assert camera_state() == "paused"
    assert _post(daemon.url + "/api/v1/camera/resume", b"{}")[0] == 200
    _wait_for(lambda: camera_state() == "running", 15, "the resume")


def test_the_teacher_pauses_the_camera_for_the_lesson_and_resumes_it(
    daemon: RunningDaemon, teacher_page: PageFactory
) -> None:
    address = non_loopback_ipv4()
    if address is not None:  # from another computer: the teacher's token, as for the view itself
        remote = f"http://{address}:{daemon.port}/api/v1/camera/pause"
        assert _post(remote, b'{"minutes": 45}')[0] == 401
    view = teacher_page(daemon.url)  # the board's own screen
    view.open()
    view.wait_live()
    button = view.page.locator("#cam-pause")
    button.wait_for(state="visible", timeout=15000)
    assert view.text("#cam-pause") == "本节课暂停摄像头（45 分钟）"
    def camera_state() -> str:
        return str(daemon.live()["sections"]["attention"]["camera"]["state"])

    button.focus()
    view.page.keyboard.press("Enter")  # by keyboard: it keeps the focus (a review: it fell to the page)
    _wait_for(lambda: camera_state() == "paused", 10, "the pause")
    signal = "() => document.getElementById('att-signal').textContent.includes('老师暂停')"
    view.page.wait_for_function(signal, timeout=5000)
    status = json.loads(urllib.request.urlopen(daemon.url + "/api/v1/status", timeout=5).read())
    attention = next(c for c in status["components"] if c["name"] == "attention")
    assert attention["ok"] and "camera closed: paused by the teacher" in attention["detail"], attention
    analysed = metrics.sample("edge_camera_frames_analysed_total")
    time.sleep(1.5)  # 3 frames' time at 2 frames/s: none read
    assert metrics.sample("edge_camera_frames_analysed_total") == analysed
    assert view.text("#att-share") == "—" and "班牌状态" in view.text("#health")
    assert "摄像头" not in view.text("#health-issues")  # a teacher's choice, not a problem for IT
    pause_file = daemon.assembly.config.paths.state_dir / "camera-pause"
    assert pause_file.read_text()  # kept across a restart
    view.page.wait_for_function("() => document.getElementById('cam-pause').textContent === '恢复摄像头'",
                                timeout=5000)
    view.page.screenshot(path=str(SCREENSHOTS / "daemon-zh-camera-paused-1920x1080.png"))
    assert view.page.evaluate("document.activeElement.id") == "cam-pause"
    view.page.keyboard.press("Enter")
    _wait_for(lambda: camera_state() == "running", 15, "the resume")
    assert view.page.evaluate("document.activeElement.id") == "cam-pause"
    assert view.console_errors == []

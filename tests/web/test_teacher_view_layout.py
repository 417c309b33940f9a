"""The teacher view's layout under long names and no data, measured in real headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from edge_agent.live import LiveBoard
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, TeacherViewPage
from tests.web.sample import health_section, learning_section, sync_section

pytestmark = pytest.mark.browser

PageFactory = Callable[..., TeacherViewPage]

# Real lengths from a school's curriculum: about 25 characters, two lines at 1080p
LONG_NAMES = ["二元一次方程组的解法及其在实际问题中的应用", "全等三角形的判定定理与尺规作图综合练习",
              "一元二次方程根的判别式与根与系数的关系", "平面直角坐标系中的图形变换与坐标表示",
              "分式方程的解法及增根问题的检验与讨论", "反比例函数的图像性质及其与一次函数的综合"]
CLASS_32 = "北京市海淀区中关村第一实验学校初中部二〇二六级（12）班一二三四"


def _long_learning() -> dict[str, object]:
    section = learning_section()
    skills = [{"id": f"s{i}", "name_zh": f"{LONG_NAMES[i % 6]}（第{i + 1}单元）",
               "name_en": f"solving systems of two linear equations and their applications, unit {i + 1}",
               "mastery_mean": 0.3 + i / 100, "students": 118 + i, "below_threshold": 100, "assessed": 120,
               "assessed_mean": 0.31 + i / 60, "assessed_below_threshold": 117 - i} for i in range(8)]
    recommended = [{"item_id": f"it{i}", "skill_id": f"s{i}",
                    "title_zh": f"{LONG_NAMES[i]}·课堂检测（提高篇）", "title_en": f"varied practice {i}",
                    "predicted_success": 0.41} for i in range(3)]
    section.update(skills=skills, weakest=["s0", "s1", "s2"], recommended=recommended, answers=12345,
                   students=120)
    return section


@pytest.fixture()
def serve() -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def start(board: LiveBoard, board_name: str = "") -> ServerThread:
        servers.append(ServerThread(board, token=WEB_TOKEN, board_name=board_name).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_eight_long_skill_names_fit_the_learning_card_on_a_1080p_board(
        live_board: LiveBoard, serve: Callable[..., ServerThread], teacher_page: PageFactory) -> None:
    live_board.publish("learning", _long_learning())
    view = teacher_page(serve(live_board).url, width=1920, height=1080)
    view.open()
    view.wait_live()
    assert view.page.locator("#learn-skills li").count() == 8
    # the card scrolled inside itself: 6 rows and no answers-per-minute chart seen from across the room
    height = view.page.evaluate("() => { const l = document.getElementById('learning');"
                                " return [l.scrollHeight, l.clientHeight]; }")
    assert height[0] <= height[1], f"#learning scrollHeight {height[0]} > clientHeight {height[1]}"
    # a name is cut at two lines, whole in its title
    name = view.page.locator("#learn-skills .skill-name").first
    assert name.get_attribute("title") == f"{LONG_NAMES[0]}（第1单元）"
    assert view.console_errors == []


def test_mastery_labels_are_at_least_14_px_on_a_1080p_board(
        live_board: LiveBoard, serve: Callable[..., ServerThread], teacher_page: PageFactory) -> None:
    view = teacher_page(serve(live_board).url, width=1920, height=1080)
    view.open()
    view.wait_live()
    # "最薄弱" / "未掌握" are the only marks besides colour: 12 px could not be read from the back
    sizes = view.page.evaluate("() => ['.badge', '.badge-below', '.skill-meta'].map((s) =>"
                               " parseFloat(getComputedStyle(document.querySelector(s)).fontSize))")
    assert min(sizes) >= 14, sizes


def test_a_long_class_name_wraps_in_the_header_on_a_tablet(
        live_board: LiveBoard, serve: Callable[..., ServerThread], teacher_page: PageFactory) -> None:
    assert len(CLASS_32) == 32
    view = teacher_page(serve(live_board, board_name=CLASS_32).url, width=768, height=1024)
    view.open()
    h1 = view.page.evaluate("() => { const h = document.querySelector('.bar h1');"
                            " return [h.scrollWidth, h.clientWidth]; }")
    assert h1[0] <= h1[1], f"the header is cut: h1 scrollWidth {h1[0]} > clientWidth {h1[1]}"
    assert view.text("#board-name") == CLASS_32


def test_no_attention_figures_show_a_grey_dash_not_a_green_one(
        serve: Callable[..., ServerThread], teacher_page: PageFactory) -> None:
    board = LiveBoard()  # a board just started: health published, attention not yet
    board.publish("health", health_section())
    board.publish("sync", sync_section(time.time()))
    view = teacher_page(serve(board).url, width=1920, height=1080)
    view.open()
    view.wait_live()
    assert view.text("#att-share") == "—"
    colours = view.page.evaluate("""() => {
      const probe = (v) => { const s = document.createElement('span'); s.style.color = `var(${v})`;
        document.body.appendChild(s); const c = getComputedStyle(s).color; s.remove(); return c; };
      return [getComputedStyle(document.getElementById('att-share')).color, probe('--good'), probe('--supp')];
    }""")
    share, good, supp = colours
    assert share != good, f"the 162-px dash is green ({share}) with nothing measured"
    assert share == supp

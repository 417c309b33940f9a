"""The teacher view for a teacher with a screen reader, a keyboard, browser zoom or Windows high contrast:
in real headless Chromium against a real server, with axe-core for the rules a program can check (the
axe.min.js that the PyPI package axe-playwright-python ships, installed with the dev extra like Playwright;
only that file is used)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import pytest

from edge_agent.live import LiveBoard
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, TeacherViewPage
from tests.web.sample import attention_section

pytestmark = pytest.mark.browser

PageFactory = Callable[..., TeacherViewPage]
AXE = files("axe_playwright_python") / "axe.min.js"


def _axe_violations(page: Any) -> list[str]:
    """axe-core's violations on the page as it is now: 'rule: element (why)', one per element."""
    # evaluate, not a <script> tag: the page's Content-Security-Policy allows only its own scripts
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    return list(page.evaluate("""async () => (await axe.run(document)).violations.flatMap((v) =>
        v.nodes.map((n) => v.id + ': ' + n.target.join(' ') + ' ('
          + n.failureSummary.replace(/\\s+/g, ' ').trim() + ')'))"""))


def _opened_on_a_test_clock(view: TeacherViewPage) -> TeacherViewPage:
    """The page open and live on Playwright's clock, past its first 1.5 s (what it shows on opening is not
    news to be spoken)."""
    view.page.clock.install()
    view.open()
    view.wait_live()
    view.page.clock.run_for(1500)
    return view


def test_axe_finds_no_violation_in_either_language_while_live_paused_or_cut_off(
        live_board: LiveBoard, teacher_page: PageFactory) -> None:
    # Low attention: the card's tinted background is where the grey text has the least contrast.
    live_board.publish("attention", attention_section(current=0.3, low=True))
    server = ServerThread(live_board, token=WEB_TOKEN, board_name="初一（2）班").start()
    try:
        view = teacher_page(server.url)
        view.open()
        view.wait_live()
        assert _axe_violations(view.page) == [], "zh-CN, live"
        view.page.click("#pause")
        assert _axe_violations(view.page) == [], "zh-CN, updates paused"
        view.page.click("#pause")
        view.switch_language()
        assert _axe_violations(view.page) == [], "en, live"
        live_board.publish("attention", attention_section(current=None, faces=0) | {"camera": {
            "state": "paused", "fps": 0.0, "detail": "", "opens_at": time.time() + 2700}})
        view.page.wait_for_function("() => document.getElementById('attention').dataset.camera === 'down'")
        assert _axe_violations(view.page) == [], "en, camera paused by the teacher"
        login = teacher_page(server.url)
        login.open("/login")
        assert _axe_violations(login.page) == [], "the sign-in page"
        assert view.console_errors == []  # (once the board is gone, the failed reconnections are errors)
    finally:
        server.stop()
    # Cut off, the last figures stay on screen to be read: they were faded to 92 %, and the grey and orange
    # text fell to 4.2-4.4:1, under the 4.5 of WCAG AA, in 16 places.
    view.page.wait_for_selector("#conn-lost", state="visible", timeout=10000)
    assert _axe_violations(view.page) == [], "en, connection lost"


def test_axe_finds_no_violation_on_a_board_with_no_figures_yet(teacher_page: PageFactory) -> None:
    server = ServerThread(LiveBoard(), token=WEB_TOKEN).start()
    try:
        view = teacher_page(server.url)
        view.open_live_in("zh")
        assert _axe_violations(view.page) == [], "zh-CN, nothing published"
        view.switch_language()
        assert _axe_violations(view.page) == [], "en, nothing published"
    finally:
        server.stop()


def test_opening_the_page_never_shows_or_says_connection_lost(teacher_server: ServerThread,
                                                              teacher_page: PageFactory) -> None:
    # The banner is an alert: shown for the 0.15 s before the stream opened, a screen reader read
    # "connection to the board lost" on every opening of the page, and the board flashed it.
    view = teacher_page(teacher_server.url)
    view.page.add_init_script("""window.__lost = []; window.__conn = [];
      new MutationObserver((changes) => { for (const c of changes) {
        const lost = document.getElementById('conn-lost'), conn = document.getElementById('conn');
        if (lost && !lost.hidden && !window.__lost.length) window.__lost.push(lost.textContent);
        if (conn && conn.textContent && window.__conn[window.__conn.length - 1] !== conn.textContent)
          window.__conn.push(conn.textContent); } })
        .observe(document, { subtree: true, childList: true, characterData: true, attributes: true });""")
    view.open()
    view.wait_live()
    assert view.page.evaluate("window.__lost") == []
    assert view.page.evaluate("window.__conn") == ["正在连接…", "实时"]
    assert view.console_errors == []


def test_a_paused_page_says_nothing_aloud_until_the_teacher_resumes(
        teacher_server: ServerThread, live_board: LiveBoard, teacher_page: PageFactory) -> None:
    # Paused to read the page, the teacher heard "attention has been low" while the screen still showed
    # 78 % and "attention is normal".
    view = _opened_on_a_test_clock(teacher_page(teacher_server.url))
    view.page.click("#pause")
    live_board.publish("attention", attention_section(current=0.3, low=True))
    time.sleep(1.0)  # the update arrives while paused, and is not shown
    view.page.clock.run_for(60000)  # well past the 10 s hold and the 30 s gap
    assert view.text("#att-share") == "78%"
    assert view.text("#announce") == ""
    view.page.click("#pause")
    assert view.text("#att-share") == "30%"
    view.page.clock.run_for(12000)
    assert view.text("#announce") == "专注度已连续几分钟偏低"


def test_the_pause_button_says_what_a_press_does_and_no_contradicting_state(
        teacher_server: ServerThread, teacher_page: PageFactory) -> None:
    # With aria-pressed a screen reader read the paused button as "继续更新, 已按下" (resume updates,
    # pressed): the label already changes with the state, so the state is not said twice and against it.
    view = teacher_page(teacher_server.url)
    view.open()
    view.wait_live()
    assert view.page.locator("header").aria_snapshot().count("button") == 2
    assert '- button "暂停更新"' in view.page.locator("header").aria_snapshot()
    view.page.keyboard.press("Tab")
    view.page.keyboard.press("Enter")  # the keyboard alone operates it
    snapshot = view.page.locator("header").aria_snapshot()
    assert '- button "继续更新"' in snapshot and "pressed" not in snapshot, snapshot
    assert view.text("#conn") == "已暂停"


def test_the_class_and_the_title_are_whole_at_200_percent_zoom_on_a_laptop(
        live_board: LiveBoard, teacher_page: PageFactory) -> None:
    # 1366x768 at 200 %: 683x384 CSS pixels. "初一（2）班 · Class li…" was cut (313 px of text in 254).
    server = ServerThread(live_board, token=WEB_TOKEN, board_name="初一（2）班").start()
    try:
        for lang in ("zh", "en"):
            view = teacher_page(server.url, width=683, height=384)
            view.open_live_in(lang)
            h1 = view.page.evaluate("() => { const h = document.querySelector('h1');"
                                    " return [h.scrollWidth, h.clientWidth]; }")
            assert h1[0] <= h1[1], (lang, h1)
            # the clock and the buttons wrapped under it, whole and on the screen
            for selector in ("#clock", "#conn", "#pause", "#lang"):
                box = view.page.locator(selector).bounding_box()
                assert box is not None and 0 <= box["x"] <= 683 - box["width"], (lang, selector, box)
            assert view.page.evaluate("document.documentElement.scrollWidth") <= 683
    finally:
        server.stop()


def test_the_legend_keys_and_mastery_meters_keep_their_colours_in_windows_high_contrast(
        teacher_server: ServerThread, teacher_page: PageFactory) -> None:
    # Forced colours drop backgrounds: the legend's keys went blank beside a chart that keeps its colours
    # (SVG fills are not forced), and the skills' meters were empty tracks.
    view = teacher_page(teacher_server.url)
    view.page.emulate_media(forced_colors="active", color_scheme="dark")
    view.open()
    view.wait_live()
    colours = view.page.evaluate("""() => {
      const bg = (sel) => getComputedStyle(document.querySelector(sel)).backgroundColor;
      const fill = (sel) => getComputedStyle(document.querySelector(sel)).fill;
      const low = getComputedStyle(document.querySelector('.key-low')).backgroundImage;
      return { normal: bg('.key-normal'), bar: fill('#att-timeline .bar-normal'),
        suppressed: bg('.key-suppressed'), barSuppressed: fill('#att-timeline .bar-suppressed'), low,
        meter: bg('.skill.low .skill-meter > span'),
        track: getComputedStyle(document.querySelector('.skill-meter')).borderTopStyle };
    }""")
    assert colours["normal"] == colours["bar"] == "rgb(21, 113, 91)", colours
    assert colours["suppressed"] == colours["barSuppressed"], colours
    assert "repeating-linear-gradient" in colours["low"], colours  # hatched, as the low bars are
    assert colours["meter"] == "rgb(194, 65, 12)", colours  # a skill below the mastery line, orange
    assert colours["track"] == "solid", colours
    assert view.console_errors == []


def test_the_attention_charts_words_count_the_same_windows_as_its_summary(
        teacher_server: ServerThread, live_board: LiveBoard, teacher_page: PageFactory) -> None:
    # The chart's name said "14 windows" and its description "low in 3 of 13": the 14th, a grey bar with too
    # few faces, cannot be seen by a screen reader, so it is named.
    timeline = live_board.get("attention")["timeline"]
    few = sum(1 for w in timeline if w["suppressed"])
    low = sum(1 for w in timeline if w["low"])
    assert (len(timeline), few, low) == (14, 1, 3)
    view = teacher_page(teacher_server.url)
    view.open()
    view.wait_live()
    chart = view.page.get_by_role("img", name=re.compile(r"^本节课的专注度，14 个时段（1 个人数太少），"
                                                          r"\d\d:\d\d–\d\d:\d\d$"))
    assert chart.count() == 1
    assert chart.get_attribute("id") == "att-timeline"
    assert view.text("#att-tl-summary").startswith("13 个时段中 3 个偏低")  # its aria-describedby
    view.switch_language()
    assert re.fullmatch(r"Attention this lesson, 14 windows \(1 with too few faces\), .+–.+",
                        view.page.get_attribute("#att-timeline", "aria-label") or "")
    assert view.text("#att-tl-summary").startswith("Low in 3 of 13 windows")


def test_the_engines_table_is_a_tab_stop_only_where_it_scrolls(
        teacher_server: ServerThread, teacher_page: PageFactory) -> None:
    # On the board's 1080p screen the table fits, and Tab stopped on it for nothing; where it scrolls
    # sideways (long fallback reasons on a narrow screen), the keyboard must reach it to scroll it.
    tab_stop = "() => document.querySelector('.table-scroll').getAttribute('tabindex')"
    widen = "(px) => { document.querySelector('table.engines').style.minWidth = px; }"
    view = teacher_page(teacher_server.url)
    view.open()
    view.wait_live()
    assert view.page.evaluate(tab_stop) is None
    view.page.evaluate(widen, "2400px")  # wider than the card: it scrolls now
    view.page.wait_for_function(tab_stop + " === '0'")
    assert _axe_violations(view.page) == []  # scrollable-region-focusable
    view.page.evaluate(widen, "")
    view.page.wait_for_function(tab_stop + " === null")
    assert view.console_errors == []


def test_a_chinese_class_name_on_the_english_page_is_read_in_chinese(
        live_board: LiveBoard, teacher_page: PageFactory) -> None:
    server = ServerThread(live_board, token=WEB_TOKEN, board_name="初一（2）班").start()
    try:
        view = teacher_page(server.url)
        view.open_live_in("en")
        assert view.page.get_attribute("#board-name", "lang") == "zh-CN"
        assert view.page.evaluate("document.documentElement.lang") == "en"
    finally:
        server.stop()
    latin = ServerThread(live_board, token=WEB_TOKEN, board_name="Class 7B").start()
    try:
        view = teacher_page(latin.url)
        view.open_live_in("zh")
        assert view.page.get_attribute("#board-name", "lang") == "en"
    finally:
        latin.stop()


def test_switching_language_does_not_leave_the_last_announcement_in_the_old_one(
        teacher_server: ServerThread, live_board: LiveBoard, teacher_page: PageFactory) -> None:
    view = _opened_on_a_test_clock(teacher_page(teacher_server.url))
    live_board.publish("attention", attention_section(current=0.3, low=True))
    view.page.wait_for_function("() => document.getElementById('att-share').textContent === '30%'")
    view.page.clock.run_for(12000)
    assert view.text("#announce") == "专注度已连续几分钟偏低"
    view.switch_language()
    assert view.text("#announce") == ""
    assert view.console_errors == []

// Teacher view: renders the LiveBoard sections and keeps them live over server-sent events.
// Plain DOM and textContent only: nothing from the board is ever parsed as HTML.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const LANG_KEY = "edge-agent.lang";
  const LANG_COOKIE = "edge_agent_lang"; // the server starts the page in it (view.py)
  const HOT_C = 85;
  const MAX_SKILL_ROWS = 8; // more rows push the board status below the fold on a 1080p board
  const MAX_DETAIL_CHARS = 90; // longer diagnostics fold into a <details>: readable by touch and keyboard
  const ANNOUNCE_HOLD_S = 10; // a change is spoken once it has held this long (no flapping) ...
  const ANNOUNCE_GAP_S = 30; // ... and at most this often: the figures themselves update every second
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const messages = boot.messages;
  // What the page shows (state), and what the board sent last (latest): the same but while the teacher
  // has paused updates, when state keeps the figures of the moment of the pause, whatever is drawn again
  // meanwhile (a switch of language redrew them with the newest: a review).
  const latest = { sections: boot.snapshot.sections || {}, updated: boot.snapshot.updated || {} };
  const state = { sections: {}, updated: {} };
  const showLatest = () => { state.sections = { ...latest.sections }; state.updated = { ...latest.updated }; };
  showLatest();
  // The board's clock against this computer's, taken again from every event: NTP may step the board's
  // clock while the page is open (an hour back made fresh figures read "updated 1 h ago", forward made
  // stale ones read "0 s ago" for the hour).
  let clockSkew = 0;
  const syncClock = (serverTime) => { if (isNum(serverTime)) clockSkew = serverTime - Date.now() / 1000; };
  let lang = boot.language || boot.default_language;
  // Times in the board's zone (device.timezone), not the browser's: boards, and so their own screens, are
  // often left on UTC. None set: the browser's zone. A name this browser's zone data lacks would throw.
  function knownZone(name) {
    try { return name ? new Intl.DateTimeFormat("en", { timeZone: name }).resolvedOptions().timeZone : undefined; }
    catch (err) { return undefined; }
  }
  let zone = knownZone(boot.snapshot.timezone);
  const inZone = (options) => (zone ? { ...options, timeZone: zone } : options);

  const $ = (id) => document.getElementById(id);
  $("sign-out").hidden = boot.signed_in !== true;
  const now = () => Date.now() / 1000 + clockSkew;
  const isNum = (v) => typeof v === "number" && isFinite(v);
  syncClock(boot.snapshot.server_time);

  function t(key, vars) {
    const table = messages[lang] || messages[boot.default_language] || {};
    let text = key in table ? table[key] : key;
    for (const name in vars || {}) text = text.split("{" + name + "}").join(String(vars[name]));
    return text;
  }
  // A state the translations do not know yet is shown as sent rather than as a raw key.
  const tState = (prefix, value) => ((messages[lang] || {})[prefix + value] !== undefined ? t(prefix + value) : String(value));
  const pct = (v) => (isNum(v) ? new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 0 }).format(v) : "—");
  const num = (v, digits) => (isNum(v) ? new Intl.NumberFormat(lang, { maximumFractionDigits: digits || 0 }).format(v) : "—");
  // The time alone later today (a pause till "Fri 05:02" named today); else the day before it, with the
  // date when it is six days or more away, either way: after a holiday "Mon 07:30" reads as the coming
  // Monday, and a last lesson three weeks ago as this past Sunday's (a review). On the board's clock.
  const boardDate = (date) => date.toLocaleDateString("en-CA", inZone({}));
  const dayTime = (epoch) => {
    if (!isNum(epoch)) return "—";
    const when = new Date(epoch * 1000);
    const time = when.toLocaleTimeString(lang, inZone({ hour: "2-digit", minute: "2-digit" }));
    if (boardDate(when) === boardDate(new Date(now() * 1000))) return time;
    const far = Math.abs(epoch - now()) >= 6 * 86400;
    return when.toLocaleDateString(lang, inZone({ weekday: "short", ...(far ? { month: "short", day: "numeric" } : {}) }))
      + " " + time;
  };
  // Camera states that are no problem for IT: a choice (outside its hours, paused) or the camera opening.
  // "stopped" is: the analysis was stopped (edge-agent stopping or restarting), so nothing is measured.
  const CAMERA_OFF = new Set(["off_hours", "paused", "starting", "disabled"]);
  const LESSON_MINUTES = 45; // the pause button closes the camera for one lesson
  const clockTime = (epoch, seconds) => (isNum(epoch) ? new Date(epoch * 1000).toLocaleTimeString(lang,
    inZone(seconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" })) : "—");
  function duration(seconds, prefix) {
    if (!isNum(seconds)) return "—";
    const s = Math.max(0, seconds);
    if (s < 90) return t(prefix + "_s", { n: Math.round(s) });
    if (s < 5400) return t(prefix + "_m", { n: Math.round(s / 60) });
    if (s < 48 * 3600) return t(prefix + "_h", { n: num(s / 3600, 1) });
    return t(prefix + "_d", { n: num(s / 86400, 1) }); // "2 天", not "48 小时" (a review)
  }
  const ago = (epoch) => (!isNum(epoch) ? "—" : Math.round(now() - epoch) <= 0 ? t("ago_now") : duration(now() - epoch, "ago"));
  // "刚刚更新" / "updated just now", not "更新于 0 秒前" (a review)
  const updatedAgo = (epoch) => (isNum(epoch) && Math.round(now() - epoch) <= 0 ? t("updated_now") : t("updated_ago", { t: ago(epoch) }));

  function el(tag, props, children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }
  const setText = (id, text) => { $(id).textContent = text; };
  const replace = (id, nodes) => { $(id).replaceChildren(...nodes); };

  function renderStatic() {
    document.documentElement.lang = lang;
    // Which class: two boards open in two tabs looked the same (a review). The class first, as a tab
    // shows the start of its title.
    const board = typeof boot.board_name === "string" ? boot.board_name : "";
    document.title = board ? t("page_title_named", { name: board }) : t("page_title");
    $("board-name").hidden = !board;
    $("board-name").textContent = board;
    // the class's name in its own script's voice: "初一（2）班" on the English page was read as English
    $("board-name").lang = /[\u3400-\u9fff\uf900-\ufaff]/.test(board) ? "zh-CN" : /[A-Za-z]/.test(board) ? "en" : lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    $("lang").textContent = t("switch_language");
    $("lang").title = t("switch_language_title");
    $("lang").lang = lang === "en" ? "zh-CN" : "en"; // the button names the other language, in it
    $("pause").textContent = t(paused ? "resume_updates" : "pause_updates");
  }

  function renderAttention() {
    const a = state.sections.attention;
    const card = $("attention");
    if (!a) {
      setText("att-share", "—"); setText("att-faces", t("no_data"));
      $("att-signal").dataset.low = "none"; setText("att-signal", t("no_data"));
      // grey, as with a camera that measures nothing: a green "—" read "all well" before any figure came
      card.dataset.low = "false"; card.dataset.camera = "down"; renderTimeline([]);
      return;
    }
    const cam = a.camera || {};
    // Without pictures there is nothing to measure: say so instead of showing an empty classroom.
    const blind = !!cam.state && cam.state !== "running";
    const low = !blind && a.low_attention === true;
    card.dataset.low = String(low);
    card.dataset.camera = blind ? "down" : "ok";
    setText("att-share", blind ? "—" : pct(a.current_share));
    setText("att-faces", blind ? tState("camera_state_", cam.state) : t("attention_faces", { n: num(a.faces) }));
    const signal = $("att-signal");
    signal.dataset.low = blind ? "none" : a.current_share === null || a.current_share === undefined ? (low ? "true" : "none") : String(low);
    signal.textContent = blind ? (cam.state === "off_hours" ? t("attention_camera_off_hours", { when: dayTime(cam.opens_at) })
      : cam.state === "paused" ? t("attention_camera_paused", { when: dayTime(cam.opens_at) })
      : t(cam.state === "stopped" ? "attention_camera_stopped" : cam.state === "disabled" ? "attention_camera_disabled"
        : cam.state === "starting" ? "attention_camera_starting" : "attention_camera_down"))
      : low ? t("attention_low") : a.current_share === null ? t("attention_suppressed") : t("attention_ok");
    const camPause = $("cam-pause");
    // kept while the camera opens again: hidden, the button took the keyboard's place with it
    camPause.hidden = !["running", "paused", "starting"].includes(cam.state);
    camPause.dataset.action = cam.state === "paused" ? "resume" : "pause";
    camPause.textContent = t(cam.state === "paused" ? "camera_resume" : "camera_pause", { n: LESSON_MINUTES });
    setText("att-window", isNum(a.window_s) ? t("attention_window", { s: num(a.window_s) }) : "");
    const off = cam.state === "disabled"; // no frame rate, no "updated" growing old: nothing is measured
    setText("att-camera", cam.state ? cameraText(cam) : "");
    setText("att-pose", a.pose_method ? t("pose_method", { m: tState("pose_method_", a.pose_method) }) : "");
    shownAt.attention = off ? undefined : state.updated.attention; // paused: the figures' own time
    setText("att-updated", off ? "" : updatedAgo(shownAt.attention));
    joinFooter();
    renderTimeline(Array.isArray(a.timeline) ? a.timeline : []);
  }

  // " · " only between the parts that say something: with the camera switched off in the config the line
  // read "摄像头已在配置中关闭 · ·" (a review). A separator stands before each part after the first.
  function joinFooter() {
    let said = false, sep = null;
    for (const node of $("att-footer").children) {
      if (node.classList.contains("sep")) { sep = node; continue; }
      const says = node.textContent !== "";
      if (sep) sep.hidden = !(said && says);
      said = said || says; sep = null;
    }
  }

  // The rate only while it runs and has one: just after a failure or a pause it still gave the last one for
  // seconds, and just after a resume "0 frames/s" for a second (the rate needs two frames).
  function cameraText(cam) {
    const rate = cam.state === "running" && isNum(cam.fps) && cam.fps > 0 ? " · " + t("camera_fps", { fps: num(cam.fps, 1) }) : "";
    return tState("camera_state_", cam.state) + rate;
  }

  function renderTimeline(all) {
    // Each bar at its time, not at its index: a closure or a restart inside the lesson shows as a gap
    // (by index the windows either side looked back to back). At least 12 windows wide, as before.
    const windows = all.filter((w) => w && isNum(w.start) && isNum(w.end) && w.end > w.start);
    const a = state.sections.attention || {};
    const W = 600, H = 160, length = isNum(a.window_s) && a.window_s > 0 ? a.window_s : 60;
    const t0 = windows.length ? Math.min(...windows.map((w) => w.start)) : 0;
    const t1 = Math.max(t0 + 12 * length, ...windows.map((w) => w.end));
    const scale = W / (t1 - t0), gap = Math.min(4, length * scale * 0.2);
    const nodes = [];
    // no grid on an empty chart: its middle line ran through the sentence saying why it is empty
    for (const level of windows.length ? [0.25, 0.5, 0.75] : []) {
      nodes.push(el("svg:line", { class: "grid", x1: 0, x2: W, y1: H * (1 - level), y2: H * (1 - level) }));
    }
    windows.forEach((w) => {
      const suppressed = w.suppressed === true || !isNum(w.attentive_mean);
      const value = suppressed ? 0.04 : Math.max(0.02, Math.min(1, w.attentive_mean));
      const cls = suppressed ? "bar-suppressed" : w.low ? "bar-low" : "bar-normal";
      const bar = el("svg:rect", { class: cls, x: ((w.start - t0) * scale + gap / 2).toFixed(1), y: (H * (1 - value)).toFixed(1),
        width: Math.max(1, (w.end - w.start) * scale - gap).toFixed(1), height: (H * value).toFixed(1) });
      bar.dataset.mean = suppressed ? "" : String(w.attentive_mean);
      const what = suppressed ? t("legend_suppressed") : pct(w.attentive_mean) + (w.low ? " · " + t("legend_low") : "");
      bar.appendChild(el("svg:title", { text: clockTime(w.start, true) + "–" + clockTime(w.end, true) + "  " + what }));
      nodes.push(bar);
      if (cls === "bar-low") nodes.push(el("svg:rect", { class: "hatch", x: bar.getAttribute("x"), y: bar.getAttribute("y"),
        width: bar.getAttribute("width"), height: bar.getAttribute("height") }));
    });
    replace("att-timeline", nodes);
    $("att-tl-empty").hidden = windows.length > 0;
    const blind = !!(a.camera && a.camera.state && a.camera.state !== "running");
    const off = !!(a.camera && a.camera.state === "disabled");
    // a room with too few faces has no measured window: it is said, not promised for the next window
    setText("att-tl-empty", off ? t("timeline_camera_off") : blind ? t("timeline_no_camera")
      : a.current_share === null ? t("timeline_too_few") : isNum(a.window_s) ? t("timeline_empty", { s: num(a.window_s) }) : t("no_data"));
    // The windows with too few faces named in the label: it said "14 windows" and the summary under it
    // "low in 3 of 13", the 14th a grey bar a screen reader cannot see.
    const few = windows.filter((w) => w.suppressed === true || !isNum(w.attentive_mean)).length;
    $("att-timeline").setAttribute("aria-label", windows.length ? t(few ? "timeline_label_few" : "timeline_label", {
      n: num(windows.length), few: num(few), from: clockTime(windows[0].start), to: clockTime(windows[windows.length - 1].end) })
      : t("attention_timeline"));
    setText("att-tl-summary", timelineSummary(windows));
    setText("att-tl-start", windows.length ? clockTime(windows[0].start) : "");
    setText("att-tl-end", windows.length ? clockTime(windows[windows.length - 1].end) : "");
  }

  // The chart's data in words (its bars say it only by height and colour).
  function timelineSummary(windows) {
    const measured = windows.filter((w) => w.suppressed !== true && isNum(w.attentive_mean));
    if (!measured.length) return "";
    const low = measured.filter((w) => w.low).length;
    const lowest = measured.reduce((a, b) => (b.attentive_mean < a.attentive_mean ? b : a));
    return t(low ? "timeline_summary" : "timeline_summary_none",
      { low: num(low), n: num(measured.length), p: pct(lowest.attentive_mean), t: clockTime(lowest.start) });
  }

  function skillName(skill) { return (lang === "en" ? skill.name_en : skill.name_zh) || skill.name_en || skill.name_zh || skill.id; }
  function itemTitle(item) { return (lang === "en" ? item.title_en : item.title_zh) || item.title_en || item.title_zh || item.item_id; }

  // The board shows what this lesson is about first: the weakest skills, then the other skills practised
  // this lesson (lowest mastery first), then the rest of the curriculum in its own order. A skill's
  // mastery is that of the students who have answered on it (assessed_mean): the class-wide mean also
  // holds the model's guesses for those who never did.
  function orderSkills(skills, weakest) {
    const practised = (s) => isNum(s.students) && s.students > 0;
    const group = (s) => (weakest.includes(s.id) ? 0 : practised(s) ? 1 : 2);
    const mastery = (s) => (isNum(s.assessed_mean) ? s.assessed_mean : 2);
    return skills.map((s, i) => ({ s, i })).sort((a, b) => {
      const ga = group(a.s), gb = group(b.s);
      if (ga !== gb) return ga - gb;
      if (ga === 0) return weakest.indexOf(a.s.id) - weakest.indexOf(b.s.id);
      if (ga === 1) return mastery(a.s) - mastery(b.s) || a.i - b.i;
      return a.i - b.i;
    }).map((x) => x.s);
  }

  // Every skill under the mastery line is marked, in words as well as in the bar's colour (a colour-blind
  // reader, a projector's washed-out red): a skill at 50 % with 27 of 30 below the line showed a blue bar
  // and no word while one at 47.5 % read "weak" (a review). The weakest few keep a stronger label.
  function skillRow(s, weak, threshold) {
    const low = weak || (isNum(s.assessed_mean) && isNum(threshold) && s.assessed_mean < threshold);
    const name = el("span", { class: "skill-label" }, [el("span", { class: "skill-name", text: skillName(s), title: skillName(s) })]);
    const fill = el("span");
    fill.style.width = (isNum(s.assessed_mean) ? Math.max(0, Math.min(1, s.assessed_mean)) * 100 : 0) + "%";
    const practisedBy = isNum(s.students) && s.students > 0 ? t("skill_practised", { n: num(s.students) }) : t("skill_not_practised");
    const below = isNum(s.assessed_mean) ? t("skill_below_of", { n: num(s.assessed_below_threshold), total: num(s.assessed) })
      : isNum(s.assessed) && s.assessed > 0 ? t("skill_too_few", { n: num(s.assessed) }) : t("skill_unassessed");
    // The label starts the line under the name, not beside it: beside it, it took the name's room and
    // names broke mid-word over three lines at 1366x768.
    const meta = el("span", { class: "skill-meta" }, (low ? [el("span", { class: weak ? "badge" : "badge badge-below",
      text: t(weak ? "weakest_badge" : "below_mastery_badge") })] : []).concat([document.createTextNode(practisedBy + " · " + below)]));
    const row = el("li", { class: "skill" + (low ? " low" : "") + (weak ? " weak" : "") }, [name, el("span", { class: "skill-meter" }, [fill]),
      el("span", { class: "skill-pct", text: pct(s.assessed_mean) }), meta]);
    row.dataset.skill = s.id;
    row.dataset.practised = String(isNum(s.students) && s.students > 0);
    return row;
  }

  let learningShown = null; // what the list shows: rebuilt only when it changes, so a reader keeps its place
  function renderLearning() {
    const l = state.sections.learning;
    const key = JSON.stringify([lang, zone, l === undefined ? null : l]);
    if (key === learningShown) return;
    learningShown = key;
    const off = !!l && l.enabled === false; // switched off in the config: no answer will ever come
    $("learning").dataset.off = String(off); // then only that is said: no empty headings and dashes
    if (!l || off) {
      setText("learn-answers", "—"); setText("learn-students", "—"); setText("learn-started", t(off ? "learning_disabled" : "no_data"));
      setText("learn-key", "");
      ["learn-skills", "learn-skills-more", "learn-weakest", "learn-recommended"].forEach((id) => replace(id, []));
      renderActivity([]); // an empty chart named too: a screen reader read an image with no name (axe: svg-img-alt)
      $("learn-more").hidden = true; $("learn-empty").hidden = off; $("learn-suppressed").hidden = true;
      setText("learn-empty", t("skills_none"));
      return;
    }
    // what "below mastery" means beside each skill's count of them (a review: nothing said it)
    const figures = !l.suppressed && Array.isArray(l.skills) && l.skills.length > 0; // no key over no rows
    setText("learn-key", figures && isNum(l.mastery_threshold) ? t("skills_key", { p: pct(l.mastery_threshold) }) : "");
    setText("learn-answers", num(l.answers));
    setText("learn-students", num(l.students));
    // The skill figures change only once enough students have answered since: with few still answering
    // they can stand for long, so past two minutes the page says since when.
    const stale = isNum(l.figures_at) && isNum(l.window_end) && l.window_end - l.figures_at >= 120;
    // after a lesson: when it ended, not "no answers yet" as if none had been given (a review)
    const last = !isNum(l.lesson_started) && l.last_lesson && isNum(l.last_lesson.ended) ? l.last_lesson : null;
    setText("learn-started", [
      isNum(l.lesson_started) ? t("lesson_started", { t: clockTime(l.lesson_started) }) : "",
      last ? t("last_lesson", { t: dayTime(last.ended), n: num(last.answers) }) : "",
      stale && !l.suppressed ? t("figures_as_of", { t: clockTime(l.figures_at) }) : "",
    ].filter(Boolean).join(" · "));
    setText("learn-empty", t(last ? "skills_next_lesson" : "skills_none"));
    $("learn-suppressed").hidden = l.suppressed !== true;
    const skills = l.suppressed ? [] : Array.isArray(l.skills) ? l.skills.filter((s) => s && typeof s === "object") : [];
    const byId = Object.fromEntries(skills.map((s) => [s.id, s]));
    const weakest = l.suppressed ? [] : Array.isArray(l.weakest) ? l.weakest : [];
    const ordered = orderSkills(skills, weakest);
    const rows = ordered.map((s) => skillRow(s, weakest.includes(s.id), l.mastery_threshold));
    // The skills not practised this lesson fold into one line naming them (a review: at 1366x768 their
    // rows of "—" pushed the practised ones out of the card); with none practised yet, the list as before.
    const practisedCount = ordered.filter((s) => weakest.includes(s.id) || (isNum(s.students) && s.students > 0)).length;
    const shown = practisedCount > 0 ? Math.min(practisedCount, MAX_SKILL_ROWS) : MAX_SKILL_ROWS;
    replace("learn-skills", rows.slice(0, shown));
    replace("learn-skills-more", rows.slice(shown));
    const rest = ordered.slice(shown);
    $("learn-more").hidden = rest.length === 0;
    const unpractised = practisedCount > 0 && practisedCount <= shown;
    const summary = unpractised ? t("skills_unpractised_more", { n: num(rest.length), names: rest.map(skillName).join(t("list_sep")) })
      : t("skills_more", { n: num(rest.length) });
    setText("learn-more-summary", summary);
    $("learn-more-summary").title = summary; // cut to one line: the whole of it for a mouse, and it opens
    $("learn-empty").hidden = skills.length > 0 || l.suppressed === true;
    replace("learn-weakest", weakest.map((id) => el("li", { text: byId[id] ? skillName(byId[id]) : id })));
    // No skill under the mastery threshold is good news, and says so rather than leaving a blank list.
    $("learn-weakest-none").hidden = !(weakest.length === 0 && skills.length > 0 && !l.suppressed);
    const recs = l.suppressed ? [] : Array.isArray(l.recommended) ? l.recommended : [];
    replace("learn-recommended", recs.map((r) => el("li", {}, [document.createTextNode(itemTitle(r)),
      el("span", { class: "meta", text: (byId[r.skill_id] ? skillName(byId[r.skill_id]) + " · " : "") + t("predicted_success", { p: pct(r.predicted_success) }) })])));
    renderActivity(Array.isArray(l.activity) ? l.activity : []);
  }

  function renderActivity(minutes) {
    const W = 300, H = 60, n = Math.max(minutes.length, 10), slot = W / n;
    const peak = Math.max(1, ...minutes.map((m) => (isNum(m.answers) ? m.answers : 0)));
    const summary = minutes.length ? t("activity_peak", { n: num(peak), minutes: num(minutes.length) }) : "";
    setText("learn-activity-peak", summary);
    $("learn-activity").setAttribute("aria-label", summary || t("activity_title"));
    replace("learn-activity", minutes.map((m, i) => {
      const h = ((isNum(m.answers) ? m.answers : 0) / peak) * (H - 2);
      const bar = el("svg:rect", { x: (i * slot + 1).toFixed(1), y: (H - h).toFixed(1), width: Math.max(1, slot - 2).toFixed(1), height: h.toFixed(1) });
      bar.appendChild(el("svg:title", { text: clockTime(m.minute) + "  " + num(m.answers) }));
      return bar;
    }));
  }

  const shorten = (text) => { const s = String(text || ""); return s.length > MAX_DETAIL_CHARS ? s.slice(0, MAX_DETAIL_CHARS - 1).trimEnd() + "…" : s; };

  // Fallback reasons are written for IT ("TensorRT unavailable: the tensorrt Python package does not
  // import ..."); the board shows a short phrase and keeps the whole reason in the tooltip.
  function fallbackPhrase(reason) {
    const m = /^TensorRT ([a-z ]+?):/.exec(String(reason || ""));
    const table = messages[lang] || {};
    if (m) {
      const key = "fallback_" + m[1].trim().replace(/ +/g, "_");
      return key in table ? t(key) : t("fallback_trt_other");
    }
    return t("fallback_other");
  }

  function issues() {
    const out = [];
    const issue = (text, detail) => out.push({ text, detail: detail || "" });
    const h = state.sections.health || {};
    const cam = (state.sections.attention || {}).camera;
    const camDown = !!(cam && cam.state && cam.state !== "running" && !CAMERA_OFF.has(cam.state));
    const s = state.sections.sync;
    const syncDown = !!(s && s.enabled !== false && s.connected === false); // off in the config: a choice
    for (const c of h.components || []) {
      if (!c || c.ok !== false) continue;
      // The camera and sync lines below say the same with more detail.
      if ((c.name === "attention" && camDown) || (c.name === "sync" && syncDown)) continue;
      issue(t("issue_component", { name: tState("component_", c.name) }), c.detail);
    }
    const fallbacks = new Map(); // one line per (phrase, backend), naming every engine it affects
    for (const e of h.engines || []) {
      if (!e || !e.fallback) continue;
      if (e.backend === "none") { issue(t("issue_engine_failed", { name: e.name }), e.fallback); continue; }
      const key = fallbackPhrase(e.fallback) + "\u0000" + e.backend;
      if (!fallbacks.has(key)) fallbacks.set(key, { why: fallbackPhrase(e.fallback), backend: e.backend, names: [], reasons: [] });
      fallbacks.get(key).names.push(e.name);
      fallbacks.get(key).reasons.push(e.name + ": " + e.fallback);
    }
    for (const f of fallbacks.values()) {
      issue(t("issue_fallback", { names: f.names.join(t("list_sep")), backend: f.backend, why: f.why, n: f.names.length }), f.reasons.join("; "));
    }
    if (camDown) issue(t("issue_camera", { state: tState("camera_state_", cam.state) }), cam.detail);
    if (syncDown) issue(t("issue_sync"), s.detail);
    const temps = (state.sections.device || {}).temperatures || {};
    for (const [zone, c] of Object.entries(temps)) if (isNum(c) && c >= HOT_C) issue(t("issue_hot", { zone, c: num(c, 0) }));
    return out;
  }

  // A diagnostic for IT (in English whatever the page's language) folded under a short line: it opens by
  // touch and keyboard, which a tooltip does not.
  const folded = (summary, detail, props) => el("details", props || {}, [el("summary", { text: summary }),
    el("span", { lang: "en", text: detail })]);
  // the phrase whole in its summary's title, where a narrow column cuts it with an ellipsis
  const titled = (details) => { const summary = details.querySelector("summary"); summary.title = summary.textContent; return details; };
  function detailNode(detail) {
    if (String(detail).length <= MAX_DETAIL_CHARS) return el("span", { class: "detail", text: t("issue_detail", { d: detail }) });
    return folded(t("issue_detail", { d: shorten(detail) }), detail, { class: "detail" });
  }

  // The lists are rebuilt only when what they show changes, not when any figure of their sections does:
  // the camera's frame rate and the sync status's time change every second or so, and each rebuild closed
  // the diagnostic a teacher or IT had opened and took the keyboard's focus off its line (a review).
  const shownLists = { issues: null, engines: null, device: null };
  function replaceIfChanged(id, list, key, nodes) {
    if (shownLists[list] === key) return;
    shownLists[list] = key;
    replace(id, nodes());
  }
  function renderHealth() {
    const h = state.sections.health;
    const pill = $("health-state");
    pill.dataset.state = h && h.state ? h.state : "";
    pill.textContent = h && h.state ? tState("health_state_", h.state) : t("no_data");
    const problems = issues();
    replaceIfChanged("health-issues", "issues", JSON.stringify([lang, problems]), () => (problems.length
      ? problems.map((p) => el("li", { class: "problem" }, [document.createTextNode(p.text)].concat(p.detail ? [detailNode(p.detail)] : [])))
      : [el("li", { class: "none", text: t("issues_none") })]));
    // "Everything works" next to a list of problems contradicts itself: running, with problems to check.
    if (h && h.state === "ok" && problems.length) {
      pill.dataset.state = "attention";
      pill.textContent = t("health_state_attention");
    }
    const engines = ((h && h.engines) || []).filter((e) => e && typeof e === "object");
    const engineRows = engines.map((e) => [e.name, e.backend, e.precision, e.fallback || null]);
    replaceIfChanged("health-engines", "engines", JSON.stringify([lang, engineRows]), () => (engines.length
      ? engines.map((e) => el("tr", {}, [el("td", { text: e.name }), el("td", { text: e.backend }),
        el("td", { text: e.precision }), e.fallback ? el("td", { class: "fallback" }, [titled(folded(fallbackPhrase(e.fallback), e.fallback))])
          : el("td", { text: "—" })]))
      : [el("tr", {}, [el("td", { colspan: 4, class: "muted", text: t("engines_none") })])]));
    const cam = (state.sections.attention || {}).camera;
    const camNode = $("health-camera");
    camNode.dataset.ok = String(!cam || cam.state === "running" || CAMERA_OFF.has(cam.state));
    camNode.textContent = cam && cam.state ? cameraText(cam) : t("no_data");
    renderSync();
    renderDevice();
  }

  function renderSync() {
    const s = state.sections.sync;
    const node = $("health-sync");
    if (!s) { node.dataset.connected = ""; node.textContent = t("no_data"); setText("health-sync-detail", ""); return; }
    if (s.enabled === false) { node.dataset.connected = ""; node.textContent = t("sync_off"); setText("health-sync-detail", ""); return; }
    node.dataset.connected = String(s.connected === true);
    const parts = [s.connected ? t("sync_connected") : t("sync_disconnected"), t("sync_backlog", { n: num(s.backlog) })];
    if (isNum(s.oldest_age_s) && s.backlog > 0) parts.push(t("sync_oldest", { d: duration(s.oldest_age_s, "duration") }));
    node.textContent = parts.join(" · ");
    const nothingYet = s.connected === true && !(s.backlog > 0);
    const detail = [isNum(s.last_success) ? t("sync_last", { t: ago(s.last_success) }) : nothingYet ? t("sync_nothing_yet") : t("sync_never")];
    // The outbox's reason codes (store/outbox.py, sync/publisher.py, store/db.py) in the teacher's words; one
    // line per wording (max_rows and max_bytes are both the board's storage limit); a new code as sent.
    const drops = new Map();
    for (const [reason, n] of Object.entries(s.drops || {})) {
      if (!isNum(n) || n <= 0) continue;
      const why = tState("drop_reason_", reason);
      drops.set(why, (drops.get(why) || 0) + n);
    }
    for (const [why, n] of drops) detail.push(t("sync_drops", { n: num(n), r: why }));
    // While connected the detail only repeats "connected"; when not, the issue list already says why.
    $("health-sync-detail").textContent = detail.join(" · "); // why it is down: in the issue list
  }

  function renderDevice() {
    const d = state.sections.device;
    const note = $("health-device-note");
    const noReadings = (text) => { replaceIfChanged("health-device", "device", "[]", () => []); note.hidden = false; note.textContent = text; };
    note.hidden = true;
    if (!d) { noReadings(t("no_data")); return; }
    const temps = Object.entries(d.temperatures || {}).filter(([, c]) => isNum(c)).map(([z, c]) => z + "\u00a0" + num(c, 0) + "\u00a0°C");
    const power = Object.entries(d.power_w || {}).filter(([, w]) => isNum(w)).map(([r, w]) => r + "\u00a0" + num(w, 1) + "\u00a0W");
    if (d.source === "none" || (!isNum(d.gpu_load) && !isNum(d.gpu_memory_bytes) && !temps.length && !power.length)) {
      noReadings(t("device_no_sensors"));
      return;
    }
    const rows = [[t("gpu_load"), pct(d.gpu_load)],
      [t("gpu_memory"), isNum(d.gpu_memory_bytes) ? num(d.gpu_memory_bytes / 1048576) + " MiB" : "—"]];
    // "、" between the readings in Chinese, ", " in English (a review: ", " on the zh-CN page)
    rows.push([t("temperatures"), temps.join(t("list_sep")) || "—"], [t("power"), power.join(t("list_sep")) || "—"]);
    replaceIfChanged("health-device", "device", JSON.stringify(rows), () => rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  const renderers = { attention: [renderAttention, renderHealth], learning: [renderLearning], health: [renderHealth],
    sync: [renderHealth], device: [renderHealth] };
  function renderAll() { renderStatic(); renderAttention(); renderLearning(); renderHealth(); renderClock(); }
  function renderClock() { setText("clock", new Date().toLocaleTimeString(lang, inZone({ hour: "2-digit", minute: "2-digit" }))); }

  // Paused (WCAG 2.2.2): updates are kept, not shown, until the teacher resumes; the pill says so.
  let paused = false;
  let signedOut = false;
  // The status the board refused this view's stream with (null: not refused). Only a 503 means its places
  // are taken; every refusal read "too many teacher views" and was retried for ever (a review: a 403 from
  // a board restarted with viewing from other computers switched off told the teacher to close a tab).
  let refused = null;
  const shownAt = { attention: undefined };
  function setConnection(live) {
    const conn = $("conn");
    if (live) { signedOut = false; refused = null; }
    conn.dataset.state = live ? "live" : "reconnecting";
    conn.dataset.paused = String(paused); // "Paused" with the live green dot read as live (a review)
    // refused with 403, or its sign-in ended, the page does not try again: "reconnecting" would promise
    // what does not come (a review: it said so for ever over "sign in again")
    const stopped = refused === 403 || signedOut;
    conn.textContent = live ? t(paused ? "conn_paused" : "conn_live") : t(stopped ? "conn_not_connected" : "conn_reconnecting");
    document.body.dataset.conn = live ? "live" : "lost"; // dashed cards: their numbers are not current
    $("conn-lost").hidden = live;
    setText("conn-lost-text", signedOut ? t("session_ended")
      : refused === 503 ? t("conn_refused", { s: num(boot.retry_refused_s) })
      : refused === 403 ? t("conn_forbidden")
      : refused !== null ? t("conn_refused_status", { n: String(refused), s: num(boot.retry_refused_s) }) : t("conn_lost"));
    $("sign-in").hidden = !signedOut;
  }

  // The connection's state again, in the current language. Before the stream first opens it is
  // "connecting", not lost: the page opened with the "connection lost" alert shown for its first 0.15 s,
  // and a screen reader said it on every opening (an accessibility review).
  function showConnection() {
    if ($("conn").dataset.state === "connecting") { $("conn").textContent = t("conn_connecting"); return; }
    setConnection($("conn").dataset.state === "live");
  }

  // The stream cannot say why it failed: a sign-in that ended (12 h) would read "reconnecting" for ever.
  // The status the board answers a request for path with (only its head is read: a stream that opens is
  // closed at once); null when the board does not answer.
  async function statusOf(path) {
    const abort = new AbortController();
    try {
      const response = await fetch(path, { credentials: "same-origin", cache: "no-store", signal: abort.signal });
      return response.status;
    } catch (err) {
      return null; // the board is unreachable: reconnecting is the truth
    } finally {
      abort.abort();
    }
  }

  // Screen readers hear what changed (low attention, the camera, the board's state), not every figure.
  const spoken = { shown: null, pending: null, since: 0, last: -Infinity };
  function situation() {
    const a = state.sections.attention || {};
    const cam = a.camera || {};
    const h = state.sections.health || {};
    const blind = !!cam.state && cam.state !== "running";
    return { low: !blind && a.low_attention === true, camera: cam.state || "", health: h.state || "" };
  }
  function describeChange(before, after) {
    const out = [];
    if (after.low !== before.low) out.push(t(after.low ? "attention_low" : "attention_ok"));
    if (after.camera !== before.camera && after.camera) out.push(tState("camera_state_", after.camera));
    if (after.health !== before.health && after.health) out.push(t("label_value", { k: t("health_title"), v: tState("health_state_", after.health) }));
    return out.join(t("announce_sep")); // "。" in Chinese: a screen reader read ". " there (a review)
  }
  function announceTick() {
    // Paused, the reader holds still too: it told of changes the frozen screen did not show, to a teacher
    // who had paused to read it. A change that holds is said once the teacher resumes.
    if (paused) return;
    const current = situation();
    const key = JSON.stringify(current);
    if (spoken.shown === null) { spoken.shown = current; return; } // nothing is news when the page opens
    if (key === JSON.stringify(spoken.shown)) { spoken.pending = null; return; }
    if (spoken.pending !== key) { spoken.pending = key; spoken.since = now(); return; }
    if (now() - spoken.since < ANNOUNCE_HOLD_S || now() - spoken.last < ANNOUNCE_GAP_S) return;
    const text = describeChange(spoken.shown, current);
    spoken.shown = current; spoken.pending = null; spoken.last = now();
    if (text) setText("announce", text);
  }

  // A link that goes dead without a FIN or RST (Wi-Fi gone, a switch unplugged) ends no stream: the page
  // said "Live" over 2-minute-old figures. The board sends at least a keepalive every keepalive_s; after
  // 2.5 of those without a byte the stream is taken as dead, closed and opened again.
  const SILENCE_MS = (isNum(boot.keepalive_s) && boot.keepalive_s > 0 ? boot.keepalive_s : 15) * 2500;
  let source = null;
  let silence = null;
  function heard() {
    clearTimeout(silence);
    silence = setTimeout(() => {
      if (source) source.close();
      setConnection(false);
      connect();
    }, SILENCE_MS);
  }
  function connect() {
    const mine = new EventSource("/api/v1/events");
    source = mine;
    heard(); // a connection that never opens counts as silence too
    mine.addEventListener("open", () => { heard(); setConnection(true); });
    mine.addEventListener("keepalive", (ev) => { heard(); syncClock(JSON.parse(ev.data).server_time); });
    mine.addEventListener("error", async () => {
      refused = null; // said again below only if the board answers and refused this stream (round 2:
      setConnection(false); // "close a tab" stayed up over a board that had gone down)
      // A refused stream is closed for good, and the browser never tries again by itself: asked again,
      // the board says with what it refused it. Otherwise the browser reconnects; the board may answer 401.
      const closed = mine.readyState === EventSource.CLOSED;
      const status = await statusOf(closed ? "/api/v1/events" : "/api/v1/live");
      if (mine !== source) return; // replaced meanwhile (the silence timer): the new one is in charge
      if (status !== null) signedOut = status === 401;
      if ($("conn").dataset.state !== "live") setConnection(false);
      if (!closed) return;
      clearTimeout(silence);
      if (signedOut) return; // a page whose sign-in ended waits for the teacher instead
      // the board answers, yet refused the stream: not "connection lost" (a review: the 5th view from
      // one computer told the teacher the network was down, when closing a tab was the fix)
      refused = status !== null && (status < 200 || status >= 300) ? status : null;
      if (refused !== null) setConnection(false);
      // 403: the board no longer lets this computer in, and asking again every 10 s will not change that;
      // the alert says what to do, then to reload the page.
      if (refused !== 403) setTimeout(connect, boot.retry_refused_s * 1000);
    });
    mine.addEventListener("snapshot", (ev) => {
      heard();
      const snap = JSON.parse(ev.data);
      syncClock(snap.server_time);
      zone = knownZone(snap.timezone);
      latest.sections = snap.sections || {};
      latest.updated = snap.updated || {};
      if (!paused) { showLatest(); renderAttention(); renderLearning(); renderHealth(); }
    });
    mine.addEventListener("update", (ev) => {
      heard();
      const update = JSON.parse(ev.data);
      syncClock(update.server_time);
      if (!(update.section in renderers)) return;
      latest.sections[update.section] = update.data;
      latest.updated[update.section] = update.at;
      if (paused) return;
      showLatest();
      for (const render of renderers[update.section]) render();
    });
  }

  async function useLanguage(next) {
    if (!boot.languages.includes(next)) next = boot.default_language;
    if (!messages[next]) {
      try {
        const response = await fetch("/i18n/" + encodeURIComponent(next) + ".json", { credentials: "same-origin" });
        if (!response.ok) throw new Error(String(response.status));
        messages[next] = await response.json();
      } catch (err) {
        return; // keep the current language; the button stays usable
      }
    }
    lang = next;
    setText("announce", ""); // the last announcement, in the other language, is not read again in it
    renderAll();
    showConnection();
  }

  // Opening the other skills scrolls the learning card (never the page) to show them.
  $("learn-more").addEventListener("toggle", () => {
    if ($("learn-more").open) $("learn-more-summary").scrollIntoView({ block: "start" });
  });

  $("pause").addEventListener("click", () => {
    paused = !paused;
    // The label names what a press does; no aria-pressed beside it: "Resume updates, pressed" contradicts
    // itself to a screen reader (a toggle's label must not change with its state).
    $("pause").textContent = t(paused ? "resume_updates" : "pause_updates");
    showConnection();
    if (!paused) { showLatest(); renderAttention(); renderLearning(); renderHealth(); }
  });

  // The teacher closes the camera for a lesson (or opens it again); the board keeps the pause across a
  // restart, and the next update shows it. JSON, so no other web page can send it as a plain form.
  $("cam-pause").addEventListener("click", async () => {
    const button = $("cam-pause");
    // aria-disabled, not disabled: a disabled button loses the keyboard's focus (a review: on every press)
    if (button.getAttribute("aria-disabled") === "true") return; // a second press while the first is sent
    const resume = button.dataset.action === "resume";
    button.setAttribute("aria-disabled", "true");
    // A failure is said in a visible line (an alert), not a tooltip: a touch board shows no tooltip, and
    // the teacher saw nothing happen (a review); the next success clears it.
    const failed = (yes) => {
      const line = $("cam-pause-failed");
      line.hidden = !yes;
      if (yes) line.setAttribute("role", "alert"); else line.removeAttribute("role");
      line.textContent = yes ? t(resume ? "camera_resume_failed" : "camera_pause_failed") : "";
    };
    try {
      const response = await fetch("/api/v1/camera/" + (resume ? "resume" : "pause"), {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: resume ? "{}" : JSON.stringify({ minutes: LESSON_MINUTES }) });
      failed(!response.ok);
    } catch (err) {
      failed(true);
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });

  $("lang").addEventListener("click", () => {
    const next = lang === "en" ? "zh-CN" : "en";
    document.cookie = LANG_COOKIE + "=" + next + "; path=/; max-age=31536000; SameSite=Strict";
    try { localStorage.setItem(LANG_KEY, next); } catch (err) { /* private mode: not remembered */ }
    useLanguage(next);
  });

  // The engines table scrolls sideways on a narrow screen, and a keyboard reaches it there to scroll it;
  // on a wide one it was a tab stop that did nothing. (Its size changes with the window, the zoom and a
  // fallback's reason unfolded.)
  function fitEnginesScroll() {
    const wrap = $("health-engines").closest(".table-scroll");
    if (wrap.scrollWidth > wrap.clientWidth) wrap.tabIndex = 0;
    else wrap.removeAttribute("tabindex");
  }
  const enginesResized = new ResizeObserver(fitEnginesScroll);
  enginesResized.observe($("health-engines").closest(".table-scroll"));
  enginesResized.observe($("health-engines").closest("table"));

  renderAll();
  showConnection();
  let saved = null;
  try { saved = localStorage.getItem(LANG_KEY); } catch (err) { saved = null; }
  if (saved && saved !== lang) useLanguage(saved);
  setInterval(() => { renderClock(); if (state.sections.attention && shownAt.attention !== undefined) { setText("att-updated", updatedAgo(shownAt.attention)); joinFooter(); } }, 5000);
  setInterval(announceTick, 1000);
  connect();
})();
